"""The operator's command line (`python -m app ...`) run as an operator runs it: a child process
with its configuration in the environment, on SQLite and (with DATABASE_URL) PostgreSQL.

migrate up, rollback-all and up again (R-53), create-user, worker --once sealing a completed
session (R-31), and seed-demo refusing the prod profile."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from infra.database import open_database
from models.people import User
from models.sessions import RecordingSession
from tests.conftest import DB_KINDS, _pg_admin, _pg_url
from tests.harness import Harness

pytestmark = pytest.mark.timeout(300)


def run_app(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGS` in a clean environment (no .env of the checkout: cwd elsewhere)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SHUANGLU_") and k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "app", *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=240, check=False)


def cli_env(database_url: str, data_dir: Path, **more: str) -> dict[str, str]:
    return {"SHUANGLU_PROFILE": "test", "SHUANGLU_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url, "SHUANGLU_LOG_LEVEL": "WARNING", **more}


@pytest_asyncio.fixture(params=DB_KINDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path
                         ) -> AsyncIterator[str]:
    """A database without any table (no migration applied)."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'empty.sqlite3'}"
        return
    name = f"shuanglu_cli_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _tables(url: str) -> set[str]:
    sql = ("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
           if url.startswith("sqlite")
           else "SELECT tablename AS name FROM pg_tables WHERE schemaname='public'")
    async with open_database(url) as ctx:
        return {row["name"] for row in await ctx.db().execute_query_dict(sql)}


# A table of each migration's group: the core, the channels, QA/archive, four-eyes dismissals.
SOME_TABLES = {"recording_session", "audit_entry", "app_user", "sales_order", "wechat_user",
               "channel_invitation", "outbound_message", "channel_feed", "qa_check_report",
               "qa_finding", "qa_task", "retention_record", "archived_object",
               "insurer_webhook", "qa_dismissal"}


async def test_migrate_up_rollback_all_and_up_again_R53(empty_database: str,
                                                        tmp_path: Path) -> None:
    """Every migration is reversible: all applied, all rolled back (each one's downgrade runs,
    and no table of any is left behind), all applied again over the rolled-back database (a
    downgrade that left a column or an index would make that fail). This one round trip stands
    for the per-migration ones it replaced (R-53)."""
    env = cli_env(empty_database, tmp_path / "data")
    up = run_app("migrate", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "database is up to date" in up.stdout
    applied = await _tables(empty_database)
    assert applied >= SOME_TABLES, SOME_TABLES - applied

    down = run_app("migrate", "--rollback-all", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "database migrated to models.__first__" in down.stdout
    left = await _tables(empty_database)
    assert left <= {"tortoise_migrations"}, f"tables survived the rollback: {left}"

    again = run_app("migrate", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert await _tables(empty_database) == applied


async def test_create_user_makes_a_user_who_can_log_in(harness: Harness, database_url: str,
                                                       tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path / "data")
    made = run_app("create-user", "qa.cli", "--role", "qa_inspector", "--institution",
                   "DEMO-BANK", "--display-name", "命令行质检", "--password", "a-long-cli-pass-9",
                   env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "created qa_inspector qa.cli" in made.stdout
    user = await User.get(username="qa.cli")
    assert user.display_name == "命令行质检"
    r = await harness.request("POST", "/auth/login",
                              json={"username": "qa.cli", "password": "a-long-cli-pass-9"})
    assert r.status == 200 and r.body["user"]["role"] == "qa_inspector", r.body

    again = run_app("create-user", "qa.cli", "--role", "qa_inspector", "--institution", "DEMO-BANK",
                    "--password", "a-long-cli-pass-9", env=env, cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr
    weak = run_app("create-user", "qa.weak", "--role", "qa_inspector", "--institution", "DEMO-BANK",
                   "--password", "short", env=env, cwd=tmp_path)
    assert weak.returncode == 2
    assert not await User.exists(username="qa.weak")


@pytest.mark.timeout(400)
async def test_worker_once_seals_a_completed_session_R31(harness: Harness, database_url: str,
                                                         redis_url: str) -> None:
    walk = await harness.walk_to("completed")
    env = cli_env(database_url, harness.config.data_dir, REDIS_URL=redis_url)
    done = run_app("worker", "--once", env=env, cwd=harness.config.data_dir.parent)
    assert done.returncode == 0, done.stderr
    assert "sealed 1" in done.stdout, done.stdout
    session = await RecordingSession.get(id=walk.session_id)
    assert session.sealed_at is not None and session.manifest
    r = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/verify")
    assert r.status == 200 and r.body["status"] == "intact", r.body


def _strong() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


async def test_seed_demo_refuses_the_prod_profile(empty_database: str, tmp_path: Path) -> None:
    migrated = run_app("migrate", env=cli_env(empty_database, tmp_path / "t"), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    prod = {"SHUANGLU_PROFILE": "prod", "SHUANGLU_DATA_DIR": str(tmp_path / "prod"),
            "DATABASE_URL": empty_database, "SHUANGLU_SECRET_KEY": _strong(),
            "SHUANGLU_FIELD_ENCRYPTION_KEY": _strong(), "SHUANGLU_SEAL_SIGNING_KEY": _strong(),
            "SHUANGLU_WECHAT_ENABLED": "false", "SHUANGLU_BANK_ENABLED": "false"}
    refused = run_app("seed-demo", env=prod, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refuses to run with the prod profile" in refused.stderr
    async with open_database(empty_database):
        assert await User.all().count() == 0, "seed-demo wrote demo users in production"


async def test_a_worker_without_redis_url_uses_the_server_s_redis_or_refuses(
        harness: Harness, database_url: str, tmp_path: Path) -> None:
    """Issue 18: a worker that started a private Redis never saw a job a server queued. Without
    REDIS_URL it takes the embedded Redis a server runs on the same data folder, or refuses."""
    from redis.asyncio import Redis

    from infra.redis_server import EmbeddedRedis

    data_dir = tmp_path / "data"
    env = cli_env(database_url, data_dir)
    alone = run_app("worker", env=env, cwd=tmp_path)
    assert alone.returncode == 2 and "REDIS_URL is not set" in alone.stderr, alone.stderr
    server_redis = EmbeddedRedis(data_dir / "redis")  # as `serve` starts it (this process)
    url = await server_redis.start()
    try:
        assert server_redis.running_url() == url
        client = Redis.from_url(url)
        before = int((await client.info("stats"))["total_connections_received"])
        done = run_app("worker", "--once", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        after = int((await client.info("stats"))["total_connections_received"])
        await client.aclose()
        assert after > before  # the worker used the server's Redis, not one of its own
        assert not (data_dir / "redis-worker").exists()
    finally:
        server_redis.stop()
    assert EmbeddedRedis(data_dir / "redis").running_url() is None
