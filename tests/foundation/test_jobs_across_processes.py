"""Background jobs are never silently dropped (infra/jobs.py): every process knows every job by
the same name, a job is acknowledged only when its handler returned, an unknown or failing job
is delivered again and finally moved to the dead-letter stream, and a worker that dies or runs
long neither loses nor duplicates a job.

The first test runs the real `python -m app worker` as two separate OS processes against the
test's Redis and database, while the test process (whose app runs no receiver) queues the jobs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from api.keys import JOBS
from api.routes_identity import pending_key
from app.seed import DEMO_PRODUCT_CODE
from infra.jobs import Jobs, task_name
from models.sales import ScriptStatus, ScriptVersion
from models.sessions import SessionEvent
from tests.harness import Harness

ROOT = Path(__file__).resolve().parents[2]
REDELIVER = 1.0  # seconds: short, so retries and re-claims happen within the test
MAX_DELIVERIES = 3
EVERY_JOB = {"prerender_session", "prerender_script", "identity_card_read", "identity_check",
             "qa_checks", "after_call_sweep", "playback_copy", "playback_catch_up"}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"jobs_redeliver_after_seconds": REDELIVER, "jobs_max_deliveries": MAX_DELIVERIES}


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _fields(entry: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in entry.items() if k != b"data"}


class Workers:
    """`python -m app worker` child processes, each logging to its own file."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for n in range(count):
            log = (self.folder / f"worker-{n}.log").open("wb")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "app", "worker"], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            ))

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.folder.glob("worker-*.log")))

    def alive(self) -> None:
        for process in self.processes:
            assert process.poll() is None, self.logs()[-4000:]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest_asyncio.fixture
async def workers(harness: Harness, tmp_path: Path) -> AsyncIterator[Workers]:
    config = harness.config
    env = dict(os.environ, SHUANGLU_PROFILE="test", SHUANGLU_DATA_DIR=str(config.data_dir),
               DATABASE_URL=config.database_url, REDIS_URL=str(config.redis_url),
               SHUANGLU_TTS_ENGINES="espeak", SHUANGLU_WORKER_INTERVAL_SECONDS="3600",
               SHUANGLU_JOBS_REDELIVER_AFTER_SECONDS=str(REDELIVER),
               SHUANGLU_JOBS_MAX_DELIVERIES=str(MAX_DELIVERIES),
               # These workers run no identity job: the engines need not load (~9 s CPU each).
               SHUANGLU_WARM_IDENTITY_ENGINES="false")
    folder = tmp_path / "workers"
    folder.mkdir()
    w = Workers(env, folder)
    try:
        yield w
    finally:
        w.stop()


@pytest.mark.timeout(120)
async def test_jobs_queued_by_the_server_all_run_in_separate_worker_processes_none_dropped(
    harness: Harness, workers: Workers
) -> None:
    h = harness
    jobs: Jobs = h.app[JOBS]
    broker = jobs.broker
    redis = h.redis
    assert h.config.settings.run_jobs_in_process is False  # this process runs no receiver
    # A job only a newer release knows: this process can queue it, the workers cannot run it.
    ran_here: list[str] = []

    async def from_a_newer_release() -> None:
        ran_here.append("newer")

    jobs.register("from_a_newer_release", from_a_newer_release)

    async def settled(task_ids: set[str]) -> bool:
        """Each of these jobs finished or was dead-lettered, and nothing is left queued."""
        workers.alive()
        seen = {_fields(f)["task_id"] for _, f in await redis.xrange(broker.done_stream)}
        seen |= {_fields(f)["task_id"] for _, f in await redis.xrange(broker.dead_stream)}
        return task_ids <= seen and await redis.xlen(broker.queue_name) == 0

    async def wait_for(task_ids: set[str]) -> None:
        try:
            await _until(lambda: settled(task_ids), 60, "the jobs to finish or be dead-lettered")
        except AssertionError:
            done = [_fields(f)["task"] for _, f in await redis.xrange(broker.done_stream)]
            dead = [_fields(f) for _, f in await redis.xrange(broker.dead_stream)]
            left = [json.loads(f[b"data"])["task_name"]
                    for _, f in await redis.xrange(broker.queue_name)]
            raise AssertionError(f"done {done}, dead {dead}, left {left}\n"
                                 f"{workers.logs()[-6000:]}") from None

    # Queued before any worker exists (the group is created when the first worker starts).
    version = await ScriptVersion.get(product__code=DEMO_PRODUCT_CODE,
                                      status=ScriptStatus.PUBLISHED)
    assert version.prerender_status == ""
    first = {
        await jobs.submit("prerender_script", version_id=version.id),
        await jobs.submit("after_call_sweep"),
        await jobs.submit("playback_catch_up"),
    }
    failing = await jobs.submit("prerender_script", version_id=987654)  # no such version
    unknown = await jobs.submit("from_a_newer_release")
    workers.start(2)
    await wait_for(first | {failing, unknown})

    # Queued while the workers run: a new session queues its speech; the rest as the app does.
    walk = await h.create_session()
    sid = walk.session_id
    await redis.set(pending_key(UUID(sid)), "1")  # the identity job clears it when done
    then = {
        await jobs.submit("identity_check", session_id=sid, attempt=1),
        await jobs.submit("identity_card_read", session_id=sid, attempt=1),  # nothing to read
        await jobs.submit("playback_copy", session_id=sid),
    }
    # KNOWN BUG outside this test's scope: qa/checks.py check_acknowledgements raises for a
    # step without any speech play (zip(..., strict=True) of [] and [None]), so qa_checks fails
    # on a session that never had a call. Either way the job must reach its handler in a
    # worker: finished, or failed there and dead-lettered with reason "failed".
    qa_job = await jobs.submit("qa_checks", session_id=sid)
    await _until(lambda: _speech_prepared(sid), 60, "the session's speech")
    await wait_for(then | {qa_job})

    done = [_fields(f) for _, f in await redis.xrange(broker.done_stream)]
    dead = {d["task_id"]: d for d in
            (_fields(f) for _, f in await redis.xrange(broker.dead_stream))}
    assert first | then <= {d["task_id"] for d in done}, dead
    assert {d["task"] for d in done} >= {task_name(j) for j in EVERY_JOB - {"qa_checks"}}
    assert all(d["consumer"] != broker.consumer_name for d in done)  # run by the workers
    # Nothing discarded: nothing is queued or pending any more, and taskiq never said it
    # skipped a task it did not know.
    assert await redis.xlen(broker.queue_name) == 0
    assert (await redis.xpending(broker.queue_name, broker.consumer_group_name))["pending"] == 0
    logs = workers.logs()
    assert "is not found" not in logs, logs[-4000:]
    assert ran_here == []

    if qa_job in dead:  # see KNOWN BUG above: it ran, and failed in the worker
        assert dead.pop(qa_job)["reason"] == "failed"
    else:
        assert qa_job in {d["task_id"] for d in done}
    assert set(dead) == {failing, unknown}
    assert dead[unknown]["reason"] == "unknown_task"
    assert dead[unknown]["task"] == task_name("from_a_newer_release")
    assert dead[failing]["reason"] == "failed" and "DoesNotExist" in dead[failing]["detail"]
    for entry in dead.values():
        assert entry["deliveries"] == str(MAX_DELIVERIES)
        assert entry["consumer"] != broker.consumer_name
    # The failing handler really ran on each delivery before it was given up.
    assert logs.count("failed with {'version_id': 987654}") == MAX_DELIVERIES, logs[-4000:]

    # What the jobs did is visible in the shared database and Redis.
    assert (await ScriptVersion.get(id=version.id)).prerender_status == "done"
    assert not await redis.exists(pending_key(UUID(sid)))


async def _speech_prepared(session_id: str) -> bool:
    return await SessionEvent.exists(session_id=session_id, type="speech_prepared")


# -- one process, several receivers: the delivery rules in detail ------------------------------


@pytest_asyncio.fixture
async def queue(redis_url: str) -> AsyncIterator[str]:
    name = f"jobs-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.from_url(redis_url)
    await client.delete(name, f"{name}:dead", f"{name}:done")
    await client.aclose()


async def _receivers(redis_url: str, queue: str, count: int,
                     handlers: dict[str, Callable[..., Awaitable[Any]]]) -> list[Jobs]:
    started = []
    for _ in range(count):
        jobs = Jobs(redis_url, queue, redeliver_after_seconds=REDELIVER,
                    max_deliveries=MAX_DELIVERIES)
        for name, handler in handlers.items():
            jobs.register(name, handler)
        await jobs.start(run_receiver=True)
        started.append(jobs)
    return started


@pytest.mark.timeout(30)
async def test_a_job_taken_by_a_worker_that_died_is_claimed_and_run_by_another(
    redis_url: str, queue: str
) -> None:
    ran: list[int] = []

    async def probe(n: int) -> None:
        ran.append(n)

    sender = Jobs(redis_url, queue)
    sender.register("probe", probe)
    await sender.start(run_receiver=False)
    client = aioredis.from_url(redis_url)
    receivers: list[Jobs] = []
    try:
        await sender.submit("probe", n=1)
        # A worker takes it and dies before finishing (it never acknowledges).
        taken: Any = await client.xreadgroup(queue, "dead-worker", {queue: ">"}, count=1)
        assert len(taken[0][1]) == 1
        receivers = await _receivers(redis_url, queue, 1, {"probe": probe})
        await _until(lambda: _is(ran, [1]), 15, "the orphaned job to run")
        finished: Any = await client.xrange(f"{queue}:done")
        (_, done), = finished
        assert done[b"deliveries"] == b"2"
        assert await client.xlen(queue) == 0
    finally:
        for jobs in [*receivers, sender]:
            await jobs.stop()
        await client.aclose()


@pytest.mark.timeout(30)
async def test_a_job_running_longer_than_the_redelivery_time_is_not_taken_over(
    redis_url: str, queue: str
) -> None:
    started: list[int] = []

    async def long_job(n: int) -> None:
        started.append(n)
        await asyncio.sleep(REDELIVER * 4)  # renewed claims keep it with its process

    receivers = await _receivers(redis_url, queue, 2, {"long_job": long_job})
    client = aioredis.from_url(redis_url)
    try:
        for n in range(3):
            await receivers[0].submit("long_job", n=n)
        await _until(lambda: _len_is(client, f"{queue}:done", 3), 20, "the long jobs")
        assert sorted(started) == [0, 1, 2]  # each ran once
        assert await client.xlen(queue) == 0
    finally:
        for jobs in receivers:
            await jobs.stop()
        await client.aclose()


@pytest.mark.timeout(30)
async def test_a_receiver_recreates_the_consumer_group_after_redis_lost_it(
    redis_url: str, queue: str
) -> None:
    ran: list[int] = []

    async def probe(n: int) -> None:
        ran.append(n)

    receivers = await _receivers(redis_url, queue, 1, {"probe": probe})
    client = aioredis.from_url(redis_url)
    try:
        await client.delete(queue)  # what a Redis restart or FLUSHDB does to the group
        await receivers[0].submit("probe", n=7)  # recreates the stream, not the group
        await _until(lambda: _is(ran, [7]), 15, "the job queued after the group was lost")
    finally:
        await receivers[0].stop()
        await client.aclose()


async def _is(values: list[int], expected: list[int]) -> bool:
    return values == expected


async def _len_is(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) == n


def _reads(jobs: Jobs) -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "").endswith("JobBroker._fetch")]


@pytest.mark.timeout(30)
async def test_a_stopped_receiver_settles_its_last_read_without_an_unretrieved_error(
    redis_url: str, queue: str
) -> None:
    """The read a stop leaves running (shielded, so redis-py is not cancelled mid-reply) ends
    when the broker closes its connections; its error is expected and retrieved, never logged
    as "Task exception was never retrieved" at the end of every run with jobs."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        receivers = await _receivers(redis_url, queue, 1, {})
        await _until(lambda: _has_reads(receivers[0]), 10, "the receiver's blocking read")
        reads = _reads(receivers[0])
        await receivers[0].stop()
        await asyncio.wait(reads, timeout=10)
        assert all(read.done() for read in reads)
        del reads
        gc.collect()
        assert [c.get("message") for c in reported] == []
    finally:
        loop.set_exception_handler(previous)


async def _has_reads(jobs: Jobs) -> bool:
    return bool(_reads(jobs))
