"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Alibaba OSS, Tencent COS, …) through
the plain S3 API with boto3, its blocking calls run in the store's thread pool.

Why boto3 in threads rather than aioboto3: boto3 was already the archive's client; aiobotocore
pins exact botocore versions (so it fights boto3 and moto over botocore upgrades); and the
blocking client serves the code that already runs in worker threads (the export's zip writer,
QA decoding, salvage, the page cache) directly, where an async client would need a bridge back
into the event loop. Uploads and downloads are I/O bound, so a few threads per process are
enough (``threads``, default 8).

Write-once. A new object is sent with ``If-None-Match: *`` (on `PutObject` and on
`CompleteMultipartUpload`), which AWS S3, MinIO and recent Ceph RGW honour: a concurrent second
writer gets 412 and nothing is replaced. For services that ignore it, ``write_once=head`` checks
with HEAD before the PUT instead — that leaves a race (two writers that both see no object both
write, the last one wins); ``oss`` and ``cos`` add those services' own
``x-oss-forbid-overwrite`` / ``x-cos-forbid-overwrite`` header as well. Before every upload a
HEAD looks for the key, so an idempotent retry (same SHA-256) costs no upload. The real guard
on a service is Object Lock: with ``lock_mode`` (GOVERNANCE or COMPLIANCE) and ``lock_days``,
evidence objects carry a retention date and cannot be deleted or replaced before it, even by a
client that ignores the conditional headers (the bucket must have Object Lock enabled, which
needs versioning; ``create_bucket`` creates it so).

Hashing is streamed: an upload reads its source once, in parts of ``part_size`` bytes (8 MiB),
hashing each part as it is sent (multipart above one part). The SHA-256 is recorded as object
metadata (``x-amz-meta-sha256``): when the caller knows it already (the recorder hashed the
segment while closing it) it is recorded up front and checked against what was read; otherwise
the file is hashed once before the upload. Reads are ranged GETs streamed in 1 MiB chunks.
Retention purge deletes every version of a key (a plain DELETE on a versioned bucket only adds
a delete marker and keeps the data).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import mimetypes
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from storage.base import (
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    StoredObject,
    StoreError,
    check_key,
    file_sha256,
)

log = logging.getLogger(__name__)
WRITE_ONCE_MODES = ("if-none-match", "head", "oss", "cos")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_FORBID_OVERWRITE = {"oss": "x-oss-forbid-overwrite", "cos": "x-cos-forbid-overwrite"}
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409",
                   "FileAlreadyExists", "ObjectAlreadyExists"}
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    addressing: str = "path"  # path | virtual (OSS and COS want virtual-hosted buckets)
    access_key: str | None = None  # None: the usual AWS chain (AWS_ACCESS_KEY_ID, …)
    secret_key: str | None = None
    create_bucket: bool = False  # development and tests
    write_once: str = "if-none-match"
    lock_mode: str | None = None
    lock_days: int = 0
    bypass_governance: bool = False  # lets the retention purge delete GOVERNANCE-locked data
    part_size: int = 8 << 20
    threads: int = 8

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("an S3 store needs a bucket")
        if self.write_once not in WRITE_ONCE_MODES:
            raise ValueError(f"write_once must be one of {', '.join(WRITE_ONCE_MODES)}")
        if self.lock_mode is not None and self.lock_mode not in LOCK_MODES:
            raise ValueError("lock must be GOVERNANCE or COMPLIANCE")
        if self.lock_mode and self.lock_days < 1:
            raise ValueError("an object lock needs lock_days of at least 1")
        if self.part_size < 5 << 20:
            raise ValueError("S3 parts are at least 5 MiB")
        if self.addressing not in ("path", "virtual"):
            raise ValueError("addressing must be path or virtual")


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code or status


class _Body:
    """A GET response body as a closeable reader."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._body.read(None if n is None or n < 0 else n)
        return data

    def close(self) -> None:
        self._body.close()


class S3ObjectStore(ObjectStore):
    backend = "s3"

    def __init__(self, settings: S3Settings, *, scratch: Path | None = None) -> None:
        super().__init__(threads=settings.threads, scratch=scratch)
        import boto3
        from botocore.config import Config as BotoConfig

        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
            aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
            config=BotoConfig(
                retries={"max_attempts": 4, "mode": "standard"},
                s3={"addressing_style": settings.addressing},
                max_pool_connections=settings.threads + 2,
                connect_timeout=5, read_timeout=60,
                # Checksums only where the API requires them: several S3-compatible services
                # refuse the newer default trailing checksums.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        # Set around a write-once upload in the thread that sends it (oss, cos modes).
        self._writing_once = threading.local()
        header = _FORBID_OVERWRITE.get(settings.write_once)
        if header is not None:
            def forbid(request: Any, **_: Any) -> None:
                if getattr(self._writing_once, "on", False):
                    request.headers[header] = "true"

            for op in ("PutObject", "CreateMultipartUpload", "CompleteMultipartUpload"):
                self._client.meta.events.register(f"before-sign.s3.{op}", forbid)
        if settings.create_bucket:
            self.ensure_bucket()

    def describe(self) -> str:
        where = self.settings.endpoint_url or f"AWS {self.settings.region}"
        return f"s3://{self.bucket}/{self.prefix} at {where}"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def ensure_bucket(self) -> None:
        """Creates the bucket when it does not exist (with Object Lock when a lock is set)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(f"bucket {self.bucket}: {exc}") from exc
        args: dict[str, Any] = {"Bucket": self.bucket}
        if self.settings.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
        if self.settings.lock_mode:
            args["ObjectLockEnabledForBucket"] = True
        try:
            self._client.create_bucket(**args)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreError(f"bucket {self.bucket}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=self._key(key)))
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise StoreError(f"{key}: {exc}") from exc

    def _existing(self, key: str, digest: str, size: int) -> StoredObject | None:
        """None when the key is free; the object when it holds this content (an idempotent
        retry); `ObjectExists` when it holds other content."""
        head = self._head(key)
        if head is None:
            return None
        recorded = (head.get("Metadata") or {}).get("sha256")
        same = (recorded == digest if recorded else self.sha256_sync(key) == digest)
        if same and int(head.get("ContentLength", -1)) == size:
            return StoredObject(key, digest, size)
        raise ObjectExists(f"{key} exists with other content: not overwritten")

    def _put_args(self, key: str, digest: str, replace: bool, retain: bool) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key),
                                "Metadata": {"sha256": digest}}
        kind = mimetypes.guess_type(key)[0]
        if kind:
            args["ContentType"] = kind
        if retain and not replace and self.settings.lock_mode:
            args["ObjectLockMode"] = self.settings.lock_mode
            args["ObjectLockRetainUntilDate"] = (datetime.now(UTC)
                                                 + timedelta(days=self.settings.lock_days))
        return args

    def _conditional(self, replace: bool) -> dict[str, Any]:
        if replace or self.settings.write_once == "head":
            return {}
        return {"IfNoneMatch": "*"} if self.settings.write_once == "if-none-match" else {}

    def _md5(self, data: bytes) -> dict[str, str]:
        """Object Lock requests need Content-MD5 on AWS (and it costs little)."""
        if not self.settings.lock_mode:
            return {}
        return {"ContentMD5": base64.b64encode(
            hashlib.md5(data, usedforsecurity=False).digest()).decode()}

    def _upload(self, key: str, source: BinaryIO, size: int, digest: str, replace: bool,
                retain: bool) -> StoredObject:
        """Sends ``size`` bytes of ``source`` under ``key``, hashing them on the way; stores
        nothing unless they hash to ``digest``."""
        from botocore.exceptions import ClientError

        if not replace:
            existing = self._existing(key, digest, size)
            if existing is not None:
                return existing
        args = self._put_args(key, digest, replace, retain)
        part_size = self.settings.part_size
        hasher = hashlib.sha256()
        self._writing_once.on = not replace
        try:
            if size <= part_size:
                data = source.read(size + 1)
                hasher.update(data)
                if len(data) != size or hasher.hexdigest() != digest:
                    raise StoreError(f"{key}: the source changed while it was read")
                self._client.put_object(Body=data, ContentLength=size, **args,
                           **self._md5(data), **self._conditional(replace))
                return StoredObject(key, digest, size)
            upload = self._client.create_multipart_upload(**args)["UploadId"]
            try:
                parts: list[dict[str, Any]] = []
                sent = 0
                while sent < size:
                    data = source.read(min(part_size, size - sent))
                    if not data:
                        break
                    hasher.update(data)
                    number = len(parts) + 1
                    etag = self._client.upload_part(
                        Bucket=self.bucket, Key=args["Key"], UploadId=upload,
                        PartNumber=number, Body=data, **self._md5(data))["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
                    sent += len(data)
                    del data
                if sent != size or source.read(1) or hasher.hexdigest() != digest:
                    raise StoreError(f"{key}: the source changed while it was read")
                self._client.complete_multipart_upload(Bucket=self.bucket,
                           Key=args["Key"], UploadId=upload, MultipartUpload={"Parts": parts},
                           **self._conditional(replace))
            except BaseException:
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=args["Key"],
                                                        UploadId=upload)
                except ClientError:
                    log.warning("could not abort the multipart upload of %s", key)
                raise
        except ClientError as exc:
            if _code(exc) in _CONFLICT_CODES:
                # Someone else stored the key meanwhile: accepted only with this content.
                existing = self._existing(key, digest, size)
                if existing is not None:
                    return existing
            raise StoreError(f"{key}: {exc}") from exc
        finally:
            self._writing_once.on = False
        return StoredObject(key, digest, size)

    def put_file_sync(self, key: str, source: Path, *, sha256: str | None = None,
                      replace: bool = False, retain: bool = True,
                      move: bool = False) -> StoredObject:
        check_key(key)
        size = source.stat().st_size
        digest = sha256 or file_sha256(source)[0]
        with source.open("rb") as handle:
            stored = self._upload(key, handle, size, digest, replace, retain)
        if move:
            source.unlink(missing_ok=True)
        return stored

    def put_bytes_sync(self, key: str, data: bytes, *, replace: bool = False,
                       retain: bool = True) -> StoredObject:
        check_key(key)
        return self._upload(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(),
                            replace, retain)

    # -- reading ---------------------------------------------------------------------------

    def open_sync(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if end is not None and end <= start:
            if self._head(key) is None:
                raise ObjectMissing(f"{key} not found")
            return io.BytesIO(b"")
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = self._client.get_object(**args)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING_CODES:
                raise ObjectMissing(f"{key} not found") from exc
            if code in ("InvalidRange", "416"):
                return io.BytesIO(b"")  # a range past the end: nothing to read
            raise StoreError(f"{key}: {exc}") from exc
        return _Body(response["Body"])  # type: ignore[return-value]

    def stat_sync(self, key: str) -> ObjectInfo | None:
        head = self._head(key)
        if head is None:
            return None
        return ObjectInfo(key, int(head["ContentLength"]),
                          (head.get("Metadata") or {}).get("sha256"), head.get("LastModified"))

    def keys_sync(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys += [item["Key"][len(self.prefix):] for item in page.get("Contents", [])]
        return sorted(keys)

    def delete_sync(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._key(key)
        extra = {"BypassGovernanceRetention": True} if self.settings.bypass_governance else {}
        try:
            listing = self._client.list_object_versions(Bucket=self.bucket, Prefix=full)
        except ClientError as exc:
            if _code(exc) not in ("NotImplemented", "501"):
                raise StoreError(f"{key}: {exc}") from exc
            if self._head(key) is None:
                return False
            self._client.delete_object(Bucket=self.bucket, Key=full, **extra)
            return True
        versions = [v for v in listing.get("Versions", []) if v["Key"] == full]
        markers = [m for m in listing.get("DeleteMarkers", []) if m["Key"] == full]
        for item in versions + markers:
            try:
                self._client.delete_object(Bucket=self.bucket, Key=full,
                                           VersionId=item["VersionId"], **extra)
            except ClientError as exc:
                raise StoreError(f"{key} (version {item['VersionId']}): {exc}") from exc
        return bool(versions)
