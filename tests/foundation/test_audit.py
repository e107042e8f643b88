"""R-51: the audit log is hash-chained, verifiable, searchable and exportable; tampering is
detected and the first broken entry reported."""

from __future__ import annotations

import csv
import io
import itertools
import json

import asyncpg
import pytest
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

from app.cli import main as cli_main
from models.audit import AuditEntry
from security import audit
from tests.harness import Harness


async def test_actions_are_chained_and_the_chain_verifies(harness: Harness) -> None:
    await harness.walk_to("opened")
    result = await audit.verify_chain()
    assert result.ok and result.checked >= 5
    entries = await AuditEntry.all().order_by("id")
    for previous, entry in itertools.pairwise(entries):
        assert entry.prev_hash == previous.hash


# Tortoise wraps the SQLite abort; asyncpg's RaiseError from the trigger comes through as is.
REFUSED = (OperationalError, asyncpg.exceptions.RaiseError)


async def _bypass_append_only_guard() -> None:
    """What an attacker with database-owner rights could do: drop the triggers."""
    conn = AuditEntry._meta.db
    if conn.capabilities.dialect == "sqlite":
        await conn.execute_script("DROP TRIGGER audit_entry_no_update")
        await conn.execute_script("DROP TRIGGER audit_entry_no_delete")
    else:
        await conn.execute_script("DROP TRIGGER audit_entry_no_change ON audit_entry")


async def test_the_database_refuses_to_change_audit_entries_R51(harness: Harness) -> None:
    await harness.walk_to("invited")
    entry = await AuditEntry.all().order_by("id").first()
    assert entry is not None
    with pytest.raises(REFUSED, match="append-only"):
        await AuditEntry.filter(id=entry.id).update(action="nothing.happened")
    with pytest.raises(REFUSED, match="append-only"):
        await AuditEntry.filter(id=entry.id).delete()
    assert (await audit.verify_chain()).ok


async def test_a_changed_entry_is_found_by_the_verifier(harness: Harness) -> None:
    await harness.walk_to("opened")
    await _bypass_append_only_guard()
    victim = await AuditEntry.filter(action="session.invited").first()
    assert victim is not None
    await AuditEntry.filter(id=victim.id).update(actor_label="someone-else")
    result = await audit.verify_chain()
    assert not result.ok and result.first_broken_id == victim.id
    assert "does not match its hash" in result.reason


async def test_a_deleted_entry_is_found_by_the_verifier(harness: Harness) -> None:
    await harness.walk_to("opened")
    await _bypass_append_only_guard()
    entries = await AuditEntry.all().order_by("id")
    await AuditEntry.filter(id=entries[2].id).delete()
    result = await audit.verify_chain()
    assert not result.ok and result.first_broken_id == entries[3].id


async def test_a_truncated_tail_is_found_by_the_verifier(harness: Harness) -> None:
    await harness.walk_to("opened")
    await _bypass_append_only_guard()
    last = await AuditEntry.all().order_by("-id").first()
    assert last is not None
    await AuditEntry.filter(id=last.id).delete()
    result = await audit.verify_chain()
    assert not result.ok and "missing at the end" in result.reason


async def test_the_verify_command_exits_1_on_tampering(
    harness: Harness, monkeypatch: object, capsys: object
) -> None:
    await harness.walk_to("invited")
    await _bypass_append_only_guard()
    entry = await AuditEntry.filter(action="session.created").first()
    assert entry is not None
    await AuditEntry.filter(id=entry.id).update(details={"order_id": 999})
    mp = monkeypatch
    mp.setenv("SHUANGLU_PROFILE", "test")  # type: ignore[attr-defined]
    mp.setenv("SHUANGLU_DATA_DIR", str(harness.config.data_dir))  # type: ignore[attr-defined]
    mp.setenv("DATABASE_URL", harness.config.database_url)  # type: ignore[attr-defined]
    import asyncio

    code = await asyncio.to_thread(cli_main, ["verify-audit"])
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 1 and f"BROKEN at entry {entry.id}" in out


async def test_an_entry_rolls_back_with_its_action(harness: Harness) -> None:
    before = await AuditEntry.all().count()
    try:
        async with in_transaction() as conn:
            await audit.record(conn, audit.Actor.system("t"), "test.action")
            raise RuntimeError("the action failed")
    except RuntimeError:
        pass
    assert await AuditEntry.all().count() == before
    assert (await audit.verify_chain()).ok


async def test_auditors_search_and_export_R51(harness: Harness) -> None:
    await harness.walk_to("opened")
    r = await harness.as_("auditor01", "GET", "/audit?action=session.&actor=agent01")
    assert r.status == 200 and r.body["total"] >= 2
    assert all(e["action"].startswith("session.") for e in r.body["items"])
    r = await harness.as_("auditor01", "GET", "/audit?from=2000-01-01T00:00:00%2B00:00&limit=5")
    assert r.status == 200 and len(r.body["items"]) == 5
    csv_export = await harness.as_("auditor01", "GET", "/audit/export?format=csv")
    rows = list(csv.reader(io.StringIO(csv_export.body.decode("utf-8-sig"))))
    assert rows[0][:3] == ["id", "at", "actor_kind"] and len(rows) > 5
    jsonl = await harness.as_("auditor01", "GET", "/audit/export?format=jsonl&action=auth.")
    lines = [json.loads(line) for line in jsonl.body.decode().splitlines()]
    assert lines and all(line["action"].startswith("auth.") for line in lines)
    r = await harness.as_("auditor01", "GET", "/audit/verify")
    assert r.body["ok"] is True
    # searching and exporting are themselves audited
    assert await AuditEntry.filter(action="audit.export").count() == 2


async def test_bad_audit_queries_are_422(harness: Harness) -> None:
    r = await harness.as_("auditor01", "GET", "/audit?from=yesterday")
    assert r.status == 422
    r = await harness.as_("auditor01", "GET", "/audit?from=2026-01-01T00:00:00")
    assert r.status == 422  # no time zone
    r = await harness.as_("auditor01", "GET", "/audit/export?format=xml")
    assert r.status == 422
    r = await harness.as_("auditor01", "GET", "/audit?limit=abc")
    assert r.status == 422
