"""The multi-node figures of issue 13: whole sessions with real media through HAProxy with 1 and
2 app nodes, a session whose two parties enter through different nodes, and a node killed in the
middle of a call (R-30, R-31).

    python -m bench.cluster [--nodes 1,2] [--sessions 4] [--concurrency 2] [--api-rate 4]
                            [--baseline 60] [--json FILE] [--keep]

For each node count it starts a `deploy.local_cluster.LocalCluster` (HAProxy, the app nodes, a
separate worker, Redis with AOF, the evidence on S3 (moto) and a scratch database on the
PostgreSQL server of DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres, dropped
at the end), publishes the short rehearsal script (tests/rehearsal/test_rehearsal.py: a session
takes about three minutes instead of a quarter of an hour) and plays `--sessions` whole sessions,
`--concurrency` at a time, each one `python -m app rehearse` process through HAProxy (customer
and agent over HTTP, the live socket and WebRTC; the identity engines run on the worker). Beside
them a background load of ordinary API requests (staff logins, session lists, GET
/sessions/{id}, the customer's GET /customer/session) runs at `--api-rate` requests a second and
is timed; before the calls the same load runs alone for `--baseline` seconds, so that what it
costs is subtracted from the calls' CPU (`--sessions 0`: only that). Printed per node count:
sessions completed per minute, API p50/p95/p99, 5xx answers
(must be 0), CPU-seconds per process kind (nodes, worker, HAProxy, Redis, S3, PostgreSQL's
backends for the scratch database, the rehearsal clients) while the calls ran and until the
after-call work (seal, transcript, QA checks, playback copy) was done, every session sealed and
verified intact, the audit chain verified (GET /audit/verify as auditor01); then the 2-node /
1-node ratios. On the largest cluster (2 nodes or more) two checks follow:

* split entry: the customer plays against node 1 and the agent against node 2 directly (not
  through HAProxy): one owner record for the whole call, only the owner's spool has the session
  (no split room), every stream's segments numbered without a hole and covering the script
  span (no lost segment), `complete` accepted (it refuses gaps), sealed and intact;
* node kill: the node holding a call is killed (SIGKILL) at the script's third step: the time
  until the session is marked interrupted (`call_node_lost`; bound: keep-alive timeout + 5 s),
  the recording lost before the kill (the customer's last segment end), the gap until the
  customer's recording continues, and the session resumed, completed, sealed and intact.

These machines have 2 cores shared by everything (the nodes, the worker's engines, PostgreSQL,
the clients that encode nothing but still run WebRTC): a second node cannot make CPU-bound work
faster here. What the ratio shows on this machine is that a second node costs nothing in
correctness and little in overhead; throughput per node has to be measured on the target
hardware. Figures are ratios and CPU-seconds because wall times on a shared sandbox are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from redis.asyncio import Redis

from app.seed import DEMO_USERS
from deploy.local_cluster import LocalCluster, database_for
from infra.cluster import OWNER_KEY
from infra.jobs import queue_name
from rehearsal.agent import DEMO_LOCATION
from rehearsal.customer import invitation_token
from testing import identity_material as synth

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
PASSWORDS = {username: password for username, password, _, _ in DEMO_USERS}
# The nodes' keep-alive (infra/config.py call_keepalive_timeout_seconds): a dead node's session
# must be interrupted within this plus 5 s.
KEEPALIVE_S = 10.0
GAP_TOLERANCE_S = 3.0  # what `complete` tolerates (workflow/core.py), for "lost segment"
STREAMS = ("customer_av", "agent_av", "tts")
SEALED = frozenset({"sealed", "qa_pending", "qa_passed", "qa_rejected"})
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The background load: one request of each kind in turn (logins are Argon2id: one in ten).
LOAD_SEQUENCE = ("list", "get", "customer", "get", "list", "customer", "get", "list",
                 "customer", "login")
LOGIN_USERS = ("agent01", "qa01", "sup01")


class BenchError(RuntimeError):
    """Something the bench needs did not happen (the message says what)."""


# -- the API, as a client ------------------------------------------------------------------------


class Client:
    """JSON calls to /api/v1 of one base URL with the demo users' tokens."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        self.tokens: dict[str, str] = {}

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, token: str | None = None,
                      body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, f"{self.base_url}/api/v1{path}", json=body,
                                     headers=headers) as response:
            text = await response.text()
        try:
            return response.status, (json.loads(text) if text else None)
        except ValueError:
            return response.status, text

    async def token(self, user: str) -> str:
        if user not in self.tokens:
            status, body = await self.request("POST", "/auth/login",
                                              body={"username": user,
                                                    "password": PASSWORDS[user]})
            if status != 200:
                raise BenchError(f"login {user}: {status} {body}")
            self.tokens[user] = body["token"]
        return self.tokens[user]

    async def call(self, user: str, method: str, path: str, body: Any = None,
                   expect: tuple[int, ...] = (200, 201)) -> Any:
        status, answer = await self.request(method, path, await self.token(user), body)
        if status not in expect:
            raise BenchError(f"{method} {path} as {user}: {status} {answer}")
        return answer


async def publish_short_script(client: Client) -> None:
    """The rehearsal test's short YA-ZSS-001 (version 2), through the four-eyes publication."""
    from tests.rehearsal.test_rehearsal import short_script

    script = await client.call("po01", "POST", "/scripts", {"yaml": short_script()})
    for user, action in [("po01", "submit"), ("po02", "approve"), ("po02", "publish")]:
        await client.call(user, "POST", f"/scripts/{script['id']}/{action}")


@dataclass(frozen=True)
class NewSession:
    sid: str
    link: str
    card: synth.CardIdentity
    agent: str


async def new_session(client: Client, agent: str, label: str) -> NewSession:
    """The order, the session on the demo premises and its invitation link."""
    card = synth.random_identity(random.Random(label), today=date.today(), min_age=30,
                                 max_age=59)
    order = await client.call(agent, "POST", "/orders", {
        "application_no": f"APP-BENCH-{label}-{uuid.uuid4().hex[:8]}"[:64],
        "product_code": "YA-ZSS-001",
        "customer": {"name": card.name, "id_number": card.id_number, "phone": "13812345678"},
        "premium": "5000.00", "payment_years": 10, "sum_insured": "100000.00"})
    session = await client.call(agent, "POST", "/sessions",
                                {"order_id": order["id"], "location": DEMO_LOCATION})
    invitation = await client.call(agent, "POST", f"/sessions/{session['id']}/invitation", {})
    return NewSession(str(session["id"]), str(invitation["url"]), card, agent)


async def session_state(client: Client, sid: str) -> dict[str, Any]:
    body: dict[str, Any] = await client.call("qa01", "GET", f"/sessions/{sid}")
    return body


async def wait_for(what: str, check: Any, seconds: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(every)
    raise BenchError(f"timed out after {seconds:.0f} s waiting for {what}")


async def sealed_and_intact(client: Client, sid: str, seconds: float = 300.0) -> bool:
    """Waits for the worker's seal; True when GET /verify says intact."""
    async def sealed() -> bool:
        return (await session_state(client, sid))["state"] in SEALED

    await wait_for(f"the seal of {sid}", sealed, seconds, every=2.0)
    verdict = await client.call("qa01", "GET", f"/sessions/{sid}/verify")
    return bool(verdict.get("status") == "intact")


async def audit_verified(client: Client) -> dict[str, Any]:
    body: dict[str, Any] = await client.call("auditor01", "GET", "/audit/verify")
    return {"ok": bool(body.get("ok")), "checked": body.get("checked"),
            "reason": body.get("reason")}


def at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# -- a rehearsal, as its own process -------------------------------------------------------------


async def rehearse_process(base_url: str, session: NewSession, log: Path, *,
                           customer: bool = True, agent: bool = True,
                           timeout_s: float = 900.0) -> tuple[int, float]:
    """`python -m app rehearse` for the session's customer and/or agent; returns its exit code
    (0: completed) and how long it took. Killed with its children when cancelled."""
    args = [sys.executable, "-m", "app", "rehearse", session.sid, "--base-url", base_url,
            "--timeout", str(int(timeout_s))]
    if customer:
        args += ["--customer-link", session.link, "--customer-name", session.card.name,
                 "--customer-id-number", session.card.id_number, "--answers", "voice"]
    if agent:
        args += ["--agent", f"{session.agent}:{PASSWORDS[session.agent]}"]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    out = await asyncio.to_thread(log.open, "wb")
    try:
        process = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    finally:
        out.close()  # the child has its own copy
    try:
        async with asyncio.timeout(timeout_s + 60):
            code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 10)
    return code, time.monotonic() - started


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- CPU-seconds per process kind ----------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent, CPU-seconds of the process and of its children it has waited for)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + stime + cutime + cstime) / CLK_TCK


def process_table() -> dict[int, tuple[int, float]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    return table


def tree_cpu(root: int, table: dict[int, tuple[int, float]]) -> float:
    """A process and its live descendants (the presence monitor, the playback renderer...);
    those that ended are in their parent's waited-for children time."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _) in table.items():
        children[parent].append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            total += table[pid][1]
            stack += children[pid]
    return total


def kind_of(process_name: str) -> str:
    return "nodes" if process_name.startswith("node-") else {"s3": "s3 (moto)"}.get(
        process_name, process_name)


def postgres_backends(database: str) -> dict[int, float]:
    """CPU-seconds of the PostgreSQL backends serving `database` (their title, as ps shows
    it: "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE")."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        words = title.decode(errors="replace").split()
        if words[:1] == ["postgres:"] and database in words[2:4]:
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = stat[1]
    return found


class CpuMeter:
    """CPU-seconds per process kind since `start()`: the cluster's processes with their
    descendants (/proc utime+stime, plus waited-for children), PostgreSQL's backends for the
    cluster's database (sampled every 2 s: a backend that ends keeps its last reading), the
    rehearsal processes (this process's waited-for children) and this process."""

    def __init__(self, cluster: LocalCluster, database: str) -> None:
        self.cluster = cluster
        self.database = database
        self._base: dict[str, float] = {}
        self._pg_base: dict[int, float] = {}
        self._pg_last: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    def _cluster_cpu(self) -> dict[str, float]:
        table = process_table()
        cpu: dict[str, float] = defaultdict(float)
        for name, process in self.cluster.processes.items():
            cpu[kind_of(name)] += tree_cpu(process.pid, table)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu["rehearsal clients"] = children.ru_utime + children.ru_stime
        cpu["bench (load, polling)"] = own.ru_utime + own.ru_stime
        return cpu

    def _sample_pg(self) -> None:
        for pid, seconds in postgres_backends(self.database).items():
            self._pg_base.setdefault(pid, 0.0)
            self._pg_last[pid] = seconds

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            self._sample_pg()

    def start(self) -> None:
        self._base = self._cluster_cpu()
        self._pg_base = postgres_backends(self.database)
        self._pg_last = dict(self._pg_base)
        self._task = asyncio.create_task(self._sampler())

    def read(self) -> dict[str, float]:
        self._sample_pg()
        now = self._cluster_cpu()
        cpu = {kind: round(now.get(kind, 0.0) - self._base.get(kind, 0.0), 2)
               for kind in now}
        cpu["postgresql"] = round(sum(self._pg_last[p] - self._pg_base[p]
                                      for p in self._pg_last), 2)
        return cpu

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


PLATFORM = ("nodes", "worker", "haproxy", "redis", "postgresql", "s3 (moto)")


# -- the background API load ---------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class ApiLoad:
    """Ordinary API requests at a steady rate through HAProxy, each timed."""

    def __init__(self, client: Client, rate: float, customer_token: str,
                 session_ids: list[str], workers: int = 4) -> None:
        self.client = client
        self.rate = rate
        self.customer_token = customer_token
        self.session_ids = session_ids  # grows as sessions are created
        self.workers = workers
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.status_5xx = 0
        self.unexpected: list[str] = []

    async def _one(self, kind: str, n: int) -> None:
        token: str | None
        body = None
        if kind == "login":
            user = LOGIN_USERS[n % len(LOGIN_USERS)]
            method, path, token = "POST", "/auth/login", None
            body = {"username": user, "password": PASSWORDS[user]}
        elif kind == "list":
            method, path, token = "GET", "/sessions", await self.client.token("agent01")
        elif kind == "get":
            sid = self.session_ids[n % len(self.session_ids)]
            method, path, token = "GET", f"/sessions/{sid}", await self.client.token("qa01")
        else:
            method, path, token = "GET", "/customer/session", self.customer_token
        started = time.perf_counter()
        try:
            status, answer = await self.client.request(method, path, token, body)
        except (aiohttp.ClientError, TimeoutError) as error:
            self.unexpected.append(f"{method} {path}: {error!r}")
            return
        self.seconds[kind].append(time.perf_counter() - started)
        if status >= 500:
            self.status_5xx += 1
        if status != 200:
            self.unexpected.append(f"{method} {path}: {status} {str(answer)[:120]}")

    async def _worker(self, index: int, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = self.workers / self.rate
        next_at = loop.time() + index * interval / self.workers
        n = index
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
            if stop.is_set():
                return
            await self._one(LOAD_SEQUENCE[n % len(LOAD_SEQUENCE)], n // len(LOAD_SEQUENCE))
            n += self.workers
            next_at = max(next_at + interval, loop.time())

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(i, stop) for i in range(self.workers)))

    def figures(self) -> dict[str, Any]:
        every = [s for values in self.seconds.values() for s in values]

        def summary(values: list[float]) -> dict[str, float]:
            return {"count": len(values),
                    **{f"p{p}_ms": round(percentile(values, p) * 1000, 1) for p in (50, 95, 99)}}

        return {**summary(every), "status_5xx": self.status_5xx,
                "unexpected": len(self.unexpected), "unexpected_first": self.unexpected[:5],
                "by_kind": {kind: summary(values) for kind, values in sorted(self.seconds.items())}}


# -- phase 1: sessions and API load --------------------------------------------------------------


@dataclass
class LoadResult:
    nodes: int
    sessions: int
    concurrency: int
    completed: int = 0
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    per_minute: float = 0.0
    session_s: list[float] = field(default_factory=list)
    recorded_min: float = 0.0
    api: dict[str, Any] = field(default_factory=dict)
    cpu_calls: dict[str, float] = field(default_factory=dict)
    cpu_total: dict[str, float] = field(default_factory=dict)
    drained: bool = False
    after_call_s: float = 0.0
    intact: int = 0
    qa_critical: int = 0
    audit: dict[str, Any] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # The API load alone before the calls (api_baseline); cpu_net: cpu_total less what the
    # load alone costs over wall_s, i.e. what the calls and their after-call work cost.
    baseline: dict[str, Any] = field(default_factory=dict)
    cpu_net: dict[str, float] = field(default_factory=dict)


async def drain_after_call(client: Client, redis: Redis, sids: list[str],
                           seconds: float) -> tuple[bool, dict[str, Any]]:
    """Until every session has its automated QA report (after its transcript) and the job
    stream is empty (the playback copies done) for 5 s; bounded."""
    reports: dict[str, Any] = {}
    stream = queue_name("dev")
    deadline = time.monotonic() + seconds
    calm_since: float | None = None
    while time.monotonic() < deadline:
        for sid in sids:
            if sid not in reports:
                status, body = await client.request("GET", f"/qa/sessions/{sid}/report",
                                                    await client.token("qa01"))
                if status == 200:
                    reports[sid] = body
        if len(reports) == len(sids) and await redis.xlen(stream) == 0:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= 5:
                return True, reports
        else:
            calm_since = None
        await asyncio.sleep(2.0)
    return False, reports


async def idle_session(client: Client, nodes: int) -> tuple[str, str]:
    """An idle session whose customer has opened the link (the load's GET /customer/session):
    its id and the customer's token."""
    idle = await new_session(client, "agent01", f"{nodes}n-idle")
    opened = await client.request("POST", "/invitations/open",
                                  body={"token": invitation_token(idle.link)})
    if opened[0] != 200:
        raise BenchError(f"opening the idle session's invitation: {opened}")
    return idle.sid, str(opened[1]["customer_token"])


async def api_baseline(cluster: LocalCluster, database: str, client: Client,
                       customer_token: str, sids: list[str], rate: float,
                       seconds: float) -> dict[str, Any]:
    """The background API load alone, no call, for `seconds`: its CPU-seconds per second by
    process kind (subtracted from the call figures: the load is not a cost of the calls) and
    its latencies without calls."""
    load = ApiLoad(client, rate, customer_token, sids)
    meter = CpuMeter(cluster, database)
    stop = asyncio.Event()
    meter.start()
    started = time.monotonic()
    running = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(seconds)
    finally:
        stop.set()
        await running
        elapsed = time.monotonic() - started
        cpu = meter.read()
        await meter.stop()
    return {"seconds": round(elapsed, 1),
            "cpu_per_s": {kind: round(value / elapsed, 4) for kind, value in cpu.items()},
            "api": load.figures()}


async def load_phase(cluster: LocalCluster, database: str, client: Client, args: Any,
                     logs: Path) -> LoadResult:
    result = LoadResult(cluster.nodes, args.sessions, args.concurrency,
                        load_average=os.getloadavg())
    idle_sid, customer_token = await idle_session(client, cluster.nodes)
    sids = [idle_sid]
    if args.baseline > 0:
        result.baseline = await api_baseline(cluster, database, client, customer_token, sids,
                                             args.api_rate, args.baseline)
        print_baseline(result.baseline)
    load = ApiLoad(client, args.api_rate, customer_token, sids)
    meter = CpuMeter(cluster, database)
    redis = Redis.from_url(cluster.env()["REDIS_URL"])
    reports: dict[str, Any] = {}
    stop = asyncio.Event()
    gate = asyncio.Semaphore(args.concurrency)
    played: list[str] = []

    async def one(n: int) -> None:
        async with gate:
            session = await new_session(client, ("agent01", "agent02")[n % 2],
                                        f"{cluster.nodes}n-{n}")
            sids.append(session.sid)
            log = logs / f"{cluster.nodes}n-session-{n}.log"
            code, seconds = await rehearse_process(cluster.url, session, log,
                                                   timeout_s=args.session_timeout)
        if code == 0:
            played.append(session.sid)
            result.session_s.append(round(seconds, 1))
        else:
            result.failures.append(f"session {n} ({session.sid}) exit {code}:\n{tail(log)}")

    meter.start()
    started = time.monotonic()
    background = asyncio.create_task(load.run(stop))
    try:
        await asyncio.gather(*(one(n) for n in range(args.sessions)))
        result.wall_s = round(time.monotonic() - started, 1)
        stop.set()
        await background
        result.cpu_calls = meter.read()
        result.api = load.figures()
        result.completed = len(played)
        result.per_minute = round(result.completed / result.wall_s * 60, 3)
        # After the calls: sealed and intact, then the after-call jobs on the worker.
        intact = await asyncio.gather(*(sealed_and_intact(client, sid) for sid in played))
        result.intact = sum(intact)
        after = time.monotonic()
        result.drained, reports = await drain_after_call(client, redis, played,
                                                         args.drain_timeout)
        result.after_call_s = round(time.monotonic() - after, 1)
        result.cpu_total = meter.read()
        per_s = result.baseline.get("cpu_per_s", {})
        result.cpu_net = {kind: round(max(0.0, value - per_s.get(kind, 0.0) * result.wall_s), 2)
                          for kind, value in result.cpu_total.items()}
    finally:
        stop.set()
        if not background.done():
            background.cancel()
        await meter.stop()
        await redis.aclose()
    result.qa_critical = sum(1 for report in reports.values()
                             for f in report.get("findings", []) if f["severity"] == "critical")
    for sid in played:
        items = (await client.call("qa01", "GET", f"/sessions/{sid}/recordings"))["items"]
        result.recorded_min += sum(int(r["duration_ms"] or 0) for r in items
                                   if r["kind"] == "customer_av") / 60_000
    result.recorded_min = round(result.recorded_min, 2)
    result.audit = await audit_verified(client)
    return result


# -- phase 2: the parties enter through different nodes ------------------------------------------


def stream_coverage(recordings: list[dict[str, Any]], start: float,
                    end: float) -> dict[str, dict[str, Any]]:
    """Per stream: segments, numbers missing between the first and the last, the longest hole
    within the script span [start, end] (as workflow/coverage.py measures them)."""
    out = {}
    for kind in STREAMS:
        rows = [r for r in recordings if r["kind"] == kind]
        numbers = sorted({int(r["segment"]) for r in rows})
        missing = (numbers[-1] - numbers[0] + 1 - len(numbers)) if numbers else None
        spans = sorted((at(r["started_at"]), at(r["ended_at"] or r["started_at"]))
                       for r in rows)
        holes, cursor = [], start
        for a, b in spans:
            if b <= cursor:
                continue
            if a > cursor:
                holes.append(min(a, end) - cursor)
            cursor = max(cursor, b)
            if cursor >= end:
                break
        if cursor < end:
            holes.append(end - cursor)
        longest = max(holes, default=0.0)
        out[kind] = {"segments": len(rows), "numbers_missing": missing,
                     "longest_hole_s": round(longest, 2),
                     "lost": missing is None or missing > 0 or longest > GAP_TOLERANCE_S}
    return out


def spool_nodes(folder: Path, sid: str) -> list[str]:
    """The nodes whose recording spool has a folder for the session (the hub of a node that
    opened a room for it writes there: <spool>/<node>/<session>/<kind>/)."""
    return sorted({p.parent.name for p in folder.rglob(sid)
                   if p.is_dir() and p.parent.parent.name == "spool"})


async def split_entry(cluster: LocalCluster, client: Client, args: Any,
                      logs: Path) -> dict[str, Any]:
    session = await new_session(client, "agent01", f"{cluster.nodes}n-split")
    redis = Redis.from_url(cluster.env()["REDIS_URL"], decode_responses=True)
    owners: set[str] = set()
    customer_url, agent_url = cluster.node_url(0), cluster.node_url(1)

    async def watch_owner() -> None:
        while True:
            value = await redis.get(OWNER_KEY + session.sid)
            if value is not None:
                owners.add(str(value))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_owner())
    try:
        customer = asyncio.create_task(rehearse_process(
            customer_url, session, logs / "split-customer.log", agent=False,
            timeout_s=args.session_timeout))
        agent = asyncio.create_task(rehearse_process(
            agent_url, session, logs / "split-agent.log", customer=False,
            timeout_s=args.session_timeout))
        try:
            (customer_code, _), (agent_code, _) = await asyncio.gather(customer, agent)
        finally:
            for task in (customer, agent):
                task.cancel()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await redis.aclose()
    out: dict[str, Any] = {
        "session": session.sid, "customer_entered": "node-1 " + customer_url,
        "agent_entered": "node-2 " + agent_url, "customer_exit": customer_code,
        "agent_exit": agent_code, "owners_seen": sorted(owners),
        "spool_nodes": spool_nodes(cluster.folder, session.sid),
        "completed": customer_code == 0 and agent_code == 0}
    if not out["completed"]:
        out["log"] = tail(logs / "split-customer.log") + "\n" + tail(logs / "split-agent.log")
        return out
    out["intact"] = await sealed_and_intact(client, session.sid)
    events = (await client.call("qa01", "GET", f"/sessions/{session.sid}/events"))["events"]
    start = next(at(e["at"]) for e in events if e["type"] == "script_started")
    end = next(at(e["at"]) for e in events if e["type"] == "completed")
    recordings = (await client.call("qa01", "GET",
                                    f"/sessions/{session.sid}/recordings"))["items"]
    out["streams"] = stream_coverage(recordings, start, end)
    out["lost_streams"] = sum(1 for s in out["streams"].values() if s["lost"])
    out["interrupted"] = any(e["type"] == "interrupted" for e in events)
    # One owner for the whole call and no other node's hub recorded it.
    out["split_rooms"] = (max(0, len(owners) - 1)
                          + len(set(out["spool_nodes"]) - owners))
    out["ok"] = (out["intact"] and len(owners) == 1 and out["split_rooms"] == 0
                 and out["lost_streams"] == 0 and not out["interrupted"])
    return out


# -- phase 3: the node holding a call is killed --------------------------------------------------


async def node_kill(cluster: LocalCluster, client: Client, args: Any,
                    logs: Path) -> dict[str, Any]:
    session = await new_session(client, "agent02", f"{cluster.nodes}n-kill")
    log = logs / "kill-session.log"
    play = asyncio.create_task(rehearse_process(cluster.url, session, log,
                                                timeout_s=args.session_timeout))
    redis = Redis.from_url(cluster.env()["REDIS_URL"], decode_responses=True)
    out: dict[str, Any] = {"session": session.sid}
    try:
        async def third_step() -> bool:
            if play.done():
                raise BenchError(f"the rehearsal ended early ({play.result()}):\n{tail(log)}")
            s = await session_state(client, session.sid)
            return bool(s["state"] == "disclosing" and s["steps_done"] >= 3)

        await wait_for("the script's third step", third_step, args.session_timeout, 0.5)
        owner = str(await redis.get(OWNER_KEY + session.sid) or "")
        if not owner.startswith("node-"):
            raise BenchError(f"no node owns the call of {session.sid} ({owner!r})")
        out["killed"] = owner
        killed_at, killed_wall = time.monotonic(), time.time()
        await asyncio.to_thread(cluster.kill, owner)

        async def interrupted() -> bool:
            status, body = await client.request(
                "GET", f"/sessions/{session.sid}/events", await client.token("qa01"))
            return status == 200 and any(e["type"] == "call_node_lost"
                                         for e in body["events"])

        await wait_for("call_node_lost", interrupted, 120, every=0.25)
        out["interrupted_after_s"] = round(time.monotonic() - killed_at, 1)
        code, _ = await play
    finally:
        if not play.done():
            play.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await play
        await redis.aclose()
    out["completed"] = code == 0
    if code != 0:
        out["log"] = tail(log)
        return out
    out["intact"] = await sealed_and_intact(client, session.sid)
    events = (await client.call("qa01", "GET", f"/sessions/{session.sid}/events"))["events"]
    resumed = next(e for e in events if e["type"] == "call_resumed")
    out["resume_gap_s"] = round(resumed["data"]["gap_ms"] / 1000, 1)
    rejoined = next((at(e["at"]) for e in events if e["type"] == "party_connected"
                     and e["data"].get("role") == "customer"
                     and at(e["at"]) > at(resumed["at"])), None)
    recordings = (await client.call("qa01", "GET",
                                    f"/sessions/{session.sid}/recordings"))["items"]
    customer = [r for r in recordings if r["kind"] == "customer_av"]
    ends = [at(r["ended_at"]) for r in customer if r["ended_at"]]
    before = [e for e in ends if e <= killed_wall + 1]
    after = [at(r["started_at"]) for r in customer if at(r["started_at"]) > killed_wall]
    out["recording_lost_before_kill_s"] = round(killed_wall - max(before), 2) if before else None
    out["customer_rejoined_after_s"] = round(rejoined - killed_wall, 1) if rejoined else None
    out["recording_gap_s"] = (round(min(after) - max(before), 1) if before and after
                              else None)
    out["ok"] = bool(out["intact"] and out["interrupted_after_s"] <= KEEPALIVE_S + 5
                     and out["recording_lost_before_kill_s"] is not None
                     and out["recording_lost_before_kill_s"] <= 2.5 and after)
    return out


# -- one cluster, start to end -------------------------------------------------------------------


def drop_database(url: str) -> None:
    import asyncpg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres")).replace("postgres://",
                                                                 "postgresql://", 1)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()

    asyncio.run(drop())


async def phases(cluster: LocalCluster, database: str, args: Any, checks: bool,
                 logs: Path) -> dict[str, Any]:
    client = Client(cluster.url)
    out: dict[str, Any] = {}
    try:
        if args.sessions == 0:  # the API load alone
            idle_sid, customer_token = await idle_session(client, cluster.nodes)
            out["baseline"] = await api_baseline(cluster, database, client, customer_token,
                                                 [idle_sid], args.api_rate, args.baseline)
            print_baseline(out["baseline"])
            return out
        await publish_short_script(client)
        out["load"] = asdict(await load_phase(cluster, database, client, args, logs))
        print_load(out["load"])
        if checks:
            out["split_entry"] = await split_entry(cluster, client, args, logs)
            print_split(out["split_entry"])
            out["node_kill"] = await node_kill(cluster, client, args, logs)
            print_kill(out["node_kill"])
            out["audit_at_end"] = await audit_verified(client)
            print(f"  audit chain at the end: {out['audit_at_end']}", flush=True)
    finally:
        await client.close()
    return out


def passed(out: dict[str, Any]) -> bool:
    """Every session completed, no 5xx, every session intact, the audit chain whole, the
    checks that ran passed."""
    if "load" not in out:  # the baseline alone
        return not out["baseline"]["api"]["status_5xx"]
    load = out["load"]
    return (not load["failures"] and not load["api"]["status_5xx"]
            and bool(load["audit"].get("ok")) and load["intact"] == load["completed"]
            and all(out[check].get("ok") for check in ("split_entry", "node_kill")
                    if check in out))


def run_cluster(nodes: int, args: Any, checks: bool) -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    if not server.startswith("postgres"):
        raise BenchError("the cluster runs on PostgreSQL: DATABASE_URL must name its server")
    name = f"shuanglu_bench_{uuid.uuid4().hex[:8]}"
    database = database_for(server, name)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{nodes}n-"))
    logs = folder / "rehearsals"
    cluster = LocalCluster(folder, database, nodes=nodes)
    failed = True
    print(f"\n== {nodes} node(s): cluster in {folder}, database {name}", flush=True)
    try:
        begun = time.monotonic()
        cluster.start()
        print(f"  up in {time.monotonic() - begun:.0f} s at {cluster.url}", flush=True)
        out = asyncio.run(phases(cluster, name, args, checks, logs))
        out["folder"] = str(folder)
        failed = not passed(out)
        return out
    finally:
        cluster.stop()
        with contextlib.suppress(Exception):
            drop_database(database)
        if failed or args.keep:
            print(f"  logs kept in {folder}", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)


# -- printing ------------------------------------------------------------------------------------


def print_api(api: dict[str, Any]) -> None:
    print(f"  API ({api['count']} requests): p50 {api['p50_ms']:.0f} ms, p95 "
          f"{api['p95_ms']:.0f} ms, p99 {api['p99_ms']:.0f} ms; 5xx {api['status_5xx']}; "
          f"other non-200 {api['unexpected']}")
    for kind, k in api["by_kind"].items():
        print(f"    {kind:<9} n={k['count']:<5} p50 {k['p50_ms']:>6.0f}  p95 {k['p95_ms']:>6.0f}"
              f"  p99 {k['p99_ms']:>6.0f} ms")
    for line in api["unexpected_first"]:
        print(f"    ! {line}")


def print_baseline(b: dict[str, Any]) -> None:
    print(f"  baseline: the API load alone for {b['seconds']:.0f} s, no call")
    print_api(b["api"])
    per_s = b["cpu_per_s"]
    print("    CPU-seconds per second: " + ", ".join(
        f"{kind} {per_s.get(kind, 0.0):.3f}" for kind in (*PLATFORM, "bench (load, polling)")),
        flush=True)


def print_load(r: dict[str, Any]) -> None:
    api = r["api"]
    print(f"  sessions: {r['completed']}/{r['sessions']} completed at concurrency "
          f"{r['concurrency']} in {r['wall_s']:.0f} s → {r['per_minute']:.2f} per minute "
          f"(each {', '.join(f'{s:.0f}' for s in r['session_s'])} s; "
          f"{r['recorded_min']:.1f} recorded call-minutes; load average at start "
          f"{r['load_average'][0]:.1f})", flush=True)
    for failure in r["failures"]:
        print("  FAILED " + failure.replace("\n", "\n    "))
    print_api(api)
    sessions = max(r["completed"], 1)
    minutes = r["recorded_min"] or math.nan  # nothing recorded: no per-minute figure
    net = r.get("cpu_net") or {}
    print("  CPU-seconds      during calls   incl. after-call work   per session   "
          "per recorded call-minute   the same net of the API load")
    for kind in (*PLATFORM, "rehearsal clients", "bench (load, polling)"):
        calls, total = r["cpu_calls"].get(kind, 0.0), r["cpu_total"].get(kind, 0.0)
        print(f"    {kind:<22} {calls:>8.1f} {total:>16.1f} {total / sessions:>16.1f} "
              f"{total / minutes:>14.1f}"
              + (f" {net.get(kind, 0.0) / minutes:>22.1f}" if net else ""))
    platform = sum(r["cpu_total"].get(k, 0.0) for k in PLATFORM)
    platform_net = sum(net.get(k, 0.0) for k in PLATFORM)
    print(f"    {'platform total':<22} {sum(r['cpu_calls'].get(k, 0.0) for k in PLATFORM):>8.1f}"
          f" {platform:>16.1f} {platform / sessions:>16.1f} {platform / minutes:>14.1f}"
          + (f" {platform_net / minutes:>22.1f}" if net else ""))
    print(f"  after-call work {'done' if r['drained'] else 'NOT done'} "
          f"{r['after_call_s']:.0f} s after the last call; sealed and intact "
          f"{r['intact']}/{r['completed']}; critical QA findings {r['qa_critical']}; "
          f"audit chain {'ok' if r['audit'].get('ok') else 'BROKEN'} "
          f"({r['audit'].get('checked')} entries)", flush=True)


def print_split(s: dict[str, Any]) -> None:
    print(f"  split entry ({s['session']}): customer via {s['customer_entered']}, agent via "
          f"{s['agent_entered']}; owners seen {s['owners_seen']}, spool on "
          f"{s['spool_nodes']}; completed {s['completed']}")
    if not s["completed"]:
        print("    " + s.get("log", "").replace("\n", "\n    "), flush=True)
        return
    for kind, c in s["streams"].items():
        print(f"    {kind:<12} {c['segments']} segments, numbers missing "
              f"{c['numbers_missing']}, longest hole {c['longest_hole_s']} s"
              f"{'  LOST' if c['lost'] else ''}")
    print(f"    split rooms {s['split_rooms']}, lost streams {s['lost_streams']}, interrupted "
          f"{s['interrupted']}, sealed and intact {s['intact']} → "
          f"{'OK' if s['ok'] else 'FAILED'}", flush=True)


def print_kill(k: dict[str, Any]) -> None:
    print(f"  node kill ({k['session']}): killed {k.get('killed')}; call_node_lost after "
          f"{k.get('interrupted_after_s')} s (bound {KEEPALIVE_S + 5:.0f} s); completed "
          f"{k['completed']}")
    if not k["completed"]:
        print("    " + k.get("log", "").replace("\n", "\n    "), flush=True)
        return
    print(f"    recording lost before the kill {k['recording_lost_before_kill_s']} s; customer "
          f"rejoined {k['customer_rejoined_after_s']} s after the kill; customer recording "
          f"gap {k['recording_gap_s']} s (interruption {k['resume_gap_s']} s); sealed and "
          f"intact {k['intact']} → {'OK' if k['ok'] else 'FAILED'}", flush=True)


def print_ratios(results: dict[int, dict[str, Any]]) -> None:
    counts = sorted(n for n, r in results.items() if "load" in r)
    if len(counts) < 2:
        return
    one, many = results[counts[0]]["load"], results[counts[-1]]["load"]

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}" if a else "n/a"

    def per_session(r: dict[str, Any], kinds: tuple[str, ...]) -> float:
        return sum(r["cpu_total"].get(k, 0.0) for k in kinds) / max(r["completed"], 1)

    print(f"\n== ratios {counts[-1]} nodes / {counts[0]} node(s)")
    print(f"  sessions per minute {ratio(one['per_minute'], many['per_minute'])}; API p99 "
          f"{ratio(one['api']['p99_ms'], many['api']['p99_ms'])}, p50 "
          f"{ratio(one['api']['p50_ms'], many['api']['p50_ms'])}; platform CPU per session "
          f"{ratio(per_session(one, PLATFORM), per_session(many, PLATFORM))}; nodes' CPU per "
          f"session {ratio(per_session(one, ('nodes',)), per_session(many, ('nodes',)))}")
    print("  (2 cores shared by every process: a second node cannot be faster for CPU-bound "
          "work here; the ratio shows what a second node costs, not what it gains.)",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,2", help="node counts, one cluster each")
    parser.add_argument("--sessions", type=int, default=4, help="whole sessions per cluster")
    parser.add_argument("--concurrency", type=int, default=2, help="sessions at a time")
    parser.add_argument("--api-rate", type=float, default=4.0,
                        help="background API requests per second")
    parser.add_argument("--baseline", type=float, default=60.0,
                        help="seconds of the API load alone before the calls, to subtract its "
                             "CPU from theirs (0: none); with --sessions 0 the only phase")
    parser.add_argument("--session-timeout", type=float, default=900.0,
                        help="seconds one rehearsal may take")
    parser.add_argument("--drain-timeout", type=float, default=900.0,
                        help="seconds to wait for the after-call work")
    parser.add_argument("--no-checks", action="store_true",
                        help="skip the split-entry and node-kill checks")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the clusters' folders")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.nodes.split(",")})
    if not counts or counts[0] < 1 or args.sessions < 0 or args.concurrency < 1:
        parser.error("--nodes and --concurrency must be positive, --sessions not negative")
    if args.sessions == 0 and args.baseline <= 0:
        parser.error("--sessions 0 measures the API load alone: give --baseline seconds")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up like Ctrl-C
    print(f"bench.cluster: {args.sessions} sessions per cluster, {args.concurrency} at a time, "
          f"API load {args.api_rate:g}/s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results: dict[int, dict[str, Any]] = {}
    status = 0
    try:
        for nodes in counts:
            checks = (nodes == counts[-1] and nodes >= 2 and not args.no_checks
                      and args.sessions > 0)
            results[nodes] = run_cluster(nodes, args, checks)
    except KeyboardInterrupt:
        print("interrupted: the clusters were stopped and their databases dropped",
              file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as error:  # BenchError included
        print(f"failed: {error}", file=sys.stderr)
        status = 1
    print_ratios(results)
    if not all(passed(r) for r in results.values()):
        status = 1
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()},
                                        ensure_ascii=False, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
