"""Verifying an exported session archive offline (R-31, R-42): no database, no server, no
secrets. Only the standard library and `cryptography` (through `security.seal_manifest`, the
same checks the database path uses), so an auditor can run it on any machine with the project
checked out: `python -m app verify-archive PATH [--public-key KEY | --keyring FILE]`.

The layout of an archive (a folder or a .zip) is described in `archive.export` and in the
README.txt inside every archive.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from security.seal_manifest import (
    ItemDifference,
    ItemStatus,
    TrustedKey,
    VerifyStatus,
    check_chain,
    check_signature,
    compare_items,
    manifest_gaps,
    trusted_keys_from_keyring,
)

MANIFEST = "manifest.json"
INDEX = "index.json"
README = "README.txt"
KEYS_DIR = "keys"
ARCHIVE_FORMAT = "shuanglu-seal-archive/1"


class ArchiveError(ValueError):
    """The path is not a readable archive at all (exit code 2, not 1)."""


class ArchiveReader(Protocol):
    def names(self) -> set[str]: ...
    def read(self, name: str) -> bytes: ...
    def sha256(self, name: str) -> str: ...


def _hash_stream(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class FolderReader:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                if p.is_file() or p.is_symlink()}

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def sha256(self, name: str) -> str:
        with (self.root / name).open("rb") as handle:
            return _hash_stream(iter(lambda: handle.read(1 << 20), b""))


class ZipReader:
    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"{path} is not a readable zip file: {exc}") from exc
        # A top folder inside the zip (zip of a folder) is accepted: names are relative to it.
        names = [i.filename for i in self.zip.infolist() if not i.is_dir()]
        tops = {n.split("/", 1)[0] for n in names}
        self.prefix = ""
        if MANIFEST not in names and len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
            self.prefix = next(iter(tops)) + "/"
        self._names = {n[len(self.prefix):] for n in names if n.startswith(self.prefix)}

    def names(self) -> set[str]:
        return set(self._names)

    def read(self, name: str) -> bytes:
        return self.zip.read(self.prefix + name)

    def sha256(self, name: str) -> str:
        with self.zip.open(self.prefix + name) as handle:
            return _hash_stream(iter(lambda: handle.read(1 << 20), b""))


def open_archive(path: Path) -> ArchiveReader:
    if path.is_dir():
        return FolderReader(path)
    if path.is_file():
        return ZipReader(path)
    raise ArchiveError(f"{path} does not exist")


def safe_member(name: str) -> bool:
    pure = PurePosixPath(name)
    return bool(name) and not pure.is_absolute() and ".." not in pure.parts and "\\" not in name


@dataclass
class ArchiveReport:
    """The outcome. `problems`: what was altered (or is not an archive's); `incomplete`: what
    the signed manifest says is missing and why (an aborted or expired session sealed as it
    was). `notes` say what the result rests on."""

    session_id: str = ""
    institution: str = ""
    key_id: str = ""
    version: int | None = None
    items_checked: int = 0
    trusted_key_given: bool = False
    problems: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> VerifyStatus:
        if self.problems:
            return VerifyStatus.ALTERED
        return VerifyStatus.INCOMPLETE if self.incomplete else VerifyStatus.INTACT

    @property
    def ok(self) -> bool:
        """Intact and complete."""
        return self.status == VerifyStatus.INTACT


def describe_offline(difference: ItemDifference) -> str:
    if difference.status == ItemStatus.ALTERED:
        return f"{difference.name} was altered"
    if difference.status == ItemStatus.MISSING:
        return f"{difference.name} is missing"
    return f"{difference.name} is in the archive but not in the manifest (added after sealing)"


def _load_json(reader: ArchiveReader, name: str, problems: list[str]) -> Any:
    try:
        return json.loads(reader.read(name))
    except KeyError:
        problems.append(f"{name} is missing")
    except FileNotFoundError:
        problems.append(f"{name} is missing")
    except (json.JSONDecodeError, UnicodeDecodeError):
        problems.append(f"{name} is not valid JSON (it was altered)")
    return None


def verify_archive(path: Path, trusted: list[TrustedKey] | None = None) -> ArchiveReport:
    """Checks the signature (against `trusted` keys when given, else against the key the
    manifest carries, which is only self-asserted), the chain, every item re-hashed from the
    files, and missing and extra files; and reports what an incomplete manifest says is
    missing."""
    reader = open_archive(path)
    report = ArchiveReport(trusted_key_given=trusted is not None)
    names = reader.names()
    unsafe = sorted(n for n in names if not safe_member(n))
    report.problems += [f"unsafe file name in the archive: {n!r}" for n in unsafe]
    manifest = _load_json(reader, MANIFEST, report.problems)
    if not isinstance(manifest, dict):
        if manifest is not None:
            report.problems.append(f"{MANIFEST} is not a manifest (it was altered)")
        return report
    report.session_id = str(manifest.get("session_id", ""))
    report.institution = str(manifest.get("institution", ""))
    report.key_id = str(manifest.get("key_id", ""))
    version = manifest.get("version")
    report.version = version if isinstance(version, int) else None

    report.problems += check_signature(manifest, trusted)
    report.problems += check_chain(manifest)
    report.incomplete = manifest_gaps(manifest)
    if trusted is None:
        who = (f"key {report.key_id} of institution {report.institution}"
               if report.version and report.version >= 2 else "the platform key")
        report.notes.append(
            f"signature checked against the public key embedded in the archive only: it is "
            f"self-asserted. It proves nothing was changed after signing, not who signed. "
            f"Check {who} against the published keys (GET /api/v1/institutions/"
            f"{report.institution or 'CODE'}/seal-keys) or pass --keyring / --public-key.")

    index = _load_json(reader, INDEX, report.problems)
    entries: dict[str, str] = {}
    if isinstance(index, dict) and isinstance(index.get("items"), dict):
        if str(index.get("session_id", report.session_id)) != report.session_id:
            report.problems.append("index.json belongs to another session")
        for name, member in index["items"].items():
            if not isinstance(member, str) or not safe_member(member):
                report.problems.append(f"index.json names an unsafe path for {name}")
                continue
            entries[str(name)] = member
    elif index is not None:
        report.problems.append(f"{INDEX} is not an archive index (it was altered)")

    raw_items = manifest.get("items")
    sealed: list[dict[str, Any]] = (
        [i for i in raw_items if isinstance(i, dict)] if isinstance(raw_items, list) else [])
    actual: dict[str, str | None] = {}
    for name, member in entries.items():
        actual[name] = reader.sha256(member) if member in names else None
    # Items the index does not list are missing too.
    for item in sealed:
        actual.setdefault(str(item.get("name")), None)
    report.items_checked = len(sealed)
    report.problems += [describe_offline(d) for d in compare_items(sealed, actual)]

    known = {MANIFEST, INDEX, README, *entries.values()}
    extra = sorted(n for n in names - known
                   if safe_member(n) and not (n.startswith(f"{KEYS_DIR}/")
                                              and n.endswith(".json")))
    report.problems += [f"extra file {n} is not in the manifest" for n in extra]
    return report


def load_keyring_file(path: Path) -> list[TrustedKey]:
    """A keyring as published by the API (or keys/<CODE>.json of a trusted archive)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    keys = trusted_keys_from_keyring(document)
    if not keys:
        raise ArchiveError(f"{path} lists no keys")
    return keys
