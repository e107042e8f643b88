"""The identity engines load when a process starts receiving jobs, in the background (issue 17:
the first customer's identity check no longer pays ~9 s of model loading before the first
speech; R-12). The receiver runs jobs while the loading is still going on; the loading happens
once per process; `SHUANGLU_WARM_IDENTITY_ENGINES=false` turns it off."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from api.keys import IDENTITY, JOBS
from app.factory import identity_engines_factory, register_jobs
from infra.config import Settings, load_config
from infra.jobs import Jobs
from tests.harness import Harness


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """The server's default (tests/conftest.py turns it off for the other tests)."""
    return {"warm_identity_engines": True}


@pytest.mark.timeout(60)
async def test_the_receiver_runs_jobs_while_what_it_loads_is_still_loading(
    redis_url: str,
) -> None:
    jobs = Jobs(redis_url, f"test-warm-{uuid.uuid4().hex[:8]}")
    release = threading.Event()
    loads: list[str] = []
    ran = asyncio.Event()

    def slow_load() -> None:  # stands in for models read from disk, in a thread
        loads.append(threading.current_thread().name)
        release.wait(30)

    async def ping() -> None:
        ran.set()

    jobs.register("ping", ping)
    jobs.on_receive("the slow engines", slow_load)
    assert jobs.warming == []  # nothing loads before the process receives jobs
    await jobs.start(run_receiver=True)
    try:
        await jobs.enqueue("ping")
        await asyncio.wait_for(ran.wait(), 30)  # the job ran ...
        assert len(jobs.warming) == 1 and not jobs.warming[0].done()  # ... while loading
        assert loads and loads[0] != threading.main_thread().name
        release.set()
        await asyncio.wait_for(asyncio.gather(*jobs.warming), 30)
        jobs._start_warming()  # a receiver started again in this process loads nothing again
        assert len(jobs.warming) == 1 and len(loads) == 1
    finally:
        release.set()
        await jobs.stop()


@pytest.mark.timeout(120)
async def test_the_identity_engines_are_loaded_after_the_receiver_starts_without_a_job(
    harness: Harness,
) -> None:
    """The offline default engines (paddleocr, dlib, landmarks; no anti-spoofing weights in
    test) load as the receiver starts; no job was queued or run for it."""
    jobs: Jobs = harness.app[JOBS]
    engines = harness.app[IDENTITY]()
    assert Settings().warm_identity_engines is True  # the default
    assert harness.config.settings.warm_identity_engines is True
    assert not engines.loaded  # type: ignore[attr-defined]
    async with harness.jobs_running():
        await asyncio.sleep(0)  # the receiver task's first step starts the loading
        assert len(jobs.warming) == 1
        await asyncio.wait_for(asyncio.gather(*jobs.warming), 100)
        assert engines.loaded  # type: ignore[attr-defined]
    assert await harness.redis.xlen(jobs.broker.done_stream) == 0  # no job did it


def test_warming_can_be_turned_off(tmp_path: Path) -> None:
    base = {"shuanglu_profile": "test", "shuanglu_data_dir": str(tmp_path / "data")}
    deps = SimpleNamespace(storage=None)
    for value, named in (("false", []), ("true", ["the identity engines"])):
        config = load_config(env={**base, "shuanglu_warm_identity_engines": value})
        assert config.settings.warm_identity_engines is (value == "true")
        jobs = Jobs("redis://127.0.0.1:1/0", "test-warm")
        register_jobs(jobs, deps, config, None,  # type: ignore[arg-type]
                      identity_engines_factory(config), None)  # type: ignore[arg-type]
        assert [name for name, _ in jobs._on_receive] == named
