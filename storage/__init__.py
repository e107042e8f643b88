"""Evidence storage (issue 13): one async interface to write-once objects with a local folder
backend (the embedded default) and an S3-compatible one (`storage.base` says how it works,
`storage.config` how to choose, `storage.cache` the read-through caches)."""

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
from storage.config import open_store
from storage.local import LocalFolderStore
from storage.s3 import S3ObjectStore, S3Settings

__all__ = [
    "LocalFolderStore",
    "ObjectExists",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "S3ObjectStore",
    "S3Settings",
    "StoreError",
    "StoredObject",
    "check_key",
    "file_sha256",
    "open_store",
]
