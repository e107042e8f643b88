"""R-24: an acknowledgement is stored before the API answers, so it survives the server being
killed right after the response. Runs the real `python -m app serve` as a child process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from redis.asyncio import Redis

from app.factory import workflow_deps
from infra.config import Settings, load_config
from infra.database import open_database
from tests.harness import Harness

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "app", "serve", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # Start-up imports the media stack: on a loaded machine it took longer than the 20 s
        # this used to allow (CI); 60 s, as test_redis_persistence's server start.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    async with client.get(f"http://127.0.0.1:{self.port}/api/v1/health") as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientConnectionError, TimeoutError):
                    pass
                assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
        raise AssertionError("server did not come up")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest_asyncio.fixture
async def server_env(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[dict]:
    env = dict(os.environ, SHUANGLU_PROFILE="test", SHUANGLU_DATA_DIR=str(tmp_path / "data"),
               DATABASE_URL=database_url, REDIS_URL=redis_url,
               SHUANGLU_RUN_WORKER_IN_PROCESS="false",
               # No identity job here: the engines need not load in each server started.
               SHUANGLU_WARM_IDENTITY_ENGINES="false")
    yield env


async def test_an_acknowledgement_survives_a_kill_right_after_the_response_R24(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    server = ServerProcess(server_env, port)
    await server.start()
    config = load_config(Settings(profile="test", data_dir=tmp_path / "data"))
    client = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}")
    redis = Redis.from_url(server_env["REDIS_URL"])
    database = open_database(server_env["DATABASE_URL"])
    await database.__aenter__()
    # The call hub's reports (media connected, speech played) go to the server's database.
    deps = workflow_deps(config, redis, jobs=None)  # type: ignore[arg-type]
    harness = Harness(config, client, media_deps=deps)  # type: ignore[arg-type]
    try:
        walk = await harness.walk_to("disclosing")
        await harness.hear(walk)
        response = await harness.ack(walk, "opening", event_id="durable-0001")
        assert response.status == 201
        server.kill()  # no graceful shutdown: whatever was not committed is gone
        await server.start()
        harness.tokens.clear()  # tokens live in Redis and survive; log in again anyway
        events = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/events")
        acks = events.body["acknowledgements"]
        assert [(a["step_id"], a["answer"]) for a in acks] == [("opening", "affirmative")]
        step = await harness.current_step(walk)
        assert step is not None and step["id"] == "agent-identity"
    finally:
        await client.close()
        await database.__aexit__(None, None, None)
        await redis.aclose()
        if server.process and server.process.poll() is None:
            server.kill()
