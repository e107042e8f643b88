"""Signing and verifying the acceptance evidence pack (R-02), offline.

The pack's `manifest.json` lists the SHA-256 of every other file in the zip, the git commit the
pack was built from and, when signed, the institution's seal key (Ed25519, the key that seals
its sessions, `security.seal_keys`). The signature is made exactly as a session manifest's
(`security.seal_manifest.sign`: Ed25519 over the hex SHA-256 of the canonical JSON of the
manifest without `signature`); the `format` field keeps a pack manifest from ever being read as
a session manifest.

    python -m reporting.pack_verify PACK.zip [--keyring FILE | --public-key KEY_B64]

Like `python -m app verify-archive` it loads no configuration, database or secret. Exit 0 when
every file matches, the manifest is signed and the signature verifies; 1 with each problem
named (a changed, missing or extra file, an unsigned pack, a bad signature); 2 when the path is
not a readable pack.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archive.offline import ArchiveError, ZipReader, load_keyring_file, safe_member
from security.seal_manifest import (
    ALGORITHM,
    ItemStatus,
    TrustedKey,
    compare_items,
    key_id_of,
    sign,
    signed_message,
)

PACK_FORMAT = "shuanglu-evidence-pack/1"
MANIFEST = "manifest.json"


def seal(body: dict[str, Any], sign_bytes: Callable[[bytes], bytes] | None,
         public_key: str | None, unsigned_reason: str = "") -> dict[str, Any]:
    """The manifest: `body` (format, institution, commit, files...) with the key fields, signed
    when `sign_bytes` is given; otherwise marked unsigned with the reason (never a fake)."""
    if sign_bytes is None or public_key is None:
        return {**body, "algorithm": None, "key_id": None, "public_key": None,
                "unsigned_reason": unsigned_reason or "no signing key", "signature": None}
    signed_body = {**body, "algorithm": ALGORITHM, "key_id": key_id_of(public_key),
                   "public_key": public_key}
    return sign(signed_body, sign_bytes)


@dataclass
class PackCheck:
    institution: str = ""
    generated_at: str = ""
    commit: dict[str, Any] = field(default_factory=dict)
    key_id: str = ""
    signed: bool = False
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _signature_valid(manifest: Mapping[str, Any], public_key: str) -> bool:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(base64.b64decode(str(manifest["signature"]), validate=True),
                   signed_message(body))
    except (InvalidSignature, ValueError, TypeError, KeyError, binascii.Error):
        return False
    return True


def _check_signature(manifest: Mapping[str, Any], trusted: list[TrustedKey] | None,
                     check: PackCheck) -> None:
    if not manifest.get("signature"):
        check.problems.append("the pack is not signed: "
                              f"{manifest.get('unsigned_reason') or 'no signature'}")
        return
    embedded = str(manifest.get("public_key") or "")
    try:
        if key_id_of(embedded) != manifest.get("key_id"):
            check.problems.append("manifest key_id does not match its public key")
    except (ValueError, binascii.Error):
        check.problems.append("manifest public key is not valid base64")
        return
    if trusted is None:
        if _signature_valid(manifest, embedded):
            check.signed = True
            check.notes.append(
                "signature checked against the public key inside the pack only: it is "
                "self-asserted. It proves nothing was changed after signing, not who signed. "
                f"Check key {check.key_id} against the institution's published keys (GET "
                f"/api/v1/institutions/{check.institution or 'CODE'}/seal-keys) with --keyring.")
        else:
            check.problems.append("manifest signature does not verify (the manifest was "
                                  "altered after signing)")
        return
    candidates = [k for k in trusted if not k.key_id or k.key_id == check.key_id]
    if not candidates:
        check.problems.append(f"the pack was signed with key {check.key_id}, which is not a "
                              "trusted key")
        return
    for key in candidates:
        if key.institution and key.institution != check.institution:
            check.problems.append(f"trusted key {key.key_id} belongs to {key.institution}, "
                                  f"not to {check.institution}")
    good = [k for k in candidates if _signature_valid(manifest, k.public_key)]
    if not good:
        check.problems.append("manifest signature does not verify against the trusted key")
        return
    check.signed = True
    for key in good:
        if key.retired_at and _after(check.generated_at, key.retired_at):
            check.problems.append(f"the pack was signed with key {key.key_id} after it was "
                                  f"retired ({key.retired_at})")


def _after(a: str, b: str) -> bool:
    try:
        return datetime.fromisoformat(a) > datetime.fromisoformat(b)
    except (TypeError, ValueError):
        return False


def verify_pack(path: Path, trusted: list[TrustedKey] | None = None) -> PackCheck:
    """Every file re-hashed against the manifest, missing and extra files, the signature
    (against `trusted` keys when given, else the key the manifest names for itself)."""
    reader = ZipReader(path)
    check = PackCheck()
    names = reader.names()
    check.problems += [f"unsafe file name in the pack: {n!r}" for n in sorted(names)
                       if not safe_member(n)]
    try:
        manifest = json.loads(reader.read(MANIFEST))
    except KeyError:
        check.problems.append(f"{MANIFEST} is missing")
        return check
    except (json.JSONDecodeError, UnicodeDecodeError):
        check.problems.append(f"{MANIFEST} is not valid JSON (it was altered)")
        return check
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        check.problems.append(f"{MANIFEST} is not an evidence pack manifest ({PACK_FORMAT})")
        return check
    institution = manifest.get("institution") or {}
    check.institution = str(institution.get("code", "")) if isinstance(institution, dict) \
        else str(institution)
    check.generated_at = str(manifest.get("generated_at", ""))
    check.commit = manifest.get("commit") or {}
    check.key_id = str(manifest.get("key_id") or "")
    _check_signature(manifest, trusted, check)

    files = manifest.get("files")
    if not isinstance(files, dict):
        check.problems.append("manifest lists no files")
        return check
    actual = {n: reader.sha256(n) for n in names if n != MANIFEST and safe_member(n)}
    sealed = [{"name": n, "sha256": h} for n, h in files.items()]
    for difference in compare_items(sealed, actual):
        if difference.status == ItemStatus.ALTERED:
            check.problems.append(f"{difference.name} was altered")
        elif difference.status == ItemStatus.MISSING:
            check.problems.append(f"{difference.name} is missing")
        else:
            check.problems.append(f"extra file {difference.name} is not in the manifest")
    check.files_checked = len(files)
    return check


def describe(check: PackCheck, path: Path) -> str:
    commit = check.commit.get("id") or "unknown commit"
    if check.commit.get("dirty"):
        commit += " (work tree had uncommitted changes)"
    lines = [f"{path}: institution {check.institution or '?'}, built from {commit}"]
    if check.ok:
        lines.append(f"INTACT (signature by key {check.key_id} and {check.files_checked} "
                     "files verified)")
    else:
        lines.append("NOT VERIFIED")
        lines += [f"  - {p}" for p in check.problems]
    lines += [f"note: {n}" for n in check.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reporting.pack_verify",
        description="Verify an acceptance evidence pack offline (R-02): file hashes, signature.")
    parser.add_argument("path", type=Path, help="the pack (.zip)")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--keyring", type=Path, help="the institution's published keyring JSON")
    trust.add_argument("--public-key", help="a trusted Ed25519 public key (base64)")
    args = parser.parse_args(argv)
    try:
        trusted: list[TrustedKey] | None = None
        if args.public_key:
            trusted = [TrustedKey(public_key=args.public_key.strip())]
        elif args.keyring:
            trusted = load_keyring_file(args.keyring)
        check = verify_pack(args.path, trusted)
    except (ArchiveError, OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return 2
    print(describe(check, args.path))
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
