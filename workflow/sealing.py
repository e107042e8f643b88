"""Sealing a completed session (R-31): the timeline, acknowledgements, signatures and recording
segments are hashed into a chain, and the manifest is signed with Ed25519.

Anyone holding the public key can check the manifest offline; `verify_manifest` recomputes it from
the database and the stored files and names what differs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tortoise.transactions import in_transaction

from models.sessions import (
    Acknowledgement,
    Recording,
    RecordingSession,
    SessionEvent,
    SessionState,
    Signature,
)
from security.audit import Actor
from workflow.core import WorkflowDeps, locked

MANIFEST_VERSION = 1
BODY_FIELDS = ("version", "session_id", "items", "chain", "script_hash", "timeline_upto_seq")


def _sha(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def public_key_of(seal_key: bytes) -> Ed25519PublicKey:
    return Ed25519PrivateKey.from_private_bytes(seal_key).public_key()


def public_key_b64(seal_key: bytes) -> str:
    raw = public_key_of(seal_key).public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


async def _items(
    session_id: UUID, conn: Any, storage: Any, upto_seq: int
) -> list[dict[str, Any]]:
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
    items = [{"name": "timeline", "sha256": _sha(timeline)}]
    items.append({"name": "acknowledgements", "sha256": _sha([
        {"step_id": a.step_id, "answer": a.answer.value, "kind": a.answer_kind,
         "offset_ms": a.offset_ms, "at": a.at.isoformat()} for a in acks
    ])})
    for s in signatures:
        items.append({"name": f"signature:{s.image_path}",
                      "sha256": storage.sha256(s.image_path)})
    for r in recordings:
        actual = storage.sha256(r.path) if storage.exists(r.path) else "missing"
        items.append({"name": f"recording:{r.kind}:{r.segment}", "sha256": actual})
    return items


def _chain(items: list[dict[str, Any]]) -> str:
    link = "0" * 64
    for item in items:
        link = hashlib.sha256(f"{link}{item['name']}{item['sha256']}".encode()).hexdigest()
    return link


async def seal(deps: WorkflowDeps, session_id: UUID) -> RecordingSession:
    """completed → sealed → qa_pending, one transaction."""
    actor = Actor.system("sealer")
    async with locked(deps, session_id, "seal") as unit:
        # The sealing event itself is part of the timeline that is hashed.
        await unit.move(actor, SessionState.SEALED, "sealed")
        upto = unit.session.event_seq
        items = await _items(session_id, unit.conn, deps.storage, upto)
        body = {"version": MANIFEST_VERSION, "session_id": str(session_id), "items": items,
                "chain": _chain(items), "script_hash": unit.session.script_hash,
                "timeline_upto_seq": upto}
        signature = Ed25519PrivateKey.from_private_bytes(deps.seal_key).sign(
            _sha(body).encode()
        )
        unit.session.manifest = {
            **body, "signature": base64.b64encode(signature).decode(),
            "public_key": public_key_b64(deps.seal_key),
        }
        unit.session.sealed_at = deps.clock()
        await unit.move(actor, SessionState.QA_PENDING, "submitted_to_qa")
        result: RecordingSession = unit.session
    return result


async def verify_manifest(deps: WorkflowDeps, session_id: UUID) -> list[str]:
    """Problems found; an empty list means the sealed session is intact."""
    session = await RecordingSession.get(id=session_id)
    manifest = session.manifest
    if not manifest:
        return ["session is not sealed"]
    problems: list[str] = []
    body = {k: manifest[k] for k in BODY_FIELDS}
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(manifest["public_key"])).verify(
            base64.b64decode(manifest["signature"]), _sha(body).encode()
        )
    except (InvalidSignature, ValueError):
        problems.append("manifest signature does not verify")
    if _chain(manifest["items"]) != manifest["chain"]:
        problems.append("manifest chain does not match its items")
    async with in_transaction() as conn:
        current = await _items(session_id, conn, deps.storage, manifest["timeline_upto_seq"])
    expected = {i["name"]: i["sha256"] for i in manifest["items"]}
    actual = {i["name"]: i["sha256"] for i in current}
    for name, digest in expected.items():
        if actual.get(name) != digest:
            problems.append(f"{name} was altered or is missing")
    for name in actual.keys() - expected.keys():
        problems.append(f"{name} was added after sealing")
    return problems
