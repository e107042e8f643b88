"""Sealing a completed session (R-31): the timeline, acknowledgements, signatures and recording
segments are hashed into a chain, and the manifest is signed with the Ed25519 key of the
session's institution (manifest version 2; `security.seal_keys`).

`verify_manifest` recomputes the items from the database and the stored files and names what
differs; the manifest itself (hashing, chain, signature) is checked by `security.seal_manifest`,
the same code that verifies an exported archive offline (`archive.offline`). Version-1 manifests,
signed with the platform key (`deps.seal_key`), still verify against that key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from models.org import Institution
from models.seal_keys import SealKey
from models.sessions import (
    Acknowledgement,
    Recording,
    RecordingSession,
    SessionEvent,
    SessionState,
    Signature,
)
from security.audit import Actor
from security.seal_keys import DatabaseKeyring, SealKeyring
from security.seal_manifest import (
    ALGORITHM,
    MISSING,
    ItemDifference,
    ItemStatus,
    TrustedKey,
    chain,
    check_chain,
    check_signature,
    compare_items,
    sha_json,
)
from security.seal_manifest import public_key_b64 as _public_key_b64
from security.seal_manifest import sign as sign_body
from workflow.core import WorkflowDeps, locked
from workflow.storage import LocalStorage

MANIFEST_VERSION = 2


def public_key_b64(seal_key: bytes) -> str:
    """The public half of the platform key (version-1 manifests)."""
    return _public_key_b64(Ed25519PrivateKey.from_private_bytes(seal_key))


@dataclass
class SealedItems:
    """The items of a manifest and the exact data behind each: the timeline and the
    acknowledgements as hashed, and the stored file of every signature and recording."""

    items: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    acknowledgements: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)  # item name -> storage path


def _file_sha(storage: LocalStorage, path: str) -> str:
    return storage.sha256(path) if storage.exists(path) else MISSING


async def sealed_items(
    session_id: UUID, conn: BaseDBAsyncClient, storage: LocalStorage, upto_seq: int
) -> SealedItems:
    events = await SessionEvent.filter(session_id=session_id, seq__lte=upto_seq).using_db(
        conn
    ).order_by("seq")
    acks = await Acknowledgement.filter(session_id=session_id).using_db(conn).order_by("id")
    signatures = await Signature.filter(session_id=session_id).using_db(conn).order_by("id")
    recordings = await Recording.filter(session_id=session_id).using_db(conn).order_by(
        "kind", "segment"
    )
    timeline = [
        {"seq": e.seq, "type": e.type, "from": e.from_state, "to": e.to_state,
         "actor": e.actor_kind, "actor_id": e.actor_id, "ip": e.ip, "at": e.at.isoformat(),
         "data": e.data}
        for e in events
    ]
    acknowledgements = [
        {"step_id": a.step_id, "answer": a.answer.value, "kind": a.answer_kind,
         "offset_ms": a.offset_ms, "at": a.at.isoformat()} for a in acks
    ]
    result = SealedItems(
        items=[{"name": "timeline", "sha256": sha_json(timeline)},
               {"name": "acknowledgements", "sha256": sha_json(acknowledgements)}],
        timeline=timeline, acknowledgements=acknowledgements,
    )
    for s in signatures:
        name = f"signature:{s.image_path}"
        result.items.append({"name": name, "sha256": _file_sha(storage, s.image_path)})
        result.files[name] = s.image_path
    for r in recordings:
        name = f"recording:{r.kind}:{r.segment}"
        result.items.append({"name": name, "sha256": _file_sha(storage, r.path)})
        result.files[name] = r.path
    return result


async def seal(
    deps: WorkflowDeps, session_id: UUID, keyring: SealKeyring | None = None
) -> RecordingSession:
    """completed → sealed → qa_pending, one transaction. The manifest is signed with the
    active key of the session's institution (created on first use)."""
    actor = Actor.system("sealer")
    keys = keyring or DatabaseKeyring(deps.cipher, deps.clock)
    async with locked(deps, session_id, "seal") as unit:
        # The sealing event itself is part of the timeline that is hashed.
        await unit.move(actor, SessionState.SEALED, "sealed")
        upto = unit.session.event_seq
        signer = await keys.signer_for(unit.conn, unit.session.institution_id, actor)
        items = (await sealed_items(session_id, unit.conn, deps.storage, upto)).items
        sealed_at = deps.clock()
        body = {"version": MANIFEST_VERSION, "session_id": str(session_id), "items": items,
                "chain": chain(items), "script_hash": unit.session.script_hash,
                "timeline_upto_seq": upto, "institution": signer.institution_code,
                "key_id": signer.key_id, "public_key": signer.public_key,
                "algorithm": ALGORITHM, "sealed_at": sealed_at.isoformat()}
        unit.session.manifest = sign_body(body, signer.sign)
        unit.session.sealed_at = sealed_at
        await unit.move(actor, SessionState.QA_PENDING, "submitted_to_qa")
        result: RecordingSession = unit.session
    return result


async def trusted_keys_for(deps: WorkflowDeps, session: RecordingSession,
                           manifest: dict[str, Any]) -> list[TrustedKey]:
    """What the database says the manifest must be signed with: the platform key for version
    1; for version 2 the key of the session's institution that the manifest names."""
    if manifest.get("version") == 1:
        return [TrustedKey(public_key=public_key_b64(deps.seal_key))]
    institution = await Institution.get(id=session.institution_id)
    keys = await SealKey.filter(institution_id=institution.id,
                                key_id=str(manifest.get("key_id", "")))
    return [TrustedKey(public_key=k.public_key, key_id=k.key_id, institution=institution.code,
                       retired_at=k.retired_at.isoformat() if k.retired_at else None)
            for k in keys]


def describe_for_database(difference: ItemDifference) -> str:
    if difference.status == ItemStatus.ADDED:
        return f"{difference.name} was added after sealing"
    return f"{difference.name} was altered or is missing"


async def verify_manifest(deps: WorkflowDeps, session_id: UUID) -> list[str]:
    """Problems found; an empty list means the sealed session is intact."""
    session = await RecordingSession.get(id=session_id)
    manifest = session.manifest
    if not manifest:
        return ["session is not sealed"]
    problems = check_signature(manifest, await trusted_keys_for(deps, session, manifest))
    problems += check_chain(manifest)
    async with in_transaction() as conn:
        current = await sealed_items(session_id, conn, deps.storage,
                                     int(manifest.get("timeline_upto_seq", 0)))
    actual = {i["name"]: i["sha256"] for i in current.items}
    problems += [describe_for_database(d)
                 for d in compare_items(manifest.get("items") or [], actual)]
    return problems

