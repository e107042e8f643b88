"""The embedded Redis keeps its state across a restart (AOF in the data folder), never outlives
its app (parent-death signal; an orphan of a crashed run is found and stopped), never runs twice
on one folder, and production Redis can be reached through Sentinel (infra/redis_client.py).

R-50 (tokens survive), R-20 (the bank's signed requests and deep links stay single-use).
The first test runs the real `python -m app serve` and kills it with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from infra.jobs import Jobs
from infra.redis_client import (
    broker_url,
    is_sentinel_url,
    parse_sentinel_url,
    redis_client,
    use_sentinel_pool,
)
from infra.redis_server import STATE_FILE, EmbeddedRedis, find_redis_binary, process_info
from security.partner_signing import signed_headers

ROOT = Path(__file__).resolve().parents[2]
BANK_CLIENT = "persist-bank"
BANK_SECRET = "bank-api-secret-for-persistence-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gone(pid: int) -> bool:
    info = process_info(pid)
    return info is None or info.zombie


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def _until(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.05)


class Server:
    """`python -m app serve` as a child process with no REDIS_URL (the embedded Redis)."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [sys.executable, "-m", "app", "serve", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=log,
            )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log.read_text()[-3000:]
                try:
                    async with client.get(f"http://127.0.0.1:{self.port}/api/v1/health") as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientConnectionError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("server did not come up: " + self.log.read_text()[-3000:])

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def redis_state(self, data_dir: Path) -> dict[str, int]:
        state = json.loads((data_dir / "redis" / STATE_FILE).read_text())
        assert self.process is not None and state["parent"] == self.process.pid
        return {k: int(state[k]) for k in ("pid", "port")}


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SHUANGLU_REDIS_URL")}
    env.update(
        SHUANGLU_PROFILE="test", SHUANGLU_DATA_DIR=str(data_dir), DATABASE_URL=database_url,
        SHUANGLU_RUN_WORKER_IN_PROCESS="false", SHUANGLU_RUN_JOBS_IN_PROCESS="false",
        SHUANGLU_CHANNELS_RUN_WORKER="false",
        SHUANGLU_BANK_CLIENTS=json.dumps({BANK_CLIENT: {
            "institution": "DEMO-BANK", "api_secret": BANK_SECRET,
            "webhook_secret": "bank-webhook-secret-for-persistence-0123",
            "webhook_url": "http://127.0.0.1:9/hook", "deep_link_base": "demobank://open",
        }}),
    )
    process = Server(env, _free_port(), tmp_path / "server.log")
    try:
        yield process, data_dir
    finally:
        if process.process is not None and process.process.poll() is None:
            process.signal(signal.SIGKILL)


@pytest.mark.one_database
@pytest.mark.timeout(180)
async def test_tokens_and_nonces_survive_a_kill_9_and_redis_goes_with_the_app_R50_R20(
    server: tuple[Server, Path],
) -> None:
    app, data_dir = server
    await app.start()
    base = f"http://127.0.0.1:{app.port}/api/v1"
    path = "/api/v1/bank/orders/NO-SUCH-APP/status"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.post(f"{base}/auth/login",
                             json={"username": "qa01", "password": "demo-qa-0001"}) as r:
            assert r.status == 200
            token = (await r.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/auth/me", headers=auth) as r:
            assert r.status == 200
        # A correctly signed bank request spends its nonce (the order does not exist: 404).
        signed = signed_headers(BANK_CLIENT, BANK_SECRET, "GET", path, b"", int(time.time()))
        async with http.get(f"http://127.0.0.1:{app.port}{path}", headers=signed) as r:
            assert r.status == 404, await r.text()

        first = app.redis_state(data_dir)
        assert not _gone(first["pid"])
        app.signal(signal.SIGKILL)  # no cleanup code runs in the app
        await _until(lambda: _gone(first["pid"]), 5, "redis-server stopped after kill -9")
        assert _port_closed(first["port"])

        await app.start()
        second = app.redis_state(data_dir)
        assert second["pid"] != first["pid"]
        async with http.get(f"{base}/auth/me", headers=auth) as r:
            assert r.status == 200, "the staff token did not survive the restart"
            assert (await r.json())["username"] == "qa01"
        async with http.get(f"http://127.0.0.1:{app.port}{path}", headers=signed) as r:
            assert r.status == 401
            assert (await r.json())["code"] == "nonce_replayed"

        app.signal(signal.SIGTERM)  # a clean stop takes its Redis along too
        await _until(lambda: _gone(second["pid"]), 15, "redis-server stopped with the app")
        assert not (data_dir / "redis" / STATE_FILE).exists()


ORPHAN_MAKER = """
import asyncio, sys
from pathlib import Path
import redis.asyncio as aioredis
from infra.redis_server import EmbeddedRedis

async def main():
    embedded = EmbeddedRedis(Path(sys.argv[1]), parent_death_signal=False)
    url = await embedded.start()
    client = aioredis.from_url(url)
    await client.set("auth:customer:abc", "{}", ex=600)
    await client.aclose()
    print(embedded.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.timeout(60)
async def test_an_orphan_of_a_crashed_run_is_stopped_and_its_data_kept(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    maker = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-c", ORPHAN_MAKER, str(folder)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    orphan = 0
    try:
        line = await asyncio.wait_for(asyncio.to_thread(maker.stdout.readline), 30)  # type: ignore[union-attr]
        orphan = int(line)
        maker.kill()
        maker.wait(timeout=10)
        info = process_info(orphan)
        assert info is not None and not info.zombie, "the orphan should outlive its parent here"
        embedded = EmbeddedRedis(folder)
        await asyncio.wait_for(embedded.start(), 30)
        try:
            assert _gone(orphan)
            client = aioredis.from_url(embedded.url)
            assert await client.get("auth:customer:abc") == b"{}"
            await client.aclose()
        finally:
            embedded.stop()
    finally:
        if maker.poll() is None:
            maker.kill()
        if orphan and not _gone(orphan):
            os.kill(orphan, signal.SIGKILL)


@pytest.mark.timeout(60)
async def test_two_servers_never_share_one_aof(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis")
    await asyncio.wait_for(first.start(), 30)
    try:
        second = EmbeddedRedis(tmp_path / "redis")
        with pytest.raises(RuntimeError, match="is in use"):
            await asyncio.wait_for(second.start(), 30)
        client = aioredis.from_url(first.url)
        assert await client.ping()
        await client.aclose()
    finally:
        first.stop()
    again = EmbeddedRedis(tmp_path / "redis")  # free again once the first stopped
    await asyncio.wait_for(again.start(), 30)
    again.stop()


def test_sentinel_urls_are_parsed_and_bad_ones_refused() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380/shuanglu/2"
        "?sentinel_password=x&socket_timeout=2")
    assert target.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert target.service_name == "shuanglu" and target.db == 2 and not target.tls
    assert target.connection == {"password": "s@cret", "socket_timeout": 2.0}
    assert target.sentinel_auth == {"password": "x"}
    assert parse_sentinel_url("rediss+sentinel://h1/m").sentinels == [("h1", 26379)]
    assert is_sentinel_url("redis+sentinel://h/m") and not is_sentinel_url("redis://h:1/0")
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h:x/m", "redis+sentinel://h:1/m/x",
                "redis+sentinel://h:1/m?bogus=1"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


@pytest.mark.timeout(60)
async def test_a_sentinel_url_reaches_the_master_for_the_app_and_the_jobs(
    tmp_path: Path,
) -> None:
    master = EmbeddedRedis(tmp_path / "master", appendfsync="no")
    await asyncio.wait_for(master.start(), 30)
    port = _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor shuanglu 127.0.0.1 {master.port} 1\n")
    sentinel = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [find_redis_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis+sentinel://127.0.0.1:{port}/shuanglu/3"
    client = redis_client(url)
    jobs = Jobs(broker_url(url), "persist-jobs")
    use_sentinel_pool(jobs.broker, url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                await client.set("via-sentinel", "yes")
                break
            except (aioredis.ConnectionError, OSError):
                assert time.monotonic() < deadline, "sentinel did not answer"
                await asyncio.sleep(0.1)
        direct = aioredis.from_url(f"redis://127.0.0.1:{master.port}/3")
        assert await direct.get("via-sentinel") == b"yes"
        await direct.aclose()
        async with aioredis.Redis(connection_pool=jobs.broker.connection_pool) as via_jobs:
            assert await via_jobs.get("via-sentinel") == b"yes"
    finally:
        await client.aclose()
        await jobs.broker.connection_pool.disconnect()
        sentinel.kill()
        sentinel.wait(timeout=10)
        master.stop()
