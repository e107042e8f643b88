"""Choosing the store from one URL (``SHUANGLU_STORAGE_URL``):

- unset, ``file:`` or ``file:///abs/folder``: the local folder backend (default: the data
  folder's ``files``, today's layout);
- ``s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:9000&region=us-east-1`` and optionally
  ``addressing=path|virtual``, ``create_bucket=true``, ``write_once=if-none-match|head|oss|cos``,
  ``lock=GOVERNANCE|COMPLIANCE&lock_days=N``, ``bypass_governance=true``, ``part_mb=8``,
  ``threads=8``. Credentials never go in the URL: boto3's usual chain is used
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, a profile, an
  instance role).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from storage.base import ObjectStore
from storage.local import LocalFolderStore
from storage.s3 import S3ObjectStore, S3Settings

_TRUE = ("1", "true", "yes", "on")
_S3_OPTIONS = {"endpoint", "region", "addressing", "create_bucket", "write_once", "lock",
               "lock_days", "bypass_governance", "part_mb", "threads"}


def s3_settings(url: str) -> S3Settings:
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError("put S3 credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                         "not in the storage URL")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _S3_OPTIONS)
    if unknown:
        raise ValueError(f"unknown storage URL option(s): {', '.join(unknown)}")
    lock = query.get("lock", "").upper() or None
    return S3Settings(
        bucket=parts.hostname or "", prefix=unquote(parts.path).strip("/"),
        endpoint_url=query.get("endpoint") or None,
        region=query.get("region") or "us-east-1",
        addressing=query.get("addressing", "path"),
        create_bucket=query.get("create_bucket", "").lower() in _TRUE,
        write_once=query.get("write_once", "if-none-match"),
        lock_mode=lock, lock_days=int(query.get("lock_days", "0") or 0),
        bypass_governance=query.get("bypass_governance", "").lower() in _TRUE,
        part_size=int(float(query.get("part_mb", "8")) * (1 << 20)),
        threads=int(query.get("threads", "8")),
    )


def open_store(url: str | None, default_root: Path, *, scratch: Path | None = None,
               threads: int = 8) -> ObjectStore:
    """The store a URL names; the local folder ``default_root`` when there is none."""
    url = (url or "").strip()
    if not url or url == "file:":
        return LocalFolderStore(default_root, threads=threads, scratch=scratch)
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        return S3ObjectStore(s3_settings(url), scratch=scratch)
    if scheme == "file":
        return LocalFolderStore(Path(unquote(urlsplit(url).path)), threads=threads,
                                scratch=scratch)
    if not scheme and url.startswith("/"):
        return LocalFolderStore(Path(url), threads=threads, scratch=scratch)
    raise ValueError(f"unsupported storage URL {url!r}: use s3://BUCKET/PREFIX?… or file:///…")


def redacted(url: str | None) -> str:
    """The URL as it may be logged (it holds no secret by construction; the query is kept)."""
    return (url or "file:").split("#", 1)[0]
