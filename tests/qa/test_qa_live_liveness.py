"""QA reads the live liveness runs (R-12 in the call, issue 15): the automated after-call report
flags a script started without a passed live run when the policy required it, a failed live
face match against the card portrait, and a passed run whose face was not matched; the replay
page shows each challenge where the server gave it.

The session is a real one walked to ``qa_pending`` (its timeline as the application wrote it);
the live liveness events are the ones `workflow.live_liveness` writes, either stored through it
or placed in memory before the ``script_started`` event (the checks are pure functions of the
timeline), as the live call would have placed them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from models.qa import QaFinding
from models.sessions import (
    Acknowledgement,
    IdentityCheck,
    Recording,
    RecordingSession,
    SessionEvent,
    Signature,
)
from qa.checks import CheckInput, check_live_liveness
from qa.findings import Finding
from qa.settings import QaSettings
from qa.timeline import Timeline, build_timeline
from tests.harness import Harness
from workflow import live_liveness

pytestmark = [pytest.mark.timeout(120), pytest.mark.one_database]

MATCHED = {"status": "matched", "passed": True, "attempt": 1, "distance": 0.33,
           "threshold": 0.54, "metric": "euclidean", "engine": "dlib-chip 1", "frames": 1,
           "reason_code": None}
MISMATCH = {**MATCHED, "status": "mismatch", "passed": False, "distance": 0.85,
            "reason_code": "face_mismatch"}
NO_PORTRAIT = {"status": "not_run", "passed": None, "attempt": None, "reason": "no_portrait"}
FACE_REASON = "通话画面中的人脸与身份证照片不一致，请由身份证上的本人正对摄像头完成检测"


def _challenge(sent_ms: int, passed: bool, face: dict[str, Any] | None,
               reason_code: str | None = None) -> dict[str, Any]:
    return {"id": f"c{sent_ms}", "action": "blink", "passed": passed,
            "reason_code": reason_code, "reason": FACE_REASON if reason_code else None,
            "sent_ms": sent_ms, "deadline_ms": sent_ms + 6000,
            "completed_ms": sent_ms + 1800, "face_match": face and {
                k: face[k] for k in ("passed", "distance", "threshold", "metric")}}


def _run(session: RecordingSession, attempt: int, at_s: float, face: dict[str, Any],
         seq: int) -> list[SessionEvent]:
    """The started and result events of one run, as `workflow.live_liveness` writes them."""
    assert session.recording_started_at is not None
    start = session.recording_started_at + timedelta(seconds=at_s)
    passed = face["status"] != "mismatch"
    code = None if passed else "card_face_mismatch"
    result = {"attempt": attempt, "passed": passed, "counted": True, "final": passed,
              "attempts_left": 0 if passed else 2, "reason_code": code,
              "reason": FACE_REASON if code else None, "face_match": face,
              "challenges": [_challenge(round(at_s * 1000) + 700, passed,
                                        face if face["status"] != "not_run" else None, code)]}
    return [
        SessionEvent(session_id=session.id, seq=seq, type=live_liveness.STARTED,
                     data={"attempt": attempt, "plan": ["blink"], "at_ms": round(at_s * 1000)},
                     at=start),
        SessionEvent(session_id=session.id, seq=seq + 1,
                     type=live_liveness.PASSED if passed else live_liveness.FAILED,
                     data=result, at=start + timedelta(seconds=3)),
    ]


async def _timeline(sid: str, runs: list[tuple[float, dict[str, Any]]],
                    required: bool | None = True) -> Timeline:
    """The stored timeline with live runs placed before ``script_started``, whose payload says
    whether the policy required them (None: a session from before the payload said so)."""
    session = await RecordingSession.get(id=sid)
    events = list(await SessionEvent.filter(session_id=sid).order_by("seq"))
    at = next(i for i, e in enumerate(events) if e.type == "script_started")
    started = events[at]
    data = {k: v for k, v in (started.data or {}).items() if k != "live_liveness_required"}
    if required is not None:
        data["live_liveness_required"] = required
    events[at] = SessionEvent(session_id=session.id, seq=started.seq, type=started.type,
                              data=data, at=started.at)
    placed = [e for n, (at_s, face) in enumerate(runs, start=1)
              for e in _run(session, n, at_s, face, 1000 + 2 * n)]
    return build_timeline(
        session, events=[*events[:at], *placed, *events[at:]],
        acknowledgements=await Acknowledgement.filter(session_id=sid).order_by("id"),
        identity_checks=await IdentityCheck.filter(session_id=sid).order_by("attempt"),
        signatures=await Signature.filter(session_id=sid).order_by("id"),
        recordings=await Recording.filter(session_id=sid).order_by("kind", "segment"))


def _check(t: Timeline) -> list[Finding]:
    return check_live_liveness(CheckInput(t, None, None, QaSettings()))  # type: ignore[arg-type]


async def test_a_script_started_without_a_passed_live_run_when_required_is_critical_R12(
        harness: Harness) -> None:
    sid = (await harness.walk_to("qa_pending")).session_id
    # Required and never run: critical, where the script started; never dismissible.
    (finding,) = _check(await _timeline(sid, []))
    script_ms = finding.at_ms
    assert finding.code == "live_liveness_missing" and finding.requirement == "R-12"
    assert finding.effective_severity.value == "critical"
    assert "尚未通过通话中的实时活体检测：没有检测记录" in finding.message
    from qa.dismissals import REASONS
    assert not any(r.allows("live_liveness_missing") for r in REASONS.values())
    # Runs that failed before it: still critical, with the last reason.
    (finding,) = [f for f in _check(await _timeline(sid, [(0.5, MISMATCH), (1.0, MISMATCH)]))
                  if f.code == "live_liveness_missing"]
    assert "此前 2 次检测均未通过（最后一次：通话画面中的人脸与身份证照片不一致" \
        in finding.message and finding.at_ms == script_ms
    # A run passed (face matched) before the script: nothing to say.
    assert _check(await _timeline(sid, [(0.5, MATCHED)])) == []
    # Not required (the test profile, as the walk ran), or a session from before the payload
    # said so and without runs: not flagged.
    assert _check(await _timeline(sid, [], required=False)) == []
    assert _check(await _timeline(sid, [], required=None)) == []
    # A session from before the payload said so that had runs (they run only when required).
    codes = [f.code for f in _check(await _timeline(sid, [(0.5, MISMATCH)], required=None))]
    assert "live_liveness_missing" in codes


async def test_a_failed_live_face_match_is_flagged_with_its_score_R12(harness: Harness) -> None:
    sid = (await harness.walk_to("qa_pending")).session_id
    # The only run: another face than the card's (and the script started without a pass).
    findings = _check(await _timeline(sid, [(0.5, MISMATCH)]))
    face = next(f for f in findings if f.code == "live_face_mismatch")
    assert face.effective_severity.value == "critical" and face.at_ms == 1200
    assert face.message == ("第 1 次实时活体检测：通话画面中的人脸与身份证照片不一致"
                            "（比对距离 0.85，通过阈值 0.54）")
    assert face.details["face_match"]["distance"] == 0.85
    # Matched in a later run: for an inspector (major), who may dismiss it after comparing.
    findings = _check(await _timeline(sid, [(0.5, MISMATCH), (1.0, MATCHED)]))
    assert [(f.code, f.effective_severity.value) for f in findings] == [
        ("live_face_mismatch", "major")]
    assert findings[0].message.endswith("之后的检测已比对一致")
    # Passed without a card portrait to match (identity reported by an external engine).
    (unchecked,) = _check(await _timeline(sid, [(0.5, NO_PORTRAIT)]))
    assert unchecked.code == "live_face_unchecked"
    assert unchecked.effective_severity.value == "major"
    assert unchecked.message == ("第 1 次实时活体检测通过，但通话画面未与身份证照片比对"
                                 "（没有已核验的证件人像）")


async def test_the_report_and_the_replay_marks_read_the_stored_live_runs_R12_R41(
        harness: Harness, vad: Any) -> None:
    """Through `workflow.live_liveness` (as the live call writes them) into the runner's stored
    report, and each challenge on the replay page's marks at its offset in the recording."""
    from qa.replay import replay_view
    from qa.runner import run_automated_checks

    h = harness
    sid = (await h.walk_to("qa_pending")).session_id
    session = await RecordingSession.get(id=sid)
    assert session.recording_started_at is not None
    origin = session.recording_started_at.timestamp()
    attempt = await live_liveness.record_started(h.deps, UUID(sid), ["blink", "open_mouth"])
    challenges = [
        {"id": "a1", "action": "blink", "passed": True, "reason_code": None, "reason": None,
         "time_limit_s": 6.0, "completed_at_s": 1.5, "sent_at": origin + 4.0,
         "face_match": {k: MATCHED[k] for k in ("passed", "distance", "threshold", "metric")}},
        {"id": "a2", "action": "open_mouth", "passed": False,
         "reason_code": "card_face_mismatch", "reason": FACE_REASON, "time_limit_s": 6.0,
         "completed_at_s": 2.25, "sent_at": origin + 9.0,
         "face_match": {k: MISMATCH[k] for k in ("passed", "distance", "threshold", "metric")}},
    ]
    face = live_liveness.face_match_record(challenges, 1)
    assert face["status"] == "mismatch" and face["distance"] == 0.85
    await live_liveness.record_result(h.deps, UUID(sid), attempt, False, challenges,
                                      face_match=face)

    report = await run_automated_checks(h.deps, UUID(sid), QaSettings(), vad)
    (row,) = await QaFinding.filter(report_id=report.id, code="live_face_mismatch")
    assert row.severity == "critical" and row.at_ms == 9000 and row.requirement == "R-12"
    assert "比对距离 0.85，通过阈值 0.54" in row.message
    assert report.passed is False

    view = await replay_view(UUID(sid), "ticket")
    marks = [m for m in view["marks"] if m["kind"] == "liveness"]
    assert [(m["at_ms"], m["clock"], m["action"], m["passed"]) for m in marks] == [
        (4000, "00:04", "blink", True), (9000, "00:09", "open_mouth", False)]
    assert marks[0]["label"] == ("实时活体第 1 次·动作 1/2「眨眼」通过（1.5 秒完成）；"
                                 "人脸与证件照一致（距离 0.33，阈值 0.54）")
    assert marks[1]["label"].startswith("实时活体第 1 次·动作 2/2「张嘴」未通过：通话画面中的人脸")
    assert marks[1]["label"].endswith("人脸与证件照不一致（距离 0.85，阈值 0.54）")
    assert (marks[1]["completed_ms"], marks[1]["deadline_ms"]) == (11250, 15000)
    finding = next(m for m in view["marks"] if m["kind"] == "finding"
                   and m["message"] == row.message)
    assert finding["at_ms"] == 9000
