"""The one interface to evidence objects (recordings, identity uploads, signatures and strokes,
playback copies, archive copies) and to the shared copies of the speech and page caches.

An object is addressed by a key (a relative POSIX path such as
``<session>/customer_av/00001.webm``; the local backend keeps exactly that layout under its
folder). Objects are written once: a second write of a key is accepted only with identical
content (an idempotent retry) and refused (`ObjectExists`) otherwise, unless the caller says the
object is a derived one that may be replaced (the playback copy and its sidecar).

Every backend implements a few blocking primitives (`*_sync`: for code that already runs in a
worker thread, e.g. the export's zip writer, QA decoding, salvage); the async methods the event
loop uses run them in the store's own thread pool, so a slow upload never holds the loop or the
default executor. Content is always streamed in chunks (1 MiB reads, multipart uploads of
``part_size`` bytes): nothing holds a whole recording in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

log = logging.getLogger(__name__)
CHUNK = 1 << 20
T = TypeVar("T")


class StoreError(OSError):
    """The store refused or failed an operation; the message says which key and why."""


class ObjectMissing(StoreError, FileNotFoundError):
    """No object under that key."""


class ObjectExists(StoreError, FileExistsError):
    """The key holds other content: evidence is never overwritten."""


@dataclass(frozen=True)
class StoredObject:
    """What a write stored: the key, the SHA-256 of the content, its size."""

    key: str
    sha256: str
    size_bytes: int

    @property
    def path(self) -> str:
        """The key (the name the workflow registers: `Recording.path`, `Signature.image_path`)."""
        return self.key


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says about an object without reading it. ``sha256`` is the hash recorded
    when it was written (None when the backend has no record); never trust it for sealing —
    `ObjectStore.sha256` re-reads the content."""

    key: str
    size_bytes: int
    sha256: str | None = None
    modified: datetime | None = None


def check_key(key: str) -> str:
    """A key is a relative POSIX path without ``..``, empty or absolute parts."""
    parts = key.split("/")
    if (not key or key.startswith("/") or "\\" in key or "\x00" in key
            or any(p in ("", ".", "..") for p in parts)):
        raise StoreError(f"invalid object key {key!r}")
    return key


class HashingReader:
    """Reads a file-like object and hashes what passes through (streamed uploads)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class RangeReader:
    """A read-only view of ``length`` bytes of an open file (a local range read)."""

    def __init__(self, handle: BinaryIO, length: int | None) -> None:
        self.handle = handle
        self.left = length

    def read(self, n: int = -1) -> bytes:
        if self.left is None:
            return self.handle.read(n)
        if self.left <= 0:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.handle.read(want)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ObjectStore(ABC):
    """Write-once objects by key. Subclasses: `storage.local.LocalFolderStore` (the embedded
    default, the data folder's ``files``) and `storage.s3.S3ObjectStore` (any S3-compatible
    service)."""

    backend: str  # "local" | "s3": recorded with archived objects

    def __init__(self, *, threads: int = 8, scratch: Path | None = None) -> None:
        self._threads = max(1, threads)
        self._executor: ThreadPoolExecutor | None = None
        self.scratch = scratch  # where remote objects are downloaded to for local readers

    # -- blocking primitives (worker threads only) -------------------------------------------

    @abstractmethod
    def put_file_sync(self, key: str, source: Path, *, sha256: str | None = None,
                      replace: bool = False, retain: bool = True,
                      move: bool = False) -> StoredObject:
        """Stores a local file under ``key``, hashing it while it is read. ``sha256``, when the
        caller already knows it, is recorded up front and checked against what was read (a
        mismatch stores nothing). ``replace`` lets a derived object (the playback copy) be
        replaced; ``retain`` asks for the backend's retention lock on evidence; ``move`` lets
        the backend consume the source (the local backend links it into place)."""

    @abstractmethod
    def put_bytes_sync(self, key: str, data: bytes, *, replace: bool = False,
                       retain: bool = True) -> StoredObject: ...

    @abstractmethod
    def open_sync(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A readable stream of the object's bytes ``[start, end)``; raises `ObjectMissing`."""

    @abstractmethod
    def stat_sync(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def keys_sync(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def delete_sync(self, key: str) -> bool:
        """Deletes every stored version of ``key`` (retention purge); False when absent."""

    def local_path(self, key: str) -> Path | None:
        """The object's own file when the backend keeps objects as local files, else None.
        Read only: never write to it."""
        return None

    def describe(self) -> str:
        """Where the objects are, for logs and reports (no credentials)."""
        return self.backend

    # -- blocking conveniences -----------------------------------------------------------------

    def get_bytes_sync(self, key: str) -> bytes:
        """The whole object: small objects only (signatures, strokes, identity uploads)."""
        with contextlib.closing(self.open_sync(key)) as handle:
            return handle.read()

    def sha256_sync(self, key: str) -> str | None:
        """The SHA-256 of the content as it is now, streamed; None when absent."""
        digest = hashlib.sha256()
        try:
            with contextlib.closing(self.open_sync(key)) as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        except ObjectMissing:
            return None
        return digest.hexdigest()

    def download_sync(self, key: str, dest: Path) -> StoredObject:
        """Copies the object into ``dest`` (written through a temporary name), streamed."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, contextlib.closing(self.open_sync(key)) as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return StoredObject(key, digest.hexdigest(), size)

    @contextlib.contextmanager
    def local_copy_sync(self, key: str) -> Iterator[Path]:
        """A local file with the object's content for readers that need a path (PyAV, the
        playback composer): the object's own file on the local backend, else a temporary
        download removed afterwards. Raises `ObjectMissing`."""
        own = self.local_path(key)
        if own is not None:
            if not own.is_file():
                raise ObjectMissing(f"{key} not found")
            yield own
            return
        folder = Path(tempfile.mkdtemp(prefix="obj-", dir=self.scratch))
        try:
            target = folder / Path(key).name
            self.download_sync(key, target)
            yield target
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def put(self, key: str, data: bytes) -> StoredObject:
        """Blocking write-once put, kept for callers written against the old synchronous
        `LocalStorage.put` (tests/harness.py). New code awaits `put_bytes`: this one blocks
        the event loop for the whole upload."""
        return self.put_bytes_sync(key, data)

    def read(self, key: str) -> bytes:
        """Blocking read, kept for callers written against `LocalStorage.read` (tests). New
        code awaits `get_bytes`."""
        return self.get_bytes_sync(key)

    # -- async interface (the event loop) ---------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads,
                                                thread_name_prefix=f"store-{self.backend}")
        return self._executor

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Runs a blocking call in the store's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(fn, *args, **kwargs))

    async def put_file(self, key: str, source: Path, *, sha256: str | None = None,
                       replace: bool = False, retain: bool = True,
                       move: bool = False) -> StoredObject:
        return await self.run(self.put_file_sync, key, source, sha256=sha256,
                              replace=replace, retain=retain, move=move)

    async def put_bytes(self, key: str, data: bytes, *, replace: bool = False,
                        retain: bool = True) -> StoredObject:
        return await self.run(self.put_bytes_sync, key, data, replace=replace, retain=retain)

    async def get_bytes(self, key: str) -> bytes:
        return await self.run(self.get_bytes_sync, key)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self.run(self.stat_sync, key)

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def sha256(self, key: str) -> str | None:
        return await self.run(self.sha256_sync, key)

    async def keys(self, prefix: str = "") -> list[str]:
        return await self.run(self.keys_sync, prefix)

    async def delete(self, key: str) -> bool:
        return await self.run(self.delete_sync, key)

    async def download(self, key: str, dest: Path) -> StoredObject:
        return await self.run(self.download_sync, key, dest)

    async def stream(self, key: str, start: int = 0, end: int | None = None,
                     chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` in chunks of at most ``chunk_size``; raises
        `ObjectMissing` before the first chunk when there is no such object."""
        handle = await self.run(self.open_sync, key, start, end)
        try:
            while chunk := await self.run(handle.read, chunk_size):
                yield chunk
        finally:
            await self.run(handle.close)

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        """`local_copy_sync` for the event loop (the download runs in the pool)."""
        manager = self.local_copy_sync(key)
        path = await self.run(manager.__enter__)
        try:
            yield path
        finally:
            await self.run(manager.__exit__, None, None, None)

    async def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
