"""Local file storage for uploads and recordings: write-once files addressed by relative path."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredFile:
    path: str
    sha256: str
    size_bytes: int


class LocalStorage:
    """Files under one root; an existing file is never overwritten (evidence is immutable)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _resolve(self, relative: str) -> Path:
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError("path escapes the storage root")
        return target

    def put(self, relative: str, data: bytes) -> StoredFile:
        target = self._resolve(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a second write to the same evidence path fails instead of replacing it.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return StoredFile(relative, hashlib.sha256(data).hexdigest(), len(data))

    def read(self, relative: str) -> bytes:
        return self._resolve(relative).read_bytes()

    def sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self._resolve(relative).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def exists(self, relative: str) -> bool:
        return self._resolve(relative).exists()
