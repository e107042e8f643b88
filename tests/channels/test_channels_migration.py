"""The channel tables come with their own reversible migration (R-53): rolling back to the
migration before it drops them, migrating forward recreates them, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from pathlib import Path

import models.migrations
from infra.database import migrate, open_database

CHANNEL_TABLES = {"wechat_user", "channel_invitation", "conversation_message",
                  "outbound_message", "subscription_grant", "channel_feed"}


def _before_channels() -> str:
    """The migration the channels migration depends on (found by name, not hard-coded)."""
    folder = Path(models.migrations.__file__).parent
    (path,) = folder.glob("*_channels.py")
    module = importlib.import_module(f"models.migrations.{path.stem}")
    app_label, name = module.Migration.dependencies[0]
    return f"{app_label}.{name}"


async def _tables(url: str) -> set[str]:
    async with open_database(url) as ctx:
        conn = ctx.db()
        if url.startswith("sqlite"):
            rows = await conn.execute_query_dict(
                "SELECT name FROM sqlite_master WHERE type='table'")
        else:
            rows = await conn.execute_query_dict(
                "SELECT tablename AS name FROM pg_tables WHERE schemaname='public'")
        return {r["name"] for r in rows}


async def test_the_channels_migration_rolls_back_and_forward_R53(
        unseeded_database: str) -> None:
    database_url = unseeded_database  # no audit entries: 0012 refuses to roll back over them
    assert await _tables(database_url) >= CHANNEL_TABLES
    await migrate(database_url, target=_before_channels())
    remaining = await _tables(database_url)
    assert not CHANNEL_TABLES & remaining and "recording_session" in remaining
    await migrate(database_url)
    assert await _tables(database_url) >= CHANNEL_TABLES
