"""Shared set-up of the benchmarks that need a recorded session: a temporary SQLite database
(migrated and seeded), an embedded Redis and a running app, as the tests have them."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from infra.config import Settings, load_config
from infra.database import migrate, open_database
from infra.redis_server import EmbeddedRedis
from tests.harness import Harness, start_harness


@asynccontextmanager
async def recording_app(prefix: str) -> AsyncIterator[tuple[Harness, Path]]:
    """The app and a scratch folder; everything is removed afterwards."""
    # Simulated steps carry audio facts but no rendered speech: the call bridge says so.
    logging.getLogger("workflow.media_events").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp)
        redis = EmbeddedRedis(folder / "redis")
        url = await redis.start()
        try:
            database = f"sqlite://{folder / 'bench.sqlite3'}"
            await migrate(database)
            from app.seed import seed_demo

            async with open_database(database):
                await seed_demo()
            config = load_config(Settings(profile="test", data_dir=folder / "data",
                                          database_url=database, redis_url=url,
                                          run_worker_in_process=False,
                                          run_jobs_in_process=False, tts_engines="espeak"))
            h = await start_harness(config)
            try:
                yield h, folder
            finally:
                await h.close()
        finally:
            redis.stop()
