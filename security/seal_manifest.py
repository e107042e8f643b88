"""The sealed manifest itself (R-31): canonical hashing, the hash chain, the signed body, and the
checks every verifier shares.

Pure on purpose: only the standard library and `cryptography`, no database, no aiohttp, no
configuration. `workflow.sealing` (sealing, and verifying against the database) and
`archive.offline` (verifying an exported archive on an auditor's machine) both use it, so the
hashing is written once.

Version 1 manifests were signed with the platform key; the key was outside the signed body.
Version 2 manifests are signed with the institution's own key; the institution code, the key id
and the public key are inside the signed body. Version 3 adds, signed, whether the session was
complete when sealed (`complete`, `end`, `reason`, `missing`): an aborted or expired session
that has evidence is sealed too, and says so. A verifier that does not know version 3 refuses it
instead of calling an incomplete session intact.

Every verdict is one of four (`VerifyStatus`): intact, incomplete (sealed, unaltered, but the
manifest says evidence is missing, or the session could not be sealed because evidence is
missing), altered (something changed after sealing), not sealed yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALGORITHM = "Ed25519"
BODY_FIELDS_V1 = ("version", "session_id", "items", "chain", "script_hash", "timeline_upto_seq")
BODY_FIELDS_V2 = (*BODY_FIELDS_V1, "institution", "key_id", "public_key", "algorithm",
                  "sealed_at")
BODY_FIELDS_V3 = (*BODY_FIELDS_V2, "complete", "end", "reason", "missing")
BODY_FIELDS = {1: BODY_FIELDS_V1, 2: BODY_FIELDS_V2, 3: BODY_FIELDS_V3}
GENESIS = "0" * 64
# What manifests signed before fail-closed sealing hold for a file that was gone at
# sealing time. Never written now; a verifier reports such an item as sealed without its file.
MISSING = "missing"
_HEX = frozenset("0123456789abcdef")


class VerifyStatus(StrEnum):
    INTACT = "intact"
    INCOMPLETE = "incomplete"
    ALTERED = "altered"
    NOT_SEALED = "not_sealed"


def is_digest(value: object) -> bool:
    """A hex SHA-256, as every sealed item must carry."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def manifest_gaps(manifest: Mapping[str, Any]) -> list[str]:
    """What a manifest itself says is missing: a version-3 manifest of a session that ended
    before it was complete (how it ended, why, which evidence was never recorded), and items
    sealed without a file (older manifests wrote "missing" as their hash)."""
    gaps: list[str] = []
    if manifest.get("complete") is False:
        reason = str(manifest.get("reason") or "").strip()
        gaps.append(f"the session ended {manifest.get('end') or 'early'} before it was "
                    f"complete" + (f" (reason: {reason})" if reason else ""))
        missing = manifest.get("missing")
        for entry in missing if isinstance(missing, list) else []:
            gaps.append(f"{entry} was never recorded")
    items = manifest.get("items")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and not is_digest(item.get("sha256")):
            gaps.append(f"{item.get('name')} was sealed without its file (already missing "
                        f"when sealed)")
    return gaps


def canonical_json(data: Any) -> bytes:
    """The exact bytes whose SHA-256 the manifest records for the timeline and acknowledgements:
    keys sorted, no spaces, UTF-8 (not \\u escapes)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def sha_json(data: Any) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()


def chain(items: Iterable[Mapping[str, Any]]) -> str:
    """Each link hashes the previous link, the item name and the item hash, in manifest order."""
    link = GENESIS
    for item in items:
        link = hashlib.sha256(f"{link}{item['name']}{item['sha256']}".encode()).hexdigest()
    return link


def raw_public_key(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_b64(private: Ed25519PrivateKey) -> str:
    return base64.b64encode(raw_public_key(private)).decode()


def key_id_of(public_key_b64_: str) -> str:
    """A key id is the fingerprint of its public key (16 hex digits of its SHA-256), so anyone
    can check that a manifest's key id and public key belong together."""
    return hashlib.sha256(base64.b64decode(public_key_b64_)).hexdigest()[:16]


def body_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The signed part of a manifest; KeyError for a missing field, ValueError for an unknown
    version."""
    version = manifest.get("version")
    fields = BODY_FIELDS.get(version) if isinstance(version, int) else None
    if fields is None:
        raise ValueError(f"unknown manifest version {manifest.get('version')!r}")
    return {k: manifest[k] for k in fields}


def signed_message(body: Mapping[str, Any]) -> bytes:
    """What the key signs: the hex SHA-256 of the canonical body (both versions)."""
    return sha_json(dict(body)).encode()


def sign(body: dict[str, Any], sign_bytes: Callable[[bytes], bytes]) -> dict[str, Any]:
    """The manifest: the body plus the base64 signature made by `sign_bytes(message)`.
    Version 1 also carried the public key outside the body."""
    return {**body, "signature": base64.b64encode(sign_bytes(signed_message(body))).decode()}


def signature_valid(manifest: Mapping[str, Any], public_key_b64_: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64_, validate=True))
        key.verify(base64.b64decode(manifest["signature"], validate=True),
                   signed_message(body_of(manifest)))
    except (InvalidSignature, ValueError, KeyError, TypeError, binascii.Error):
        return False
    return True


@dataclass(frozen=True)
class TrustedKey:
    """A public key the verifier trusts, e.g. from the institution's published keyring."""

    public_key: str
    key_id: str = ""
    institution: str = ""
    retired_at: str | None = None


def check_signature(manifest: Mapping[str, Any], trusted: list[TrustedKey] | None) -> list[str]:
    """Problems with the manifest's signature and key.

    `trusted` None: only the key the manifest names for itself is used (self-asserted: this
    proves the manifest was not edited after signing, not who signed it). Otherwise the
    manifest must be signed by one of the trusted keys.
    """
    version = manifest.get("version")
    if version not in BODY_FIELDS:
        return [f"manifest version {version!r} is unknown"]
    missing = [k for k in (*BODY_FIELDS[version], "signature", "public_key") if k not in manifest]
    if missing:
        return [f"manifest is incomplete (missing {', '.join(missing)})"]
    problems: list[str] = []
    embedded = str(manifest["public_key"])
    if version >= 2:
        try:
            if key_id_of(embedded) != manifest["key_id"]:
                problems.append("manifest key_id does not match its public key")
        except (ValueError, binascii.Error):
            problems.append("manifest public key is not valid base64")
    if trusted is None:
        if not signature_valid(manifest, embedded):
            problems.append("manifest signature does not verify (the manifest was altered "
                            "after sealing)")
        return problems
    candidates = [k for k in trusted
                  if version < 2 or not k.key_id or k.key_id == manifest["key_id"]]
    if version >= 2:
        label = f"key {manifest['key_id']} of {manifest['institution']}"
        if not candidates:
            return [*problems, f"manifest was signed with {label}, which is not a trusted key"]
        for key in candidates:
            if key.institution and key.institution != manifest["institution"]:
                problems.append(f"trusted key {key.key_id} belongs to {key.institution}, "
                                f"not to {manifest['institution']}")
            if key.public_key != embedded:
                problems.append(f"manifest public key differs from the trusted {label}")
    good = [k for k in candidates if signature_valid(manifest, k.public_key)]
    if not good:
        if signature_valid(manifest, embedded):
            problems.append("manifest signature does not verify against the trusted key "
                            "(signed by another key)")
        else:
            problems.append("manifest signature does not verify (the manifest was altered "
                            "after sealing)")
        return problems
    sealed_at = manifest.get("sealed_at")
    for key in good:
        if key.retired_at and sealed_at and _after(sealed_at, key.retired_at):
            problems.append(f"manifest was signed with key {key.key_id} after it was retired "
                            f"({key.retired_at})")
    return problems


def _after(a: str, b: str) -> bool:
    try:
        return datetime.fromisoformat(a) > datetime.fromisoformat(b)
    except (TypeError, ValueError):
        return False


def check_chain(manifest: Mapping[str, Any]) -> list[str]:
    try:
        ok = chain(manifest["items"]) == manifest["chain"]
    except (KeyError, TypeError):
        ok = False
    return [] if ok else ["manifest chain does not match its items"]


class ItemStatus(StrEnum):
    ALTERED = "altered"
    MISSING = "missing"
    ADDED = "added"


@dataclass(frozen=True)
class ItemDifference:
    name: str
    status: ItemStatus


def compare_items(
    sealed: Iterable[Mapping[str, Any]], actual: Mapping[str, str | None]
) -> list[ItemDifference]:
    """Compares the manifest's items with the hashes found now (None: the item's data is
    gone), in manifest order, then the items that were not sealed. An item sealed without a
    real hash proves nothing either way: `manifest_gaps` reports it, not this."""
    expected = {str(i["name"]): i["sha256"] for i in sealed}
    found: list[ItemDifference] = []
    for name, digest in expected.items():
        if not is_digest(digest):
            continue
        now = actual.get(name)
        if now == digest:
            continue
        if now is None or now == MISSING:
            found.append(ItemDifference(name, ItemStatus.MISSING))
        else:
            found.append(ItemDifference(name, ItemStatus.ALTERED))
    for name in actual:
        if name not in expected:
            found.append(ItemDifference(name, ItemStatus.ADDED))
    return found


def trusted_keys_from_keyring(document: Mapping[str, Any]) -> list[TrustedKey]:
    """Reads a published keyring (GET /api/v1/institutions/{code}/seal-keys, or keys/*.json in
    an archive): {"institution": {"code"}, "keys": [{"key_id", "public_key", "retired_at"}]}."""
    institution = document.get("institution") or {}
    code = institution.get("code", "") if isinstance(institution, Mapping) else str(institution)
    keys = []
    for key in document.get("keys") or []:
        keys.append(TrustedKey(public_key=str(key["public_key"]),
                               key_id=str(key.get("key_id") or key_id_of(key["public_key"])),
                               institution=str(code), retired_at=key.get("retired_at")))
    return keys
