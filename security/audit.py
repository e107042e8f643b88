"""The audit log (R-51): append-only, each entry hash-chained to the previous one of its chain.

An entry is written through the same database connection (and so the same transaction) as the
action it records; a failed action that must still be logged (a refused login, a failed gate)
is written in its own transaction.

There is no head row for the whole cluster. What an institution's staff and customers do
chains under `institution:<id>`; the platform's own jobs, anonymous callers (a refused login)
and services (the bank app, insurers) under `system`. Each of these is split into `STRANDS`
chains (`institution:<id>/<k>`, `system/<k>`), each with a head row (`audit_chain`) that its
writer locks until it commits, so the entries of one chain have one order. A transaction's
first entry takes the first head of its family that no one else holds (PostgreSQL `FOR UPDATE
SKIP LOCKED`); it waits only when all `STRANDS` are held. So writers of different institutions
never wait for each other, and writers of one institution only when more than `STRANDS` of
them write at once. bench/audit.py measured why: one locked row per institution still
serialised a busy institution, as the single head row this replaces serialised everyone.
Every later entry of the same transaction goes on the chain its first entry locked (whoever the
actor), so a transaction holds one head and two transactions cannot deadlock on heads. On
SQLite Tortoise serialises transactions anyway (and the first strand is always free).

Entries written before migration 0012 form the legacy chain (`chain` "", head row
`audit_chain_head`), verified as before; every new chain starts (`anchor`) at the legacy chain's
last hash, so the legacy chain is the first segment of each chain. `chain` is part of the hash
of new entries, so an entry cannot be moved to another chain unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.transactions import in_transaction

from models.audit import AuditChain, AuditChainHead, AuditEntry
from security.masking import mask_text
from security.ratelimit import run_script

GENESIS_HASH = "0" * 64
SYSTEM_CHAIN = "system"
# Chains per institution (and for the platform): 16 writers of one institution at once (more
# than two nodes and a worker have database connections by default) never wait on each other.
STRANDS = 16
LEGACY_CHAIN = ""
LEGACY_LABEL = "legacy"  # how the legacy chain is named in results
# A session's institution never changes; a bounded cache saves a look-up per customer action.
_SESSION_INSTITUTIONS: dict[str, int] = {}
_SESSION_CACHE_SIZE = 10_000
# The chain each open transaction writes to (keyed by its outermost transaction wrapper).
_TRANSACTION_CHAINS: weakref.WeakKeyDictionary[BaseDBAsyncClient, str] = (
    weakref.WeakKeyDictionary())


@dataclass(frozen=True)
class Actor:
    """Who acts: a staff user, a customer (through an invitation), a service or the system.

    `institution_id`, when given, names the actor's chain; otherwise a user's institution and a
    customer's session's institution are looked up, and everyone else is on the system chain."""

    kind: str
    id: str = ""
    label: str = ""
    ip: str = ""
    institution_id: int | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind="system", id="", label=label)


def institution_chain(institution_id: int) -> str:
    return f"institution:{institution_id}"


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(fields)).hexdigest()


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    hashed = {
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
    if entry.chain != LEGACY_CHAIN:  # legacy entries were hashed without it
        hashed["chain"] = entry.chain
    return hashed


async def family_for(conn: BaseDBAsyncClient, actor: Actor) -> str:
    """`institution:<id>` or `system`: whose chains an actor's entries go on."""
    if actor.institution_id is not None:
        return institution_chain(actor.institution_id)
    if actor.kind == "user" and actor.id.isdigit():
        from models.people import User

        users = await User.filter(id=int(actor.id)).using_db(conn).values("institution_id")
        return institution_chain(int(users[0]["institution_id"])) if users else SYSTEM_CHAIN
    if actor.kind == "customer" and actor.id:
        cached = _SESSION_INSTITUTIONS.get(actor.id)
        if cached is not None:
            return institution_chain(cached)
        try:
            session_id = uuid.UUID(actor.id)
        except ValueError:
            return SYSTEM_CHAIN
        from models.sessions import RecordingSession

        sessions = await RecordingSession.filter(id=session_id).using_db(conn).values(
            "institution_id")
        if not sessions:
            return SYSTEM_CHAIN
        if len(_SESSION_INSTITUTIONS) >= _SESSION_CACHE_SIZE:
            _SESSION_INSTITUTIONS.clear()
        institution_id = _SESSION_INSTITUTIONS[actor.id] = int(sessions[0]["institution_id"])
        return institution_chain(institution_id)
    return SYSTEM_CHAIN


def _transaction_root(conn: BaseDBAsyncClient) -> BaseDBAsyncClient | None:
    """The outermost transaction of `conn` (savepoints wrap it), None outside a transaction."""
    root = conn
    while isinstance(parent := getattr(root, "_parent", None), TransactionalDBClient):
        root = parent
    return root if isinstance(root, TransactionalDBClient) else None


async def _legacy_tail(conn: BaseDBAsyncClient) -> str:
    legacy = await AuditChainHead.filter(id=1).using_db(conn).first()
    return legacy.last_hash if legacy is not None else GENESIS_HASH


async def _create_heads(conn: BaseDBAsyncClient, chains: list[str]) -> None:
    """Creates missing heads; of two first writers one inserts, the other waits for it and
    inserts nothing. Each starts at the legacy chain's last hash (its anchor)."""
    anchor = await _legacy_tail(conn)
    marks = ("?", "?", "?") if conn.capabilities.dialect == "sqlite" else ("$1", "$2", "$3")
    sql = ("INSERT INTO audit_chain (chain, last_hash, count, anchor) "  # noqa: S608 - fixed
           f"VALUES ({marks[0]}, {marks[1]}, 0, {marks[2]}) ON CONFLICT (chain) DO NOTHING")
    for chain in chains:
        await conn.execute_query(sql, [chain, anchor, anchor])


async def _lock_head(conn: BaseDBAsyncClient, chain: str) -> AuditChain:
    head = await AuditChain.select_for_update().using_db(conn).get_or_none(chain=chain)
    if head is None:
        await _create_heads(conn, [chain])
        head = await AuditChain.select_for_update().using_db(conn).get(chain=chain)
    return head


async def _lock_free_head(conn: BaseDBAsyncClient, family: str) -> AuditChain:
    """The first of the family's heads that no other transaction holds, locked."""
    names = [f"{family}/{k}" for k in range(STRANDS)]
    for attempt in range(2):
        head = await (AuditChain.filter(chain__in=names).order_by("chain")
                      .select_for_update(skip_locked=True).using_db(conn).first())
        if head is not None:
            return head
        if attempt == 0:
            existing = set(await AuditChain.filter(chain__in=names).using_db(conn)
                           .values_list("chain", flat=True))
            if len(existing) == len(names):
                break
            await _create_heads(conn, [n for n in names if n not in existing])
    # All held by others: wait for one.
    return await _lock_head(conn, random.choice(names))


async def _chain_head(conn: BaseDBAsyncClient, actor: Actor) -> AuditChain:
    """Locks the head the next entry written through `conn` goes on (see the module
    docstring): the transaction's chain if it has one, else a free one of the actor's."""
    root = _transaction_root(conn)
    chain = _TRANSACTION_CHAINS.get(root) if root is not None else None
    if chain is not None:
        return await _lock_head(conn, chain)  # already ours
    head = await _lock_free_head(conn, await family_for(conn, actor))
    if root is not None:
        _TRANSACTION_CHAINS[root] = head.chain
    return head


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
    """Appends one entry to one of the actor's chains inside the caller's transaction `conn`
    (to the chain of the transaction's first entry, if it has one); the chain's head stays
    locked until that transaction ends."""
    clean_details = json.loads(mask_text(json.dumps(details or {}, ensure_ascii=False)))
    head = await _chain_head(conn, actor)
    # Microseconds survive both SQLite and PostgreSQL, so the hash recomputes exactly.
    at = datetime.now(UTC)
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
        chain=head.chain,
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


# -- refusals of anonymous callers, aggregated -----------------------------------------------

REFUSAL_WINDOW_SECONDS = 60
REFUSAL_SUBJECTS = 20  # distinct subjects (user names, reasons) named in an aggregated entry
_REFUSALS_OPEN = "audit:refusals:open"  # sorted set: window key -> window end (epoch s)
# KEYS[1] the window's hash, KEYS[2] the open windows; ARGV: subject, window end, ttl, the
# most subjects kept, then the entry's fields (name, value, ...) stored with the first one.
_COUNT_REFUSAL = """
local n = redis.call('HINCRBY', KEYS[1], '#count', 1)
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
else
  local field = 's:' .. ARGV[1]
  if redis.call('HEXISTS', KEYS[1], field) == 1
      or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[4]) + 8 then
    redis.call('HINCRBY', KEYS[1], field, 1)
  end
end
return n
"""
# Takes (and so claims: one node writes each) up to 100 windows that ended before ARGV[1].
_CLAIM_REFUSALS = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
local out = {}
for _, key in ipairs(keys) do
  redis.call('ZREM', KEYS[1], key)
  table.insert(out, redis.call('HGETALL', key))
  redis.call('DEL', key)
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class RefusalLog:
    """Refusals of anonymous callers (a wrong login, an unknown invitation, a bad signature)
    without letting a flood grow the audit log: per source address, action and outcome, the
    first refusal of each minute is recorded at once, as always; the rest of that minute are
    counted in Redis and recorded as one entry (`details.aggregated`, `count`, and the counts
    per subject, e.g. the user names tried) once the minute is over (`flush`, every node runs
    it; each window is written once). Successes and staff actions are never aggregated."""

    redis: Any  # redis.asyncio.Redis (security does not import the client's types)
    window_seconds: int = REFUSAL_WINDOW_SECONDS

    async def record(self, actor: Actor, action: str, *, subject: str = "",
                     object_type: str = "", object_id: str = "", outcome: str = "denied",
                     details: dict[str, Any] | None = None, now: float | None = None) -> bool:
        """Counts the refusal; True when it was recorded individually (the minute's first)."""
        at = time.time() if now is None else now
        start = int(at // self.window_seconds * self.window_seconds)
        end = start + self.window_seconds
        key = f"audit:refusals:{action}:{outcome}:{actor.ip or '-'}:{start}"
        meta = ["@action", action, "@outcome", outcome, "@kind", actor.kind, "@ip", actor.ip,
                "@object_type", object_type, "@start", str(start), "@end", str(end)]
        count = int(await run_script(
            self.redis, _COUNT_REFUSAL, [key, _REFUSALS_OPEN],
            [subject[:64], end, self.window_seconds * 60, REFUSAL_SUBJECTS, *meta]))
        if count > 1:
            return False
        await record_alone(actor, action, object_type=object_type, object_id=object_id,
                           outcome=outcome, details={**(details or {}),
                                                     "aggregation_window": start})
        return True

    async def flush(self, now: float | None = None) -> int:
        """Writes one entry per finished window that counted more than its first refusal;
        returns how many it wrote."""
        at = time.time() if now is None else now
        windows = await run_script(self.redis, _CLAIM_REFUSALS, [_REFUSALS_OPEN], [int(at)])
        written = 0
        for flat in windows:
            fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
            more = int(fields.get("#count", "1")) - 1
            if more <= 0 or "@action" not in fields:
                continue
            subjects = {k[2:]: int(v) for k, v in fields.items() if k.startswith("s:")}
            start = int(fields["@start"])
            await record_alone(
                Actor(fields["@kind"], "", "aggregated", fields["@ip"]), fields["@action"],
                object_type=fields["@object_type"], outcome=fields["@outcome"],
                details={"aggregated": True, "count": more,
                         "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
                         "window_seconds": int(fields["@end"]) - start,
                         "subjects": subjects,
                         "subjects_truncated": len(subjects) >= REFUSAL_SUBJECTS})
            written += 1
        return written


# -- verification --------------------------------------------------------------------------

TRUNCATED = "entries are missing at the end of the chain"


@dataclass
class ChainResult:
    """One chain's verification: the first entry that does not match, or a truncated tail."""

    chain: str
    ok: bool = True
    checked: int = 0
    first_broken_id: int | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"chain": self.chain, "ok": self.ok, "checked": self.checked,
                "first_broken_id": self.first_broken_id, "reason": self.reason,
                "details": self.details}


@dataclass
class VerificationResult:
    """All chains; `first_broken_id`, `reason` and `details` describe the first problem found
    (the broken chain with the lowest entry id, else a truncated one), `details["chain"]`
    names its chain and `details["other_broken_chains"]` the others."""

    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    chains: list[ChainResult] = field(default_factory=list)


@dataclass
class _Walk:
    result: ChainResult
    prev: str
    expected_count: int | None  # the head's count when verification started
    expected_hash: str = ""
    hash_at_count: str | None = None
    first_id: int | None = None

    def fail(self, entry_id: int | None, reason: str, **details: Any) -> None:
        self.result.ok = False
        self.result.first_broken_id = entry_id
        self.result.reason = reason
        self.result.details = details


async def _entries_in_order(batch: int = 500) -> AsyncIterator[AuditEntry]:
    last_id = 0
    while True:
        rows = await AuditEntry.filter(id__gt=last_id).order_by("id").limit(batch)
        if not rows:
            return
        for row in rows:
            yield row
        last_id = rows[-1].id


def _check(walk: _Walk, entry: AuditEntry) -> None:
    if not walk.result.ok:
        return  # a chain is reported at its first broken entry only
    if entry.prev_hash != walk.prev:
        walk.fail(entry.id, "prev_hash does not match the previous entry",
                  expected_prev_hash=walk.prev, stored_prev_hash=entry.prev_hash)
        return
    recomputed = entry_hash(walk.prev, _hashed_fields(entry))
    if recomputed != entry.hash:
        walk.fail(entry.id, "entry content does not match its hash",
                  expected_hash=recomputed, stored_hash=entry.hash)
        return
    walk.prev = entry.hash
    walk.result.checked += 1
    if walk.result.checked == walk.expected_count:
        walk.hash_at_count = entry.hash


def _check_tail(walk: _Walk) -> None:
    """Each chain must reach the head it had when verification started (later entries are
    fine: writers keep appending while an auditor verifies)."""
    if not walk.result.ok or walk.expected_count is None:
        return
    if walk.result.checked < walk.expected_count or (
            walk.expected_count and walk.hash_at_count != walk.expected_hash):
        walk.fail(None, TRUNCATED, head_count=walk.expected_count,
                  entries=walk.result.checked)


async def verify_chain() -> VerificationResult:
    """Recomputes every chain in order and reports, per chain, the first entry that does not
    match or a missing tail. One pass over the entries by id (a chain's order)."""
    # The heads first: entries committed after this are simply not required to exist.
    legacy_head = await AuditChainHead.get_or_none(id=1)
    heads = {h.chain: h for h in await AuditChain.all()}
    walks: dict[str, _Walk] = {
        LEGACY_CHAIN: _Walk(ChainResult(LEGACY_LABEL), GENESIS_HASH,
                            legacy_head.count if legacy_head else None,
                            legacy_head.last_hash if legacy_head else ""),
    }
    for name, head in heads.items():
        walks[name] = _Walk(ChainResult(name), head.anchor, head.count, head.last_hash)
    async for entry in _entries_in_order():
        walk = walks.get(entry.chain)
        if walk is None:  # a chain begun after the heads were read, or one whose head is gone
            late = await AuditChain.get_or_none(chain=entry.chain)
            walk = walks[entry.chain] = _Walk(
                ChainResult(entry.chain), late.anchor if late else "", None)
            if late is None:
                walk.fail(entry.id, "the chain has no head row")
            else:
                heads[entry.chain] = late
        if walk.first_id is None:
            walk.first_id = entry.id
        _check(walk, entry)

    legacy = walks[LEGACY_CHAIN]
    _check_tail(legacy)
    for name, walk in walks.items():
        if name == LEGACY_CHAIN:
            continue
        _check_tail(walk)
        # Every chain begins where the legacy chain ends (its anchor).
        anchor = heads[name].anchor if name in heads else None
        if walk.result.ok and anchor is not None and legacy.result.ok and anchor != legacy.prev:
            walk.fail(walk.first_id, "the chain does not start at the end of the legacy chain",
                      anchor=anchor, legacy_last_hash=legacy.prev)

    # Heads with no entries yet (each family's chains are created together) are left out.
    chains = [w.result for _name, w in sorted(walks.items())
              if w.result.checked or not w.result.ok]
    broken = sorted((c for c in chains if not c.ok),
                    key=lambda c: (c.first_broken_id is None, c.first_broken_id or 0, c.chain))
    total = sum(c.checked for c in chains)
    if not broken:
        return VerificationResult(True, total, chains=chains)
    first = broken[0]
    details = {"chain": first.chain, **first.details}
    if len(broken) > 1:
        details["other_broken_chains"] = [
            {"chain": c.chain, "first_broken_id": c.first_broken_id, "reason": c.reason}
            for c in broken[1:]]
    return VerificationResult(False, total, first.first_broken_id, first.reason, details, chains)
