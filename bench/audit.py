"""Audited writes on PostgreSQL under concurrency: the single head row every writer locked
(before migration 0012) against the chains of security/audit.py (per institution, each split
into `--strands` chains; strands 1 is "one chain per institution"), and the bound an
after-commit appender could reach (entries inserted with no lock at all).

    .venv/bin/python -m bench.audit [--writers 15] [--seconds 8] [--hold-ms 2]
        [--institutions 1,4] [--strands 1,16] [--schemes single,chains,unchained]
        [--database-url postgres://postgres@127.0.0.1:5432/test]

It creates a scratch database next to the one named (and drops it afterwards), migrates it and
runs `--writers` concurrent transactions in a loop, each writing one audit entry and then
holding its transaction open for `--hold-ms` (the rest of the action after its audit entry:
its other writes, and the event loop serving other requests). Writer i acts for institution
i mod N. A sampler reads pg_stat_activity every 20 ms. Printed per scheme and N: audited
writes per second, p50/p99 latency of one transaction, and the share of busy backends that
were waiting on a lock (wait_event_type = Lock), the measure the issue's tester used.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from infra.database import migrate, open_database
from models.audit import AuditChainHead, AuditEntry
from security import audit
from security.audit import GENESIS_HASH, Actor, entry_hash

Scheme = Callable[[BaseDBAsyncClient, Actor], Awaitable[Any]]


def _entry(actor: Actor, chain: str, prev: str) -> AuditEntry:
    entry = AuditEntry(
        at=datetime.now(UTC), actor_kind=actor.kind, actor_id=actor.id,
        actor_label=actor.label, action="bench.write", object_type="session",
        object_id=str(uuid.uuid4()), outcome="success", ip=actor.ip,
        details={"bench": True}, prev_hash=prev, hash="", chain=chain,
    )
    entry.hash = entry_hash(prev, audit._hashed_fields(entry))
    return entry


async def single_head(conn: BaseDBAsyncClient, actor: Actor) -> None:
    """The scheme before 0012: every writer locks the one head row (id 1)."""
    head = await AuditChainHead.select_for_update().using_db(conn).get(id=1)
    entry = _entry(actor, "", head.last_hash)
    await entry.save(using_db=conn)
    head.last_hash, head.count = entry.hash, head.count + 1
    await head.save(using_db=conn, update_fields=["last_hash", "count"])


async def chains(conn: BaseDBAsyncClient, actor: Actor) -> None:
    """The scheme since 0012: security.audit.record, one head per institution."""
    await audit.record(conn, actor, "bench.write", object_type="session",
                       object_id=str(uuid.uuid4()), details={"bench": True})


async def unchained(conn: BaseDBAsyncClient, actor: Actor) -> None:
    """No lock at all: what the writers of an after-commit appender would pay (a bound)."""
    await _entry(actor, "bench-unchained", uuid.uuid4().hex * 2).save(using_db=conn)


SCHEMES: dict[str, Scheme] = {"single": single_head, "chains": chains, "unchained": unchained}


@dataclass
class Samples:
    busy: int = 0
    waiting: int = 0
    events: collections.Counter[str] = field(default_factory=collections.Counter)


async def _sample(dsn: str, database: str, stop: asyncio.Event, into: Samples) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND state <> 'idle'", database)
            for row in rows:
                into.busy += 1
                if row["wait_event_type"] == "Lock":
                    into.waiting += 1
                    into.events[row["wait_event"]] += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _writer(scheme: Scheme, actor: Actor, hold: float, stop_at: float,
                  latencies: list[float]) -> None:
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        async with in_transaction() as conn:
            await scheme(conn, actor)
            await asyncio.sleep(hold)
        latencies.append(time.perf_counter() - started)


async def run_one(url: str, dsn: str, database: str, scheme: str, institutions: int,
                  strands: int, writers: int, seconds: float, hold: float) -> dict[str, Any]:
    audit.STRANDS = strands
    async with open_database(url):
        latencies: list[float] = []
        samples = Samples()
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(dsn, database, stop, samples))
        stop_at = time.perf_counter() + seconds
        actors = [Actor("user", str(1000 + i), f"bench{i}", "127.0.0.1",
                        institution_id=1 + i % institutions) for i in range(writers)]
        await asyncio.gather(*(_writer(SCHEMES[scheme], a, hold, stop_at, latencies)
                               for a in actors))
        stop.set()
        await sampler
    latencies.sort()
    return {
        "scheme": scheme, "institutions": institutions, "strands": strands, "writers": writers,
        "writes_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "lock_wait_share": round(samples.waiting / samples.busy, 2) if samples.busy else 0.0,
        "lock_events": dict(samples.events),
    }


def _with_database(url: str, database: str, **query: str) -> str:
    parts = urlsplit(url)
    extra = "&".join(f"{k}={v}" for k, v in query.items())
    return urlunsplit(parts._replace(path="/" + database, query=extra))


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--writers", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hold-ms", type=float, default=2.0)
    parser.add_argument("--institutions", default="1,4")
    parser.add_argument("--strands", default="1,16", help="chains per institution (chains)")
    parser.add_argument("--schemes", default="single,chains,unchained")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    admin = args.database_url.replace("postgres://", "postgresql://", 1)
    database = f"shuanglu_bench_audit_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{database}"')
    try:
        url = _with_database(args.database_url, database, minsize="1",
                             maxsize=str(args.writers + 4))
        await migrate(_with_database(args.database_url, database))
        async with open_database(url):
            await AuditChainHead.get_or_create(id=1, defaults={"last_hash": GENESIS_HASH})
        dsn = _with_database(admin, database)
        runs: list[tuple[str, int, int]] = []
        for institutions in (int(n) for n in args.institutions.split(",")):
            for scheme in args.schemes.split(","):
                if scheme == "chains":
                    runs += [(scheme, institutions, int(k)) for k in args.strands.split(",")]
                elif scheme == "unchained" or all(r[0] != "single" for r in runs):
                    runs.append((scheme, institutions, 1))  # the single head: measured once
        for scheme, institutions, strands in runs:
            result = await run_one(url, dsn, database, scheme, institutions, strands,
                                   args.writers, args.seconds, args.hold_ms / 1000)
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            print(f"{scheme:9} institutions={institutions:2} strands={strands:2} "
                  f"writers={args.writers}  {result['writes_per_s']:7.1f} writes/s  "
                  f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                  f"lock-wait {result['lock_wait_share']:.0%} of busy backends "
                  f"{result['lock_events']}", flush=True)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
