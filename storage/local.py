"""The embedded default backend: objects as files under one folder (the data folder's
``files``), one file per key at exactly the key's path, so evidence written before this package
existed stays valid. Write-once by hard link: a new object is written and fsynced under a
temporary name in the target folder, then linked to its final name, which fails when the name
exists (no window where a half-written file carries the final name; two writers never share a
file)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from storage.base import (
    CHUNK,
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    RangeReader,
    StoredObject,
    StoreError,
    check_key,
    file_sha256,
)

FILE_MODE = 0o640


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


class LocalFolderStore(ObjectStore):
    backend = "local"

    def __init__(self, root: Path, *, threads: int = 8, scratch: Path | None = None) -> None:
        super().__init__(threads=threads, scratch=scratch)
        self.root = Path(root)

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        target = (self.root / check_key(key)).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise StoreError(f"key escapes the store: {key!r}")
        return target

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    # -- writing ---------------------------------------------------------------------------

    def _publish(self, key: str, tmp: Path, target: Path, digest: str, size: int,
                 replace: bool) -> StoredObject:
        """Moves a complete, fsynced temporary file to its final name."""
        try:
            if replace:
                os.replace(tmp, target)
            else:
                try:
                    os.link(tmp, target)  # refuses an existing name: never overwrite
                except FileExistsError:
                    return self._same_or_refuse(key, target, digest, size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(target.parent)
        return StoredObject(key, digest, size)

    def _same_or_refuse(self, key: str, target: Path, digest: str, size: int) -> StoredObject:
        if file_sha256(target) == (digest, size):
            return StoredObject(key, digest, size)  # an idempotent retry
        raise ObjectExists(f"{key} exists with other content: not overwritten")

    def _temporary(self, target: Path) -> tuple[int, Path]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.fchmod(fd, FILE_MODE)
        return fd, Path(name)

    def put_file_sync(self, key: str, source: Path, *, sha256: str | None = None,
                      replace: bool = False, retain: bool = True,
                      move: bool = False) -> StoredObject:
        target = self._path(key)
        if move:
            linked = self._link_into_place(key, source, target, sha256, replace)
            if linked is not None:
                return linked
        fd, tmp = self._temporary(target)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if sha256 is not None and digest.hexdigest() != sha256:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{key}: {source} does not have the SHA-256 it was written with")
        stored = self._publish(key, tmp, target, digest.hexdigest(), size, replace)
        if move:
            source.unlink(missing_ok=True)
        return stored

    def _link_into_place(self, key: str, source: Path, target: Path, sha256: str | None,
                         replace: bool) -> StoredObject | None:
        """The source is consumed: hashed once, then linked (same file system) instead of
        copied. None when it cannot be linked (another file system): copy instead."""
        digest, size = file_sha256(source)
        if sha256 is not None and digest != sha256:
            raise StoreError(f"{key}: {source} does not have the SHA-256 it was written with")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if replace:
                os.replace(source, target)
            else:
                os.link(source, target)
        except FileExistsError:
            self._same_or_refuse(key, target, digest, size)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                return None
            raise
        source.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return StoredObject(key, digest, size)

    def put_bytes_sync(self, key: str, data: bytes, *, replace: bool = False,
                       retain: bool = True) -> StoredObject:
        target = self._path(key)
        fd, tmp = self._temporary(target)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._publish(key, tmp, target, hashlib.sha256(data).hexdigest(), len(data),
                             replace)

    # -- reading ---------------------------------------------------------------------------

    def open_sync(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(f"{key} not found") from exc
        if start:
            handle.seek(start)
        length = None if end is None else max(end - start, 0)
        return RangeReader(handle, length)  # type: ignore[return-value]

    def stat_sync(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._path(key)):
            return None
        return ObjectInfo(key, st.st_size, None, datetime.fromtimestamp(st.st_mtime, UTC))

    def keys_sync(self, prefix: str = "") -> list[str]:
        root = self.root.resolve()
        start = root
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if folder:
            start = self._path(folder)
        if not start.is_dir():
            return []
        found = []
        for directory, _, files in os.walk(start):
            for name in files:
                if _is_temporary(name):
                    continue
                key = (Path(directory) / name).relative_to(root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def delete_sync(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True
