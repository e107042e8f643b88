"""The QA/archive migration is reversible (R-53): rolled back and applied again on SQLite and,
when DATABASE_URL is set, PostgreSQL."""

from __future__ import annotations

import importlib
from pathlib import Path

from infra.database import migrate, open_database

TABLES = {"qa_check_report", "qa_finding", "qa_task", "qa_rectification", "policy_status",
          "policy_status_update", "dispute", "retention_record", "tombstone", "archived_object",
          "insurer_status_snapshot", "insurer_webhook"}


def _ours() -> tuple[str, str]:
    """This migration's name and the one it follows (robust to renumbering)."""
    folder = Path(importlib.import_module("models.migrations").__file__ or "").parent
    path = next(folder.glob("*_qa_archive.py"))
    module = importlib.import_module(f"models.migrations.{path.stem}")
    (_, previous), = module.Migration.dependencies
    return path.stem, previous


async def _tables(url: str) -> set[str]:
    async with open_database(url) as ctx:
        if url.startswith("sqlite"):
            rows = await ctx.db().execute_query_dict(
                "SELECT name FROM sqlite_master WHERE type='table'")
            return {r["name"] for r in rows}
        rows = await ctx.db().execute_query_dict(
            "SELECT tablename AS name FROM pg_tables WHERE schemaname='public'")
        return {r["name"] for r in rows}


async def test_qa_archive_migration_rolls_back_and_reapplies_R53(unseeded_database: str) -> None:
    database_url = unseeded_database  # no audit entries: 0012 refuses to roll back over them
    name, previous = _ours()
    assert await _tables(database_url) >= TABLES
    await migrate(database_url, target=f"models.{previous}")
    after = await _tables(database_url)
    assert TABLES.isdisjoint(after)
    assert {"recording_session", "audit_entry"} <= after
    await migrate(database_url)
    assert await _tables(database_url) >= TABLES
    assert name.endswith("qa_archive")
