"""Shared test infrastructure: a real Redis server (the embedded child), real databases
(SQLite always; PostgreSQL too when DATABASE_URL is set), and a running app per test.

Migrations and demo seeding run once per database kind into a template; each test gets a
fresh copy (a file copy for SQLite, CREATE DATABASE ... TEMPLATE for PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from infra.config import Settings, load_config
from infra.database import migrate, open_database
from infra.redis_server import EmbeddedRedis
from tests.harness import Harness, start_harness
from tests.network_guard import no_network, offline_network  # noqa: F401 (fixtures)

# Bounds the wait at exit for threads that never end (and names them); names failures and slow
# tests as they happen (a run cut off by CI's limit still says where the time went).
pytest_plugins = ["tests.exit_guard", "tests.progress_report"]

PG_URL = os.environ.get("DATABASE_URL", "")
DB_KINDS = ["sqlite"] + (["postgres"] if PG_URL.startswith("postgres") else [])


def pytest_configure(config: pytest.Config) -> None:
    # No downloads at test time (child processes inherit it): the photos come from bin/setup's
    # test-data step (testing/face_photos.py); the network guard covers this process.
    os.environ["SHUANGLU_TESTDATA_DOWNLOAD"] = "0"


# The tests that run real-time media (WebRTC calls, browsers, the multi-node cluster) and
# check frame rates or timings: under `bin/test`'s two processes (pytest-xdist) they form one
# scope that one process runs, one after another, never two at once; everything else is
# shared out test by test between both processes.
REALTIME_PATHS = ("tests/h5/", "tests/media_call/", "tests/cluster/", "tests/rehearsal/",
                  "tests/channels/test_channels_console_browser.py",
                  "tests/qa/test_qa_replay_page.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist's own `--dist loadgroup` cannot group under pytest 9 (it renames
    `item._nodeid`, which pytest 9 no longer reads), so the grouping is this scheduler's:
    xdist's scope scheduling with every real-time test in one scope and every other test in a
    scope of its own."""
    from xdist.scheduler import LoadScopeScheduling

    class RealtimeTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "realtime-media" if nodeid.startswith(REALTIME_PATHS) else nodeid

    return RealtimeTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `one_database` (browser and engine tests, where the dialect changes nothing)
    run on SQLite only, to keep the suite's time for what differs between databases."""
    dropped = [item for item in items if item.get_closest_marker("one_database")
               and getattr(item, "callspec", None) is not None
               and item.callspec.params.get("database_url") == "postgres"]  # type: ignore[attr-defined]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server child process for the whole run, as the app starts it itself."""
    # No fsync per write: the tests need no durability across power cuts, only speed.
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendfsync="no")
    url = asyncio.run(embedded.start())
    yield url
    embedded.stop()


def _pg_url(database: str) -> str:
    parts = urlsplit(PG_URL)
    return urlunsplit(parts._replace(path="/" + database))


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _prepare(url: str) -> None:
    await migrate(url)
    from app.seed import seed_demo

    async with open_database(url):
        await seed_demo()


def _build_templates(folder: Path) -> dict[str, str]:
    templates: dict[str, str] = {}
    sqlite_path = folder / "template.sqlite3"
    asyncio.run(_prepare(f"sqlite://{sqlite_path}"))
    templates["sqlite"] = str(sqlite_path)
    if "postgres" in DB_KINDS:
        pg_template = f"shuanglu_tmpl_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{pg_template}"'))
        asyncio.run(_prepare(_pg_url(pg_template)))
        templates["postgres"] = pg_template
    return templates


_TEMPLATES: dict[str, str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """The template databases are built before the first test starts (half a minute on a
    loaded machine), so that time never counts against the first test's own time limit."""
    if session.config.option.collectonly or _TEMPLATES:
        return
    if any("template_databases" in getattr(item, "fixturenames", ()) for item in session.items):
        folder = Path(tempfile.mkdtemp(prefix="shuanglu-template-"))
        _TEMPLATES.update(_build_templates(folder))


@pytest.fixture(scope="session")
def template_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not _TEMPLATES:
        _TEMPLATES.update(_build_templates(tmp_path_factory.mktemp("template")))
    yield _TEMPLATES
    if "postgres" in _TEMPLATES:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{_TEMPLATES["postgres"]}"'))
    shutil.rmtree(Path(_TEMPLATES["sqlite"]).parent, ignore_errors=True)
    _TEMPLATES.clear()


@pytest_asyncio.fixture(params=DB_KINDS)
async def database_url(
    request: pytest.FixtureRequest, template_databases: dict[str, str], tmp_path: Path
) -> AsyncIterator[str]:
    kind = request.param
    if kind == "sqlite":
        target = tmp_path / "test.sqlite3"
        shutil.copyfile(template_databases["sqlite"], target)
        yield f"sqlite://{target}"
        return
    name = f"shuanglu_t_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_databases["postgres"]}"')
    try:
        yield _pg_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Tests override settings by redefining this fixture or through `harness.restart`."""
    return {}


@pytest_asyncio.fixture
async def harness(
    database_url: str, redis_url: str, tmp_path: Path, settings_overrides: dict[str, object]
) -> AsyncIterator[Harness]:
    settings = Settings(
        profile="test", data_dir=tmp_path / "data", database_url=database_url,
        redis_url=redis_url, run_worker_in_process=False, tts_engines="espeak",
        # Jobs are queued but run only where a test turns the receiver on.
        run_jobs_in_process=False,
        # A test that turns the receiver on loads the identity engines when a job needs them,
        # not in the background (CPU the tests of other jobs need; tests/foundation/
        # test_warm_engines.py turns it on).
        **{"warm_identity_engines": False, **settings_overrides},  # type: ignore[arg-type]
    )
    h = await start_harness(load_config(settings))
    try:
        yield h
    finally:
        await h.close()
