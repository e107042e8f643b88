"""The QA queue (R-40): sampling rules from configuration, assignment, deadlines at the end of
the cooling-off period with alerts before it, a verdict per finding, and rectification as a new
session for the same order linked to the old one."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from aftercall.runtime import check_and_queue
from api.routes_qa import AFTER_CALL
from models.audit import AuditEntry
from models.people import User
from models.qa import QaCheckReport, QaFinding, QaTask, Rectification, ReportStatus, TaskStatus
from models.sessions import Recording, RecordingSession, SessionEvent
from qa import queue
from qa.sampling import draw
from qa.settings import QaSettings, SamplingConfig
from security.audit import Actor
from tests.harness import HERE, Harness
from tests.qa.simulate import FakeClock
from tests.qa.verdict_kit import queue_with_findings

INVESTMENT_LINKED = "YA-TL-003"


async def _pending(h: Harness, **kwargs: object) -> UUID:
    w = await h.walk_to("qa_pending", **kwargs)  # type: ignore[arg-type]
    return UUID(w.session_id)


async def _clean_report(h: Harness, sid: UUID) -> QaCheckReport:
    """A passed automated report (the media side is covered by test_qa_checks)."""
    return await QaCheckReport.create(session_id=sid, status=ReportStatus.DONE, passed=True,
                                      counts={}, created_at=h.deps.clock(),
                                      finished_at=h.deps.clock())


async def _user_id(username: str) -> int:
    return (await User.get(username=username)).id


async def _enqueue(h: Harness, sid: UUID, settings: QaSettings) -> QaTask:
    return await queue.enqueue(h.deps, sid, settings, await _clean_report(h, sid))


async def test_sampling_rules_by_age_product_and_agent_history_R40(harness: Harness) -> None:
    h = harness
    # Configured lower than the remote default, with the stepped-up rules (default rules).
    settings = QaSettings(sampling=SamplingConfig(default_share=0.0))
    young = await _enqueue(h, await _pending(h), settings)
    assert (young.sampled, young.sample_reasons, young.status) == (
        False, ["default"], TaskStatus.AUTO_PASSED)
    assert (await RecordingSession.get(id=young.session_id)).state == "qa_passed"
    assert await SessionEvent.filter(session_id=young.session_id, type="qa_auto_passed").exists()

    elderly = await _enqueue(h, await _pending(h, birth="19550301"), settings)
    assert (elderly.sampled, elderly.sample_reasons) == (True, ["customer_age_60_plus"])
    # Assigned at once to the least loaded inspector of the institution (qa01).
    assert elderly.status == TaskStatus.ASSIGNED and elderly.assignee_id is not None

    linked = await _enqueue(h, await _pending(h, product=INVESTMENT_LINKED), settings)
    assert (linked.sampled, linked.sample_reasons) == (True, ["investment_linked"])

    # agent02 has a rejected session: their next one is reviewed.
    first = await _pending(h, agent="agent02")
    await _enqueue(h, first, QaSettings())
    r = await h.as_("qa01", "POST", f"/qa/sessions/{first}/verdict", json={
        "verdict": "reject", "findings": [{"message": "销售人员承诺保本收益", "at_ms": 5000}]})
    assert r.status == 201, r.body
    second = await _enqueue(h, await _pending(h, agent="agent02"), settings)
    assert (second.sampled, second.sample_reasons) == (True, ["agent_recent_rejections"])
    # agent01 has none: still not sampled.
    again = await _enqueue(h, await _pending(h), settings)
    assert again.sampled is False


async def test_remote_sessions_are_all_reviewed_by_default_R40(harness: Harness) -> None:
    task = await _enqueue(harness, await _pending(harness), QaSettings())
    assert (task.sampled, task.sample_share, task.sample_reasons) == (True, 1.0, ["default"])
    assert task.status == TaskStatus.ASSIGNED


async def test_a_share_is_drawn_deterministically_per_session_R40(harness: Harness) -> None:
    config = SamplingConfig(default_share=0.5, rules=[])
    settings = QaSettings(sampling=config)
    for _ in range(4):
        sid = await _pending(harness)
        task = await _enqueue(harness, sid, settings)
        assert task.sampled == (draw(sid, config.salt) < 0.5)
        assert task.sample_share == 0.5


async def test_failing_automated_checks_force_a_review_R40(harness: Harness) -> None:
    """A session whose recording never arrived fails the checks: it is reviewed even when the
    configured share is zero."""
    h = harness
    rt = h.app[AFTER_CALL]
    rt.qa = QaSettings(sampling=SamplingConfig(default_share=0.0, rules=[]))
    sid = await _pending(h)
    await Recording.filter(session_id=sid).delete()  # the recording never arrived
    task = await check_and_queue(h.deps, rt, sid)
    assert task.sampled is True and task.sample_reasons == ["default", "automated_findings"]
    codes = set(await QaFinding.filter(session_id=sid).values_list("code", flat=True))
    assert "recording_missing" in codes


async def test_deadline_is_the_end_of_the_cooling_off_period_with_alerts_R40(
        harness: Harness) -> None:
    h = harness
    clock = FakeClock()
    h.deps.clock = clock
    sid = await _pending(h)
    task = await _enqueue(h, sid, QaSettings())
    session = await RecordingSession.get(id=sid)
    assert session.completed_at is not None
    start = session.completed_at.astimezone(queue.CHINA).date()
    assert task.deadline == queue.cooling_off_end(start, 15)
    assert task.deadline - session.completed_at > timedelta(days=15)

    settings = QaSettings()  # alerts 72 h and 24 h before
    levels = []
    for hours_before in (100, 70, 60, 20, -1):
        clock.now = task.deadline - timedelta(hours=hours_before)
        alerted = await queue.check_deadlines(h.deps, settings)
        levels.append([t.alert_level for t in alerted])
    assert levels == [[], ["due_72h"], [], ["due_24h"], ["overdue"]]
    alerts = await AuditEntry.filter(action="qa.deadline_alert", object_id=str(sid)).count()
    assert alerts == 3

    # The insurer reports the policy receipt: the cooling-off period starts there.
    from archive.policies import StatusReport, report_status
    from models.archive import PolicyState
    from models.sales import Order

    order = await Order.get(id=session.order_id)
    receipt = start + timedelta(days=3)
    await report_status(h.deps, order, StatusReport(PolicyState.IN_FORCE, "P-1", start,
                                                    receipt), Actor.system("insurer-test"),
                        h.app[AFTER_CALL].archive)
    moved = await QaTask.get(id=task.id)
    assert moved.deadline == queue.cooling_off_end(receipt, 15)
    assert moved.alert_level == ""


async def test_verdict_per_finding_then_rectification_linked_to_the_old_session_R40(
        harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    _, failing = await queue_with_findings(h, sid, ["recording_missing", "silence_gap"])

    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict", json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    confirm_all = [{"finding_id": f.id, "decision": "confirmed"} for f in failing]
    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict",
                    json={"verdict": "pass", "decisions": confirm_all})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict",
                    json={"verdict": "reject", "decisions": confirm_all[:1]})
    assert (r.status, r.body["code"]) == (422, "findings_undecided")
    dismiss = [{"finding_id": f.id, "decision": "dismissed"} for f in failing]
    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict",
                    json={"verdict": "pass", "decisions": dismiss})
    assert (r.status, r.body["code"]) == (422, "dismissal_needs_reason")
    r = await h.as_("agent01", "POST", f"/qa/sessions/{sid}/verdict",
                    json={"verdict": "reject", "decisions": confirm_all})
    assert r.status == 403

    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict", json={
        "verdict": "reject", "comments": "录像缺失，需重新录制", "decisions": confirm_all})
    assert r.status == 201, r.body
    rect = r.body["rectification"]
    assert rect["status"] == "required" and rect["original_session_id"] == str(sid)
    assert (await RecordingSession.get(id=sid)).state == "qa_rejected"
    assert {f.decision for f in await QaFinding.filter(id__in=[f.id for f in failing])} == {
        "confirmed"}
    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict", json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_task_decided")

    r = await h.as_("agent01", "GET", "/qa/rectifications?status=required")
    assert [x["id"] for x in r.body["items"]] == [rect["id"]]
    r = await h.as_("agent01", "POST", f"/qa/rectifications/{rect['id']}/session",
                    json={"location": HERE})
    assert r.status == 201, r.body
    new_id = r.body["id"]
    linked = await Rectification.get(id=rect["id"])
    assert (str(linked.new_session_id), linked.status) == (new_id, "recording")
    old, new = await RecordingSession.get(id=sid), await RecordingSession.get(id=new_id)
    assert new.order_id == old.order_id
    assert await AuditEntry.filter(action="qa.rectification_linked", object_id=new_id).exists()


async def test_queue_lists_by_deadline_and_assigns_R40(harness: Harness) -> None:
    h = harness
    first = await _enqueue(h, await _pending(h), QaSettings())
    second = await _enqueue(h, await _pending(h), QaSettings())
    await QaTask.filter(id=second.id).update(deadline=first.deadline - timedelta(days=1))
    r = await h.as_("qa01", "GET", "/qa/queue")
    assert r.status == 200, r.body
    assert [x["task_id"] for x in r.body["items"]] == [second.id, first.id]
    r = await h.as_("qa01", "POST", f"/qa/queue/{first.session_id}/assign",
                    json={"username": "agent01"})
    assert (r.status, r.body["code"]) == (404, "inspector_not_found")
    # Assigned to the least loaded inspector: one each.
    assert [t.assignee_id for t in await QaTask.filter(id__in=[first.id, second.id])
            .order_by("id")] == [await _user_id("qa01"), await _user_id("qa02")]
    r = await h.as_("qa01", "POST", f"/qa/queue/{second.session_id}/assign",
                    json={"username": "qa01"})
    assert r.status == 200 and r.body["status"] == "assigned"
    r = await h.as_("qa01", "GET", "/qa/queue?mine=1&status=assigned")
    assert len(r.body["items"]) == 2
    r = await h.as_("sup01", "GET", "/qa/queue")
    assert r.status == 403


async def test_the_after_call_sweep_takes_a_sealed_session_all_the_way_R40_R42_R43(
        harness: Harness) -> None:
    from aftercall.runtime import SWEEP_LOCK, sweep
    from archive.settings import InsurerClient, InsurerSettings
    from models.archive import ArchivedObject, InsurerStatusSnapshot, RetentionRecord

    h = harness
    rt = h.app[AFTER_CALL]
    rt.insurer = InsurerSettings(clients={"core": InsurerClient(
        institution="DEMO-LIFE", api_secret="a" * 20, webhook_secret="b" * 20)})
    sid = await _pending(h)
    files = 1 + await Recording.filter(session_id=sid).count()  # the signature image, segments
    counts = await sweep(h.deps, rt)
    assert counts["checks"] == 1 and counts["archived"] == files
    task = await QaTask.get(session_id=sid)
    assert task.sampled and task.report_id is not None
    assert await ArchivedObject.filter(session_id=sid).count() == files
    assert (await RetentionRecord.get(session_id=sid)).retain_until is None
    assert await InsurerStatusSnapshot.exists(order__sessions__id=sid)
    again = await sweep(h.deps, rt)
    assert (again["checks"], again["archived"], again["insurer_changes"]) == (0, 0, 0)
    # Another process sweeping: this one stands aside.
    await h.redis.set(SWEEP_LOCK, "1")
    assert await sweep(h.deps, rt) == {}


async def test_a_sweep_whose_lock_expired_leaves_the_next_owner_s_lock_alone(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock expired while this process swept and another process took it: finishing must
    not release the other's lock (two sweeps would then run at once)."""
    from aftercall import runtime

    h = harness

    async def slow_sweep(*_: object) -> dict[str, int]:
        # As if the 300 s ran out mid-sweep and another process took the lock.
        await h.redis.delete(runtime.SWEEP_LOCK)
        assert await h.redis.set(runtime.SWEEP_LOCK, "other", nx=True, ex=300)
        return {"checks": 0}

    monkeypatch.setattr(runtime, "_sweep", slow_sweep)
    assert await runtime.sweep(h.deps, h.app[AFTER_CALL]) == {"checks": 0}
    assert await h.redis.get(runtime.SWEEP_LOCK) == b"other"
