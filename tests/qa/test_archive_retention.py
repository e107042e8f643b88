"""Retention (R-42): 10 years after the contract ends, 2 more after a dispute ends, nothing while
a dispute is open or the contract runs; the deletion job deletes exactly what is due, writes an
audit entry and keeps a tombstone with the hashes."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from aftercall.runtime import check_and_queue
from api.routes_qa import AFTER_CALL
from archive import retention
from archive.policies import StatusReport, report_status
from archive.settings import ArchiveSettings
from models.archive import PolicyState, RetentionRecord, Tombstone
from models.audit import AuditEntry
from models.qa import QaDismissal, QaTask
from models.sales import Order
from models.sessions import Recording, RecordingSession, SessionEvent, Signature
from security.audit import Actor, verify_chain
from tests.harness import Harness
from tests.qa.simulate import MediaKit, Scenario, record_session
from tests.qa.verdict_kit import queue_with_findings

INSURER = Actor("service", "core", "insurer:core")


async def _order_of(session_id: str | UUID) -> Order:
    session = await RecordingSession.get(id=session_id)
    return await Order.get(id=session.order_id)


async def _ended(h: Harness, session_id: str | UUID, on: date) -> None:
    await report_status(h.deps, await _order_of(session_id), StatusReport(
        PolicyState.TERMINATED, "P-1", date(2005, 3, 1), None, on, "退保"), INSURER,
        h.app[AFTER_CALL].archive)


async def test_retention_deletes_exactly_what_is_due_and_nothing_on_hold_R42(
        harness: Harness, media_kit: MediaKit) -> None:
    h = harness
    rt = h.app[AFTER_CALL]
    due = await record_session(h, media_kit, Scenario())
    await check_and_queue(h.deps, rt, UUID(due.session_id))
    held = (await h.walk_to("qa_pending")).session_id
    disputed = (await h.walk_to("qa_pending")).session_id
    in_force = (await h.walk_to("qa_pending")).session_id
    unknown = (await h.walk_to("qa_pending")).session_id
    # A proposed dismissal (four eyes) is among the QA rows a purge deletes.
    _, (face,) = await queue_with_findings(h, disputed, ["second_face"])
    r = await h.as_("qa01", "POST", f"/qa/sessions/{disputed}/findings/{face.id}/dismissal",
                    json={"reason_code": "bystander_not_involved", "note": "保安经过"})
    assert r.status == 201, r.body

    for sid in (due.session_id, held, disputed):
        await _ended(h, sid, date(2010, 1, 1))
    await report_status(h.deps, await _order_of(in_force), StatusReport(
        PolicyState.IN_FORCE, "P-2", date(2009, 1, 1)), INSURER, rt.archive)
    r = await h.as_("admin01", "POST", f"/archive/orders/{(await _order_of(held)).id}/disputes",
                    json={"reference": "TS-2019-1", "opened_on": "2019-05-01",
                          "note": "客户投诉销售误导"})
    assert r.status == 201, r.body
    order = (await _order_of(disputed)).id
    r = await h.as_("admin01", "POST", f"/archive/orders/{order}/disputes",
                    json={"reference": "ARB-7", "opened_on": "2018-01-01"})
    assert r.status == 201, r.body
    r = await h.as_("admin01", "POST", f"/archive/orders/{order}/disputes/ARB-7/close",
                    json={"closed_on": "2019-06-01"})
    assert r.status == 200, r.body
    assert await retention.compute_missing(h.deps, rt.archive) == 1  # `unknown` had none

    async def until(sid: str) -> tuple[date | None, bool]:
        record = await RetentionRecord.get(session_id=sid)
        return record.retain_until, record.on_hold

    assert await until(due.session_id) == (date(2020, 1, 1), False)
    assert await until(held) == (None, True)
    assert await until(disputed) == (date(2021, 6, 1), False)  # 2 years after the dispute
    assert await until(in_force) == (None, False)
    assert await until(unknown) == (None, False)
    r = await h.as_("auditor01", "GET", f"/archive/sessions/{disputed}/retention")
    assert r.status == 200 and r.body["retain_until"] == "2021-06-01", r.body
    assert r.body["basis"]["contract_end"] == "2010-01-01" and r.body["basis"]["years"] == 10

    files = await Recording.filter(session_id=due.session_id).values_list("path", "sha256")
    signature = await Signature.get(session_id=due.session_id)
    root = h.files
    assert all((root / path).exists() for path, _ in files)
    # every stream of the recorded call (several segments each) and the signature are purged
    assert {path.split("/")[1] for path, _ in files} == {"customer_av", "agent_av", "tts"}

    # The day before the retention end: nothing.
    result = await retention.purge_due(h.deps, rt.store, rt.archive, today=date(2020, 1, 1))
    assert result.purged == []
    result = await retention.purge_due(h.deps, rt.store, rt.archive, today=date(2021, 1, 1))
    assert [str(s) for s in result.purged] == [due.session_id]
    assert result.files_pending == 0
    assert not any((root / path).exists() for path, _ in files)
    assert not (root / signature.image_path).exists()
    assert not await Recording.filter(session_id=due.session_id).exists()
    assert not await SessionEvent.filter(session_id=due.session_id).exists()
    assert not await QaTask.filter(session_id=due.session_id).exists()
    stub = await RecordingSession.get(id=due.session_id)
    assert stub.steps == [] and stub.manifest is None

    tomb = await Tombstone.get(session_id=due.session_id)
    kept = {f["path"]: f["sha256"] for f in tomb.files}
    assert {p: s for p, s in files}.items() <= kept.items()
    assert kept[signature.image_path] == signature.image_sha256
    assert all(f["deleted"] for f in tomb.files)
    assert tomb.manifest is not None and tomb.manifest["chain"]
    entry = await AuditEntry.get(action="retention.purged", object_id=due.session_id)
    assert tomb.audit_hash == entry.hash
    assert entry.details["retain_until"] == "2020-01-01"
    assert (await verify_chain()).ok

    # A day after the disputed order's end: it goes too; the held one never.
    result = await retention.purge_due(h.deps, rt.store, rt.archive, today=date(2021, 6, 2))
    assert [str(s) for s in result.purged] == [disputed]
    assert not await QaDismissal.exists(session_id=disputed)
    assert (await Tombstone.get(session_id=disputed)).rows["qa_dismissal"] == 1
    result = await retention.purge_due(h.deps, rt.store, rt.archive, today=date(2099, 1, 1))
    assert result.purged == []
    for sid in (held, in_force, unknown):
        assert await SessionEvent.filter(session_id=sid).exists()
        assert (await RetentionRecord.get(session_id=sid)).purged_at is None

    # The hold ends: two more years from the dispute's end.
    r = await h.as_("admin01", "POST",
                    f"/archive/orders/{(await _order_of(held)).id}/disputes/TS-2019-1/close",
                    json={"closed_on": "2030-02-01"})
    assert r.status == 200, r.body
    assert await until(held) == (date(2032, 2, 1), False)
    r = await h.as_("auditor01", "GET", "/archive/tombstones")
    assert {t["session_id"] for t in r.body["items"]} == {due.session_id, disputed}


async def test_retention_periods_and_leap_days_R42() -> None:
    assert retention.add_years(date(2012, 2, 29), 10) == date(2022, 2, 28)
    settings = ArchiveSettings()
    assert (settings.retention_years_long_term, settings.retention_years_short_term,
            settings.dispute_extra_years) == (10, 5, 2)


async def test_disputes_need_an_administrator_R42(harness: Harness) -> None:
    sid = (await harness.walk_to("qa_pending")).session_id
    order = (await _order_of(sid)).id
    for user in ("qa01", "agent01", "auditor01"):
        r = await harness.as_(user, "POST", f"/archive/orders/{order}/disputes",
                              json={"reference": "X-1", "opened_on": "2024-01-01"})
        assert r.status == 403, user
