"""The audit log (R-51): append-only, each entry hash-chained to the previous one.

An entry is written through the same database connection (and so the same transaction) as the
action it records; a failed action that must still be logged (a refused login, a failed gate)
is written in its own transaction. A single head row, locked by every writer, serialises the
chain on PostgreSQL; on SQLite Tortoise already serialises transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from models.audit import AuditChainHead, AuditEntry
from security.masking import mask_text

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who acts: a staff user, a customer (through an invitation), or the system itself."""

    kind: str
    id: str = ""
    label: str = ""
    ip: str = ""

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind="system", id="", label=label)


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(fields)).hexdigest()


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.astimezone(UTC).isoformat(),
        "actor_kind": entry.actor_kind,
        "actor_id": entry.actor_id,
        "actor_label": entry.actor_label,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "outcome": entry.outcome,
        "ip": entry.ip,
        "details": entry.details,
    }


async def _chain_head(conn: BaseDBAsyncClient) -> AuditChainHead:
    head = await AuditChainHead.select_for_update().using_db(conn).get_or_none(id=1)
    if head is None:
        head = await AuditChainHead.create(id=1, last_hash=GENESIS_HASH, count=0, using_db=conn)
    return head


async def ensure_chain_head(conn: BaseDBAsyncClient | None = None) -> None:
    """Creates the head row once, before concurrent writers can race to create it."""
    async with in_transaction() as tx:
        await _chain_head(conn or tx)


async def record(
    conn: BaseDBAsyncClient,
    actor: Actor,
    action: str,
    *,
    object_type: str = "",
    object_id: str = "",
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Appends one entry inside the caller's transaction `conn`."""
    head = await _chain_head(conn)
    # Microseconds survive both SQLite and PostgreSQL, so the hash recomputes exactly.
    at = datetime.now(UTC)
    clean_details = json.loads(mask_text(json.dumps(details or {}, ensure_ascii=False)))
    entry = AuditEntry(
        at=at,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_label=actor.label[:100],
        action=action,
        object_type=object_type,
        object_id=object_id,
        outcome=outcome,
        ip=actor.ip[:64],
        details=clean_details,
        prev_hash=head.last_hash,
        hash="",
    )
    entry.hash = entry_hash(head.last_hash, _hashed_fields(entry))
    await entry.save(using_db=conn)
    head.last_hash = entry.hash
    head.count = head.count + 1
    await head.save(using_db=conn, update_fields=["last_hash", "count"])
    return entry


async def record_alone(actor: Actor, action: str, **kwargs: Any) -> AuditEntry:
    """Records an entry in a transaction of its own (for refusals, whose action rolls back)."""
    async with in_transaction() as conn:
        return await record(conn, actor, action, **kwargs)


@dataclass
class VerificationResult:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


async def _entries_in_order(batch: int = 500) -> AsyncIterator[AuditEntry]:
    last_id = 0
    while True:
        rows = await AuditEntry.filter(id__gt=last_id).order_by("id").limit(batch)
        if not rows:
            return
        for row in rows:
            yield row
        last_id = rows[-1].id


async def verify_chain() -> VerificationResult:
    """Recomputes every hash in order and reports the first entry that does not match."""
    prev = GENESIS_HASH
    checked = 0
    async for entry in _entries_in_order():
        if entry.prev_hash != prev:
            return VerificationResult(
                False, checked, entry.id, "prev_hash does not match the previous entry",
                {"expected_prev_hash": prev, "stored_prev_hash": entry.prev_hash},
            )
        recomputed = entry_hash(prev, _hashed_fields(entry))
        if recomputed != entry.hash:
            return VerificationResult(
                False, checked, entry.id, "entry content does not match its hash",
                {"expected_hash": recomputed, "stored_hash": entry.hash},
            )
        prev = entry.hash
        checked += 1
    head = await AuditChainHead.get_or_none(id=1)
    if head is not None and (head.last_hash != prev or head.count != checked):
        return VerificationResult(
            False, checked, None, "entries are missing at the end of the chain",
            {"head_count": head.count, "entries": checked},
        )
    return VerificationResult(True, checked)
