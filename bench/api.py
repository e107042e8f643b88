"""The throughput figures of issue 14, measured on this machine against the issue's numbers.

Three parts, each against a real server process on loopback (the load generator shares the
machine's two cores with it, and with whatever else runs there: the load average is printed):

- `wechat`: the WeChat message endpoint (bench/channels.py's signed AES messages, each answered
  with a passive reply): requests/s and latency. Issue: 200-410 req/s, p99 210-600 ms; target
  ≥ 1,000 req/s and p99 ≤ 100 ms.
- `ack`: acknowledgement latency with 30 customers answering at once, each walked to
  `disclosing` and then through the script: the bench plays the call hub's part (each step's
  speech reported played in full, through the workflow functions, as tests/harness.py `hear`
  does) and times only `POST /customer/acknowledgements`. PostgreSQL by default (SQLite with
  `--database sqlite`). Issue: p99 0.58 s on SQLite; target ≤ 100 ms.
- `health`: /health latency (probed every 20 ms) while 10 logins/s and 2 uploads/s of a
  12-megapixel PNG run. Issue: /health at 2.66 s behind 40 logins; target p99 ≤ 50 ms.

`wechat` and `ack` also print the server process's CPU time per message / per acknowledgement
(with the customers' other requests), steadier than the wall-clock figures on a shared machine.

    python -m bench.api [--part wechat|ack|health|all] [--seconds 20] [--database postgres]
        [--concurrency 32] [--requests 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Figure:
    name: str
    measured: float
    unit: str
    issue: str
    target: float
    lower_is_better: bool

    def line(self) -> str:
        met = (self.measured <= self.target) if self.lower_is_better \
            else (self.measured >= self.target)
        sign = "≤" if self.lower_is_better else "≥"
        return (f"{self.name:<48} {self.measured:>9.1f} {self.unit:<6} issue {self.issue:<18} "
                f"target {sign} {self.target:g} {self.unit}: {'met' if met else 'NOT met'}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"p50 {statistics.median(ms):.1f} ms, p95 {_percentile(ms, 0.95):.1f}, "
            f"p99 {_percentile(ms, 0.99):.1f}, max {max(ms):.1f} ({len(ms)})")


def _load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {os.cpu_count()} cores"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the server process has used so far (Linux /proc)."""
    from media.call.node_cpu import process_cpu_seconds

    seconds = process_cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError(f"the server process {pid} is gone")
    return seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- WeChat message endpoint ----------------------------------------------------------------

def wechat(requests: int, concurrency: int, seconds: float) -> list[Figure]:
    from wechatpy.crypto import WeChatCrypto

    from bench import channels

    port = _free_port()
    env = {**os.environ, "SHUANGLU_WECHAT_APP_ID": channels.APP_ID,
           "SHUANGLU_WECHAT_TOKEN": channels.TOKEN,
           "SHUANGLU_WECHAT_ENCODING_AES_KEY": channels.AES_KEY,
           "SHUANGLU_WECHAT_MESSAGE_MODE": "compatible",
           "SHUANGLU_WECHAT_IP_REQUESTS_PER_MINUTE": "10000000",
           "SHUANGLU_WECHAT_OPENID_MESSAGES_PER_MINUTE": "10000000",
           "SHUANGLU_CHANNELS_RUN_WORKER": "false", "SHUANGLU_RUN_JOBS_IN_PROCESS": "false"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    crypto = WeChatCrypto(channels.TOKEN, channels.AES_KEY, channels.APP_ID)
    payloads = [channels._message(crypto, n, True) for n in range(requests)]
    with tempfile.TemporaryDirectory(prefix="bench-api-wechat-") as data_dir:
        server = subprocess.Popen([sys.executable, "-m", "bench.channels", "--serve", str(port),
                                   data_dir], env=env, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_for(base + "/", server))
            url = base + "/api/v1/wechat/callback"
            asyncio.run(channels._load(url, [channels._message(crypto, 10**6 + n, True)
                                             for n in range(200)], 8, 30, crypto))
            cpu_before = _cpu_seconds(server.pid)
            latencies, errors, elapsed = asyncio.run(
                channels._load(url, payloads, concurrency, seconds, crypto))
            cpu = _cpu_seconds(server.pid) - cpu_before
        finally:
            _stop(server)
    rate = len(latencies) / elapsed
    print(f"wechat: {len(latencies)} AES messages, {concurrency} connections, {elapsed:.1f} s: "
          f"{rate:.0f} req/s, {_ms(latencies)}, errors {errors}; {_load_average()}")
    # Steadier than the rate on a shared machine: what one request costs the server process
    # (its Redis is a child process, not counted), i.e. what one core could serve.
    print(f"  server process CPU {cpu * 1000 / max(len(latencies), 1):.2f} ms per message "
          f"(≈ {len(latencies) / max(cpu, 0.01):.0f} messages per CPU-second)")
    return [Figure("WeChat message endpoint throughput", rate, "req/s", "200-410 req/s",
                   1000, False),
            Figure("WeChat message endpoint p99", _percentile(latencies, 0.99) * 1000, "ms",
                   "210-600 ms", 100, True)]


# -- a server process and a harness on it --------------------------------------------------

@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    import asyncpg

    name = f"shuanglu_bench_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN.replace("postgres://", "postgresql://", 1)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def _server(data_dir: Path, database_url: str,
                  extra_env: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """A migrated, seeded database, a redis-server, the app in its own process, and a
    tests.harness.Harness on it whose call-hub reports go through the workflow here (with the
    server's pid as `server_pid`, for its CPU time)."""
    from redis.asyncio import Redis

    from app.factory import workflow_deps
    from app.seed import seed_demo
    from infra.config import Settings, load_config
    from infra.database import migrate, open_database
    from infra.redis_server import EmbeddedRedis
    from tests.harness import Harness

    await migrate(database_url)
    async with open_database(database_url):
        await seed_demo()
    embedded = EmbeddedRedis(data_dir / "redis", appendfsync="no")
    redis_url = await embedded.start()
    # The secrets are generated here, before the server reads the same data folder.
    config = load_config(Settings(profile="test", data_dir=data_dir / "data",
                                  database_url=database_url, redis_url=redis_url))
    port = _free_port()
    env = {**os.environ, "SHUANGLU_PROFILE": "test", "SHUANGLU_DATA_DIR": str(data_dir / "data"),
           "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "SHUANGLU_RUN_WORKER_IN_PROCESS": "false", "SHUANGLU_RUN_JOBS_IN_PROCESS": "false",
           "SHUANGLU_TTS_ENGINES": "espeak", "SHUANGLU_LOG_LEVEL": "WARNING",
           "SHUANGLU_TRUST_FORWARDED_FOR": "true", **(extra_env or {})}
    server = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    redis = Redis.from_url(redis_url)
    client = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}",
                                   timeout=aiohttp.ClientTimeout(total=60))
    try:
        await _wait_for(f"http://127.0.0.1:{port}/api/v1/health", server)
        async with open_database(database_url):
            deps = workflow_deps(config, redis, jobs=None)  # type: ignore[arg-type]
            harness = Harness(config, client, media_deps=deps)  # type: ignore[arg-type]
            harness.server_pid = server.pid  # type: ignore[attr-defined]
            yield harness
    finally:
        await client.close()
        await redis.aclose()
        _stop(server)
        embedded.stop()


async def _gather_limited(coros: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*[one(c) for c in coros])


# -- acknowledgements ------------------------------------------------------------------------

async def _customer(harness: Any, walk: Any, latencies: list[float], written: list[str]) -> int:
    """Answers every step up to the first written one; only the acknowledgements are timed."""
    from tests.written import read_documents

    acks = 0
    while (step := await harness.current_step(walk)) is not None:
        if step["answer"] in ("handwritten_copy", "signature"):
            written.append(step["id"])
            break
        await harness.hear(walk)
        if step["answer"] == "show_document":
            # The server runs on real time: each page is looked at for its minimum time.
            await read_documents(harness, walk.session_id, walk.customer_token,
                                 advance=asyncio.sleep)
        if step["answer"] == "none":
            if step["speaker"] == "tts":
                continue
            r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/script/advance",
                                  json={"step_id": step["id"]})
            assert r.status == 200, r.body
            continue
        started = time.perf_counter()
        r = await harness.ack(walk, step["id"])
        latencies.append(time.perf_counter() - started)
        assert r.status == 201, r.body
        acks += 1
    return acks


def acknowledgements(database: str, sessions: int) -> list[Figure]:
    async def run(database_url: str, data_dir: Path) -> tuple[list[float], float, int, float]:
        async with _server(data_dir, database_url) as harness:
            for user in ("agent01", "engine01", "qa01"):  # once: logins are throttled
                await harness.login(user)
            started = time.perf_counter()
            walks = await _gather_limited(
                [harness.walk_to("disclosing") for _ in range(sessions)], 10)
            print(f"ack: {sessions} sessions walked to disclosing in "
                  f"{time.perf_counter() - started:.1f} s")
            latencies: list[float] = []
            written: list[str] = []
            started = time.perf_counter()
            cpu_before = _cpu_seconds(harness.server_pid)
            counts = await asyncio.gather(*[_customer(harness, w, latencies, written)
                                            for w in walks])
            cpu = _cpu_seconds(harness.server_pid) - cpu_before
            return latencies, time.perf_counter() - started, sum(counts), cpu

    with tempfile.TemporaryDirectory(prefix="bench-api-ack-") as tmp:
        if database == "postgres":
            with _postgres_database() as url:
                latencies, elapsed, acks, cpu = asyncio.run(run(url, Path(tmp)))
        else:
            latencies, elapsed, acks, cpu = asyncio.run(run(f"sqlite://{tmp}/bench.sqlite3",
                                                       Path(tmp)))
    print(f"ack ({database}): {acks} acknowledgements by {sessions} customers at once in "
          f"{elapsed:.1f} s ({acks / elapsed:.0f}/s): {_ms(latencies)}; {_load_average()}")
    # Per acknowledgement, everything the customers asked meanwhile (the step polls, document
    # views, the acknowledgement itself) and what the server did on the events they caused.
    print(f"  server process CPU {cpu * 1000 / max(acks, 1):.1f} ms per acknowledgement with "
          f"the customer's other requests ({cpu:.1f} s in all)")
    return [Figure(f"acknowledgement p99, {sessions} sessions, {database}",
                   _percentile(latencies, 0.99) * 1000, "ms", "580 ms (SQLite)", 100, True)]


# -- /health under logins and uploads --------------------------------------------------------

def _large_png(width: int = 4000, height: int = 3000) -> bytes:
    from PIL import Image

    row = Image.linear_gradient("L").resize((width, 1)).convert("RGB")
    out = io.BytesIO()
    row.resize((width, height)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


async def _paced(rate: float, until: float, make: Any) -> list[Any]:
    """Starts `make()` `rate` times a second until `until`, without waiting for each."""
    tasks = []
    interval, next_at = 1.0 / rate, time.perf_counter()
    while next_at < until:
        tasks.append(asyncio.create_task(make()))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return list(await asyncio.gather(*tasks))


def health(seconds: float, logins_per_second: float, uploads_per_second: float) -> list[Figure]:
    from tests.harness import PASSWORDS

    async def run(data_dir: Path) -> dict[str, Any]:
        async with _server(data_dir, f"sqlite://{data_dir}/bench.sqlite3") as harness:
            for user in ("agent01", "engine01", "qa01"):  # once: logins are throttled
                await harness.login(user)
            walks = await _gather_limited([harness.walk_to("consented") for _ in range(4)], 4)
            png = await asyncio.to_thread(_large_png)

            async def probe(until: float) -> list[float]:
                samples = []
                while time.perf_counter() < until:
                    started = time.perf_counter()
                    r = await harness.request("GET", "/health")
                    assert r.status == 200
                    samples.append(time.perf_counter() - started)
                    await asyncio.sleep(0.02)
                return samples

            idle = await probe(time.perf_counter() + 3)
            login_times: list[float] = []
            upload_times: list[float] = []

            async def login() -> int:
                started = time.perf_counter()
                try:
                    r = await harness.request("POST", "/auth/login", json={
                        "username": "agent01", "password": PASSWORDS["agent01"]})
                except (TimeoutError, aiohttp.ClientError):
                    return 0  # no answer within the client's 60 s: counted as status 0
                finally:
                    login_times.append(time.perf_counter() - started)
                return r.status

            counter = iter(range(10**6))

            async def upload() -> int:
                walk = walks[next(counter) % len(walks)]
                started = time.perf_counter()
                try:
                    r = await harness.request("POST", "/customer/identity/uploads/id_front",
                                              token=walk.customer_token, data=png,
                                              headers={"Content-Type": "image/png"})
                except (TimeoutError, aiohttp.ClientError):
                    return 0  # no answer within the client's 60 s: counted as status 0
                finally:
                    upload_times.append(time.perf_counter() - started)
                return r.status

            until = time.perf_counter() + seconds
            loaded, logins, uploads = await asyncio.gather(
                probe(until), _paced(logins_per_second, until, login),
                _paced(uploads_per_second, until, upload))
            return {"idle": idle, "loaded": loaded, "logins": logins, "uploads": uploads,
                    "login_times": login_times, "upload_times": upload_times}

    with tempfile.TemporaryDirectory(prefix="bench-api-health-") as tmp:
        result = asyncio.run(run(Path(tmp)))

    def counts(statuses: list[int]) -> str:
        return ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses)))

    print(f"health idle: {_ms(result['idle'])}")
    print(f"health under {logins_per_second:g} logins/s + {uploads_per_second:g} uploads/s of a "
          f"12-megapixel PNG for {seconds:g} s: {_ms(result['loaded'])}; {_load_average()}")
    print(f"  logins ({counts(result['logins'])}): {_ms(result['login_times'])}")
    print(f"  uploads ({counts(result['uploads'])}): {_ms(result['upload_times'])}")
    return [Figure("/health p99 under 10 logins/s + 2 uploads/s",
                   _percentile(result["loaded"], 0.99) * 1000, "ms", "2,660 ms (40 logins)",
                   50, True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["wechat", "ack", "health", "all"], default="all")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=6000, help="WeChat messages to send")
    parser.add_argument("--concurrency", type=int, default=32, help="WeChat connections")
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--logins", type=float, default=10.0, help="logins per second")
    parser.add_argument("--uploads", type=float, default=2.0, help="uploads per second")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    print(_load_average())
    if args.part in ("wechat", "all"):
        figures += wechat(max(1, min(args.requests, 100_000)), args.concurrency,
                          max(args.seconds, 10.0))
    if args.part in ("ack", "all"):
        figures += acknowledgements(args.database, args.sessions)
    if args.part in ("health", "all"):
        figures += health(args.seconds, args.logins, args.uploads)
    print()
    for figure in figures:
        print(figure.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
