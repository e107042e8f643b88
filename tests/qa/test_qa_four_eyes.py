"""One QA verdict path with its rules (R-40): a pass is refused while a critical or major
finding is undecided, confirmed, or dismissed without a completed approval; a dismissal needs a
reason from the fixed list; a critical finding's dismissal needs a second, different inspector
(four eyes); the audit records the real counts; the queue never passes a failing report by
itself; the insurer sees a pass only when it went through this path (R-43). Presence fails
closed (R-13): a call the presence monitor did not watch gets a critical finding."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from archive.insurer import application_status
from models.audit import AuditEntry
from models.qa import (
    DismissalStatus,
    FindingDecision,
    QaDismissal,
    QaFinding,
    QaTask,
    ReportStatus,
    TaskStatus,
)
from models.sales import Order
from models.sessions import (
    Acknowledgement,
    IdentityCheck,
    Recording,
    RecordingSession,
    SessionEvent,
    Signature,
)
from qa.checks import check_presence_monitored
from qa.dismissals import REASONS
from qa.settings import QaSettings, SamplingConfig
from qa.timeline import PRESENCE_STARTED, PRESENCE_UNAVAILABLE, Timeline, build_timeline
from tests.harness import Harness
from tests.qa.verdict_kit import queue_with_findings

pytestmark = pytest.mark.timeout(180)


async def _pending(h: Harness) -> str:
    return (await h.walk_to("qa_pending")).session_id


def _verdict(sid: str) -> str:
    return f"/qa/sessions/{sid}/verdict"


def _dismissal(sid: str, finding: QaFinding, action: str = "") -> str:
    path = f"/qa/sessions/{sid}/findings/{finding.id}/dismissal"
    return f"{path}/{action}" if action else path


async def _insurer_view(sid: str) -> dict[str, Any]:
    session = await RecordingSession.get(id=sid)
    return await application_status(await Order.get(id=session.order_id))


async def _state(sid: str) -> str:
    return (await RecordingSession.get(id=sid)).state.value


async def test_a_pass_is_refused_while_a_critical_finding_is_undecided_R40(
        harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    _, (missing, left) = await queue_with_findings(h, sid, ["recording_missing",
                                                            "customer_left"])
    assert (missing.severity, left.severity) == ("critical", "minor")

    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked"), r.body
    assert "缺少录像" in r.body["detail"] and f"#{missing.id}" in r.body["detail"]
    assert r.body["finding_ids"] == [missing.id]
    assert r.body["standings"] == {str(missing.id): "undecided"}
    assert await _state(sid) == "qa_pending"
    refused = await AuditEntry.get(action="qa.pass_refused", object_id=sid)
    assert refused.outcome == "failure"
    assert refused.details["counts"]["pending"] == 1

    # Marking the critical finding dismissed in the verdict itself does not work either: it
    # needs a proposal and a second inspector first.
    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass", "decisions": [
        {"finding_id": missing.id, "decision": "dismissed",
         "reason_code": "replay_recording_complete", "note": "回放 00:00–00:05 录像完整"}]})
    assert (r.status, r.body["code"]) == (409, "dismissal_needs_second_inspector"), r.body
    # Confirmed is no way to a pass.
    r = await h.as_("qa01", "POST", _verdict(sid), json={
        "verdict": "pass", "decisions": [{"finding_id": missing.id, "decision": "confirmed"}]})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    assert r.body["standings"] == {str(missing.id): "confirmed"}
    assert (await QaFinding.get(id=missing.id)).decision is None  # nothing was written
    # The former verdict path without rules is gone.
    r = await h.as_("qa01", "POST", f"/sessions/{sid}/qa-reviews", json={"verdict": "pass"})
    assert r.status in (404, 405)
    assert await _state(sid) == "qa_pending"


async def test_one_inspectors_dismissal_of_a_critical_finding_does_not_count_R40(
        harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    _, (missing,) = await queue_with_findings(h, sid, ["recording_missing"])
    r = await h.as_("qa01", "POST", _dismissal(sid, missing), json={
        "reason_code": "replay_recording_complete", "note": "回放核实第 1 段录像完整"})
    assert r.status == 201, r.body
    assert (r.body["status"], r.body["four_eyes"]) == ("proposed", True)
    audit = await AuditEntry.get(action="qa.finding_dismissal_proposed", object_id=sid)
    assert (audit.details["finding_id"], audit.details["reason_code"]) == (
        missing.id, "replay_recording_complete")
    assert (await QaFinding.get(id=missing.id)).decision is None

    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    assert r.body["standings"] == {str(missing.id): "dismissal_proposed"}
    assert "排除待第二名质检员复核" in r.body["detail"]
    r = await h.as_("qa01", "POST", _dismissal(sid, missing), json={
        "reason_code": "detector_error", "note": "再次申请"})
    assert (r.status, r.body["code"]) == (409, "dismissal_pending")

    # A finding marked dismissed without an approved record (as the old path wrote it) does
    # not count either: not for the verdict, not for the insurer.
    await QaFinding.filter(id=missing.id).update(decision=FindingDecision.DISMISSED,
                                                 decision_note="客户网络原因")
    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    assert r.body["standings"] == {str(missing.id): "dismissal_unapproved"}
    # Nor a record "approved" by its own proposer.
    await QaDismissal.filter(finding_id=missing.id).update(
        status=DismissalStatus.APPROVED, reviewed_by_id=(await QaDismissal.get(
            finding_id=missing.id)).proposed_by_id)
    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    assert r.body["standings"] == {str(missing.id): "dismissal_unapproved"}
    assert (await _insurer_view(sid))["underwriting_may_proceed"] is False


async def test_the_proposer_cannot_approve_their_own_dismissal_R40(harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    _, (face,) = await queue_with_findings(h, sid, ["second_face"])
    r = await h.as_("qa01", "POST", _dismissal(sid, face), json={
        "reason_code": "bystander_not_involved", "note": "00:12 营业厅保安经过，未与客户交流"})
    assert r.status == 201, r.body
    r = await h.as_("qa01", "POST", _dismissal(sid, face, "approve"), json={})
    assert (r.status, r.body["code"]) == (409, "dismissal_same_inspector"), r.body
    assert "另一名质检员" in r.body["detail"]
    r = await h.as_("qa01", "POST", _dismissal(sid, face, "refuse"), json={"note": "撤回"})
    assert (r.status, r.body["code"]) == (409, "dismissal_same_inspector")
    r = await h.as_("agent01", "POST", _dismissal(sid, face, "approve"), json={})
    assert r.status == 403
    row = await QaDismissal.get(finding_id=face.id)
    assert (row.status, row.reviewed_by_id) == (DismissalStatus.PROPOSED, None)
    assert not await AuditEntry.exists(action="qa.finding_dismissal_approved")
    # The second inspector may refuse only with a reason.
    r = await h.as_("qa02", "POST", _dismissal(sid, face, "refuse"), json={"note": " "})
    assert (r.status, r.body["code"]) == (422, "refusal_needs_note")


async def test_a_reason_outside_the_list_is_refused_R40(harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    _, (gap, altered, silence) = await queue_with_findings(
        h, sid, ["recording_gap", "segment_altered", "silence_gap"])
    cases = [
        (gap, {"reason_code": "customer_network", "note": "客户网络原因"},
         "dismissal_reason_unknown"),
        # On the list, but it cannot explain a gap in the recording.
        (gap, {"reason_code": "bystander_not_involved", "note": "客户网络原因"},
         "dismissal_reason_not_allowed"),
        (gap, {"reason_code": "replay_recording_complete", "note": "   "},
         "validation_failed"),  # a blank note
        (altered, {"reason_code": "detector_error", "note": "哈希计算有误"},
         "finding_not_dismissible"),
        (gap, {"reason_code": "duplicate", "note": "重复", "duplicate_of": silence.id},
         "duplicate_of_invalid"),  # a major cannot stand for a critical
    ]
    for finding, body, code in cases:
        r = await h.as_("qa01", "POST", _dismissal(sid, finding), json=body)
        assert (r.status, r.body["code"]) == (422, code), (body, r.body)
    r = await h.as_("qa01", "POST", _dismissal(sid, gap), json={"reason_code": "duplicate"})
    assert (r.status, r.body["code"]) == (422, "validation_failed")  # no note at all
    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass", "decisions": [
        {"finding_id": silence.id, "decision": "dismissed", "reason_code": "detector_error"}]})
    assert (r.status, r.body["code"]) == (422, "dismissal_needs_note")
    assert "写明误判的原因" in r.body["detail"]
    assert "customer_network" not in REASONS
    # A major's dismissal in the verdict needs a listed reason as well.
    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "reject", "decisions": [
        {"finding_id": gap.id, "decision": "confirmed"},
        {"finding_id": altered.id, "decision": "confirmed"},
        {"finding_id": silence.id, "decision": "dismissed", "note": "客户在思考"}]})
    assert (r.status, r.body["code"]) == (422, "dismissal_needs_reason"), r.body
    assert not await QaDismissal.exists(session_id=sid)
    r = await h.as_("qa01", "GET", "/qa/dismissal-reasons")
    assert r.status == 200
    reasons = {x["code"]: x for x in r.body["items"]}
    assert set(reasons) == set(REASONS)
    assert "recording_gap" in reasons["replay_recording_complete"]["finding_codes"]
    assert all("segment_altered" not in x["finding_codes"] for x in reasons.values())


async def test_a_second_inspector_approves_then_the_pass_counts_everywhere_R40_R43(
        harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    task, (missing, unchecked, silence, _left) = await queue_with_findings(
        h, sid, ["recording_missing", "presence_unchecked", "silence_gap", "customer_left"])
    assert task.status == TaskStatus.ASSIGNED
    before = await _insurer_view(sid)
    assert (before["qa_complete"], before["qa_result"], before["underwriting_may_proceed"]) == (
        False, None, False)

    for finding, reason, note in [
            (missing, "replay_recording_complete", "回放核实客户方录像第 1–3 段完整可播放"),
            (unchecked, "manual_presence_verified", "人工回放 00:00–03:10 全程客户本人在场")]:
        r = await h.as_("qa01", "POST", _dismissal(sid, finding),
                        json={"reason_code": reason, "note": note})
        assert r.status == 201, r.body
    r = await h.as_("qa02", "GET", "/qa/dismissals")
    assert sorted(x["finding_id"] for x in r.body["items"]) == sorted([missing.id,
                                                                       unchecked.id])
    r = await h.as_("qa02", "POST", _dismissal(sid, missing, "approve"),
                    json={"note": "已复核回放"})
    assert (r.status, r.body["status"]) == (200, "approved"), r.body
    r = await h.as_("qa02", "POST", _dismissal(sid, unchecked, "refuse"),
                    json={"note": "02:40–03:10 画面过暗，无法确认本人"})
    assert (r.status, r.body["status"]) == (200, "refused"), r.body

    # One critical finding is still open: its refusal keeps the pass refused.
    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass", "decisions": [
        {"finding_id": silence.id, "decision": "dismissed", "reason_code": "detector_error",
         "note": "01:20 客户低声作答，能量检测误判为静音"}]})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")
    assert r.body["standings"] == {str(unchecked.id): "undecided"}
    assert not await QaDismissal.exists(finding_id=silence.id)  # rolled back with the refusal

    # Proposed again after the refusal (by the other inspector this time), approved by qa01.
    r = await h.as_("qa02", "POST", _dismissal(sid, unchecked), json={
        "reason_code": "manual_presence_verified", "note": "调亮回放后核实 02:40–03:10 为本人"})
    assert r.status == 201, r.body
    r = await h.as_("qa01", "POST", _dismissal(sid, unchecked, "approve"), json={})
    assert r.status == 200, r.body

    r = await h.as_("qa01", "POST", _verdict(sid), json={"verdict": "pass", "decisions": [
        {"finding_id": silence.id, "decision": "dismissed", "reason_code": "detector_error",
         "note": "01:20 客户低声作答，能量检测误判为静音"}]})
    assert r.status == 201, r.body
    expected = {"findings": 4, "failing": 3, "confirmed": 0, "dismissed": 3,
                "dismissed_four_eyes": 2, "pending": 0, "added": 0}
    assert r.body["counts"] == expected
    assert await _state(sid) == "qa_passed"
    entry = await AuditEntry.get(action="session.qa_pass", object_id=sid)
    assert {k: entry.details[k] for k in expected} == expected
    actions = [e.action for e in await AuditEntry.filter(
        object_id=sid, action__startswith="qa.finding_dismiss").order_by("id")]
    assert actions == ["qa.finding_dismissal_proposed", "qa.finding_dismissal_proposed",
                       "qa.finding_dismissal_approved", "qa.finding_dismissal_refused",
                       "qa.finding_dismissal_proposed", "qa.finding_dismissal_approved",
                       "qa.finding_dismissed"]
    silence_row = await QaFinding.get(id=silence.id)
    assert (silence_row.decision, silence_row.dismissal_reason) == (
        FindingDecision.DISMISSED, "detector_error")

    after = await _insurer_view(sid)
    assert (after["qa_complete"], after["qa_result"], after["qa_pass_basis"],
            after["underwriting_may_proceed"]) == (True, "pass", "inspector", True)
    # Left as it is, no later change turns it back: still recognised on a second read.
    assert (await _insurer_view(sid))["underwriting_may_proceed"] is True


async def test_the_queue_never_passes_a_failing_or_unfinished_report_by_itself_R40(
        harness: Harness) -> None:
    h = harness
    nobody = QaSettings(sampling=SamplingConfig(default_share=0.0, rules=[],
                                                findings_force_review=False))
    major = await _pending(h)
    task, _ = await queue_with_findings(h, major, ["silence_gap"], settings=nobody)
    assert (task.sampled, task.status) == (False, TaskStatus.OPEN)
    # A report flagged passed whose stored findings hold a critical one is not clean.
    flagged = await _pending(h)
    task, _ = await queue_with_findings(h, flagged, ["recording_gap"], settings=nobody,
                                        passed=True)
    assert task.status == TaskStatus.OPEN
    # A report that did not finish is not clean either.
    unfinished = await _pending(h)
    task, _ = await queue_with_findings(h, unfinished, [], settings=nobody,
                                        status=ReportStatus.RUNNING, passed=None)
    assert task.status == TaskStatus.OPEN
    for sid in (major, flagged, unfinished):
        assert await _state(sid) == "qa_pending"
        assert not await SessionEvent.exists(session_id=sid, type="qa_auto_passed")
        assert (await _insurer_view(sid))["underwriting_may_proceed"] is False
    # A clean report, not sampled: passed by the sampling rule, and the insurer sees it.
    clean = await _pending(h)
    task, _ = await queue_with_findings(h, clean, ["customer_left"], settings=nobody)
    assert task.status == TaskStatus.AUTO_PASSED
    view = await _insurer_view(clean)
    assert (view["qa_result"], view["qa_pass_basis"], view["underwriting_may_proceed"]) == (
        "pass", "auto_pass", True)


async def test_the_insurer_does_not_see_a_pass_made_outside_the_verdict_path_R43(
        harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    task, (missing,) = await queue_with_findings(h, sid, ["recording_missing"])
    # As the retired endpoint did: the state moved, the task closed by the sweep.
    await RecordingSession.filter(id=sid).update(state="qa_passed")
    await QaTask.filter(id=task.id).update(status=TaskStatus.CLOSED, verdict="pass")
    view = await _insurer_view(sid)
    assert (view["qa_complete"], view["qa_result"], view["underwriting_may_proceed"],
            view["qa_pass_unrecognised"]) == (False, None, False, True)
    # Even a decided task does not help while the critical finding is not dismissed.
    await QaTask.filter(id=task.id).update(status=TaskStatus.DECIDED)
    assert (await _insurer_view(sid))["underwriting_may_proceed"] is False
    assert (await QaFinding.get(id=missing.id)).decision is None


# --------------------------------------------------------------------------- presence


async def _timeline(sid: str, keep: Any = None, extra: list[SessionEvent] | None = None
                    ) -> Timeline:
    """The session's timeline with some events left out or added (not stored)."""
    session = await RecordingSession.get(id=sid)
    events = [e for e in await SessionEvent.filter(session_id=sid).order_by("seq")
              if keep is None or keep(e)]
    return build_timeline(
        session, events=[*events, *(extra or [])],
        acknowledgements=await Acknowledgement.filter(session_id=sid).order_by("id"),
        identity_checks=await IdentityCheck.filter(session_id=sid).order_by("attempt"),
        signatures=await Signature.filter(session_id=sid).order_by("id"),
        recordings=await Recording.filter(session_id=sid).order_by("kind", "segment"))


def _event(session: RecordingSession, type_: str, data: dict[str, Any],
           after_s: int = 5) -> SessionEvent:
    assert session.recording_started_at is not None
    return SessionEvent(session_id=session.id, seq=10_000, type=type_, data=data,
                        at=session.recording_started_at + timedelta(seconds=after_s))


async def test_a_call_the_presence_monitor_never_watched_is_critical_R13(
        harness: Harness) -> None:
    h = harness
    sid = await _pending(h)
    session = await RecordingSession.get(id=sid)
    unwatched = await _timeline(sid, keep=lambda e: e.type != PRESENCE_STARTED)
    assert unwatched.had_call
    findings = check_presence_monitored(_input(unwatched))
    assert [(f.code, f.effective_severity.value) for f in findings] == [
        ("presence_unchecked", "critical")]
    assert findings[0].requirement == "R-13"
    assert findings[0].kind.title == "通话中未能持续核验客户本人在场"
    assert findings[0].details == {"event": "presence_started_missing"}

    started = _event(session, PRESENCE_STARTED, {"attempt": 1})
    watched = await _timeline(sid, keep=lambda e: e.type != PRESENCE_STARTED, extra=[started])
    assert check_presence_monitored(_input(watched)) == []

    # Started, but then it could not watch any more (or never could): critical at that time.
    gone = _event(session, PRESENCE_UNAVAILABLE, {"reason": "engines_unavailable"}, 20)
    broken = await _timeline(sid, keep=lambda e: e.type != PRESENCE_STARTED,
                             extra=[started, gone])
    findings = check_presence_monitored(_input(broken))
    assert [(f.code, f.at_ms) for f in findings] == [("presence_unchecked", 20_000)]
    assert "人脸核验引擎不可用" in findings[0].message

    # Before any call there is nothing to watch.
    created = (await h.walk_to("created")).session_id
    assert check_presence_monitored(_input(await _timeline(created))) == []


def _input(t: Timeline) -> Any:
    from qa.checks import CheckInput

    return CheckInput(t, None, None, QaSettings())  # type: ignore[arg-type]


async def test_presence_unavailable_reaches_the_stored_report_R13(
        harness: Harness, vad: Any) -> None:
    """Through the runner, as the sweep runs it: the live call's `presence_unavailable` event
    (accepted by record_media_event in any state) becomes a critical finding in the report."""
    from qa.runner import run_automated_checks
    from qa.timeline import record_media_event

    h = harness
    sid = await _pending(h)
    await record_media_event(h.deps, UUID(sid), PRESENCE_UNAVAILABLE,
                             {"reason": "no_verified_face"})
    report = await run_automated_checks(h.deps, UUID(sid), QaSettings(), vad)
    rows = await QaFinding.filter(report_id=report.id, code="presence_unchecked")
    assert rows and all(r.severity == "critical" for r in rows)
    assert any("没有已核验的客户活体人脸" in r.message for r in rows)
    assert report.passed is False

