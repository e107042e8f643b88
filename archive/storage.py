"""Where sealed evidence is archived: one small interface, a local folder (the default) and
S3-compatible object storage (any service speaking the S3 API). Objects are written once: a
second write of the same key is accepted only with identical content (an idempotent retry)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from archive.settings import ArchiveSettings


class StoreError(RuntimeError):
    """The store refused or failed an operation; the message says which key and why."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size_bytes: int


class ObjectStore(Protocol):
    backend: str

    async def put_file(self, key: str, source: Path) -> StoredObject: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def sha256(self, key: str) -> str | None: ...
    async def delete(self, key: str) -> bool: ...
    async def keys(self, prefix: str = "") -> list[str]: ...


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise StoreError(f"invalid key {key!r}")
    return key


class LocalFolderStore:
    """Objects as files under one folder (by default the data folder's `files`, where the
    recorder and the workflow already write: archiving there only verifies)."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        target = (self.root / _check_key(key)).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise StoreError(f"key escapes the store: {key!r}")
        return target

    def _put(self, key: str, source: Path) -> StoredObject:
        target = self._path(key)
        digest, size = file_sha256(source)
        if target.exists():
            if file_sha256(target)[0] != digest:
                raise StoreError(f"{key} exists with other content")
            return StoredObject(key, digest, size)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with source.open("rb") as src, open(tmp, "xb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(tmp, target)  # fails if someone else published it meanwhile
        tmp.unlink()
        return StoredObject(key, digest, size)

    async def put_file(self, key: str, source: Path) -> StoredObject:
        return await asyncio.to_thread(self._put, key, source)

    async def get_bytes(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError as exc:
            raise StoreError(f"{key} not found") from exc

    async def sha256(self, key: str) -> str | None:
        path = self._path(key)
        if not path.exists():
            return None
        return (await asyncio.to_thread(file_sha256, path))[0]

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def keys(self, prefix: str = "") -> list[str]:
        root = self.root.resolve()

        def walk() -> list[str]:
            if not root.exists():
                return []
            return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                          if p.is_file() and str(p.relative_to(root)).startswith(prefix))

        return await asyncio.to_thread(walk)


class S3ObjectStore:
    """S3-compatible object storage through boto3 (blocking calls in a worker thread).

    The SHA-256 is stored as object metadata on upload and re-computed from the downloaded
    content whenever `sha256` is asked, so a changed object is noticed.
    """

    backend = "s3"

    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str,
                 access_key: str | None, secret_key: str | None, prefix: str = "") -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"},
                              s3={"addressing_style": "path"}),
        )

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _not_found(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return str(code) in ("404", "NoSuchKey", "NotFound")

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._client.create_bucket(Bucket=self.bucket)

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=self._key(key)))
        except ClientError as exc:
            if self._not_found(exc):
                return None
            raise StoreError(f"{key}: {exc}") from exc

    def _put(self, key: str, source: Path) -> StoredObject:
        digest, size = file_sha256(source)
        head = self._head(key)
        if head is not None:
            if head.get("Metadata", {}).get("sha256") != digest:
                raise StoreError(f"{key} exists with other content")
            return StoredObject(key, digest, size)
        with source.open("rb") as body:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body,
                                    Metadata={"sha256": digest})
        return StoredObject(key, digest, size)

    async def put_file(self, key: str, source: Path) -> StoredObject:
        return await asyncio.to_thread(self._put, key, source)

    def _get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            raise StoreError(f"{key} not found" if self._not_found(exc) else str(exc)) from exc
        data: bytes = response["Body"].read()
        return data

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    async def sha256(self, key: str) -> str | None:
        if await asyncio.to_thread(self._head, key) is None:
            return None
        return hashlib.sha256(await self.get_bytes(key)).hexdigest()

    def _delete(self, key: str) -> bool:
        if self._head(key) is None:
            return False
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        return True

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, key)

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys += [item["Key"][len(self.prefix):] for item in page.get("Contents", [])]
        return sorted(keys)

    async def keys(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self._keys, prefix)


def build_store(settings: ArchiveSettings, files_root: Path) -> ObjectStore:
    """The configured backend; the local default archives in place under `files_root`."""
    if settings.backend == "s3":
        store = S3ObjectStore(
            bucket=settings.s3_bucket, endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region, access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key, prefix=settings.s3_prefix,
        )
        if settings.s3_create_bucket:
            store.ensure_bucket()
        return store
    return LocalFolderStore(settings.local_root or files_root)
