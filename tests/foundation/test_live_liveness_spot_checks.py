"""Spot checks of liveness during the script (R-12, issue 15): at step boundaries drawn at
random the next step is held until the customer passed one more live challenge; nothing plays
or can be answered meanwhile, the agent cannot resume past it, a check failed every time holds
the script for good, and QA reads each check with the step it held.

The runs are recorded through `workflow.live_liveness` as the call's watcher records them
(their judging on real WebRTC frames is tested in tests/media_call/test_live_liveness.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from models.sessions import RecordingSession, SessionEvent
from qa.checks import CheckInput, check_live_liveness
from qa.findings import Finding
from qa.live_liveness import live_facts
from qa.settings import QaSettings
from qa.timeline import Timeline, build_timeline, load_timeline
from tests.harness import HERE, Harness, Walk
from workflow import live_liveness, media_events
from workflow.media_events import clip_for
from workflow.script_speech import SpeechSettings

pytestmark = [pytest.mark.timeout(120), pytest.mark.one_database]

MATCHED = {"status": "matched", "passed": True, "attempt": 1, "distance": 0.33,
           "threshold": 0.54, "metric": "euclidean", "engine": "dlib-chip 1", "frames": 1,
           "reason_code": None}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """The production policy: the live run before the script, one spot check during it, two
    runs per check."""
    return {"live_liveness_required": True, "live_liveness_spot_checks": 1,
            "live_liveness_max_attempts": 2}


def _challenge(passed: bool, reason_code: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "action": "blink", "passed": passed, "reason_code": reason_code,
            "reason": None if passed else "未在规定时间内完成动作", "time_limit_s": 6.0,
            "completed_at_s": 1.5 if passed else None}


async def _run(harness: Harness, w: Walk, passed: bool, spot: int | None = None,
               counted: bool = True) -> live_liveness.LiveOutcome:
    """One run as the call's watcher records it (started, then judged)."""
    sid = UUID(w.session_id)
    attempt = await live_liveness.record_started(harness.deps, sid, ["blink"], spot)
    code = None if passed else "challenge_timeout"
    return await live_liveness.record_result(
        harness.deps, sid, attempt, passed, [_challenge(passed, code)], counted=counted,
        face_match=MATCHED if passed else None, spot=spot)


async def _disclosing(harness: Harness) -> Walk:
    """In the script, after the live run passed in the call."""
    w = await harness.walk_to("in_call")
    await _run(harness, w, True)
    await harness.pin_speech(w)
    r = await harness.as_("agent01", "POST", f"/sessions/{w.session_id}/script/start")
    assert r.status == 200, r.body
    return w


async def _types(sid: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data or {}) for e in
            await SessionEvent.filter(session_id=sid).order_by("seq")]


async def _timeline(sid: str) -> Timeline:
    return await load_timeline(UUID(sid))


def _check(t: Timeline) -> list[Finding]:
    return check_live_liveness(CheckInput(t, None, None, QaSettings()))  # type: ignore[arg-type]


async def test_a_spot_check_holds_the_next_step_until_it_passed_R12(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The draw at the first boundary falls on it (the draw itself: the next test).
    monkeypatch.setattr(live_liveness.secrets, "randbelow", lambda n: 0)
    w = await _disclosing(harness)
    sid = w.session_id
    session = await RecordingSession.get(id=sid)
    first, second = session.steps[0], session.steps[1]
    await harness.play_step(w, first)
    session = await RecordingSession.get(id=sid)
    assert session.current_step == 1 and live_liveness.spot_held(session)
    events = await _types(sid)
    due = [d for t, d in events if t == "live_liveness_spot_due"]
    assert len(due) == 1 and due[0]["check"] == 1 and due[0]["index"] == 1
    assert due[0]["step_id"] == second["id"] and due[0]["at_ms"] >= 0
    # The held step did not start: no step_started for it, and its reading opens nothing.
    assert not [d for t, d in events if t == "step_started" and d["index"] == 1]
    assert second["speaker"] == "agent"
    assert not await media_events.agent_voice(harness.deps, UUID(sid), second["id"], 600_000)
    view = (await harness.request("GET", "/customer/session", token=w.customer_token)).body
    assert view["liveness_check"] is True and view["paused"] is True
    assert view["answer_open"] is False
    # Nothing moves the script past it: the customer's answer or replay, the agent's resume.
    r = await harness.ack(w, second["id"])
    assert r.status == 409 and r.body["code"] == "liveness_spot_check", r.body
    assert "随机活体抽检" in r.body["detail"]
    r = await harness.request("POST", "/customer/replay", token=w.customer_token,
                              json={"step_id": second["id"]})
    assert r.status == 409 and r.body["code"] == "liveness_spot_check", r.body
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/resume",
                          json={"note": "继续"})
    assert r.status == 409 and r.body["code"] == "liveness_spot_check", r.body
    staff = (await harness.as_("agent01", "GET", f"/sessions/{sid}")).body
    assert staff["pause_reason"] == live_liveness.SPOT_HOLD
    # A failed run (counted, one left) keeps the hold; the runs before the script are not
    # touched by it.
    outcome = await _run(harness, w, False, spot=1)
    assert not outcome.passed and not outcome.final and outcome.attempts_left == 1
    assert live_liveness.spot_held(await RecordingSession.get(id=sid))
    assert (await live_liveness.live_state(UUID(sid))).passed
    assert (await live_liveness.live_state(UUID(sid), spot=1)).failures == 1
    # The pass starts the held step, in the same transaction.
    assert (await _run(harness, w, True, spot=1)).passed
    session = await RecordingSession.get(id=sid)
    assert not session.paused and session.pause_reason == "" and session.current_step == 1
    events = await _types(sid)
    kinds = [t for t, _ in events]
    passed_at = max(i for i, (t, d) in enumerate(events)
                    if t == "live_liveness_passed" and d.get("spot") == 1)
    assert kinds[passed_at + 1] == "step_started"
    assert events[passed_at + 1][1] == {"step_id": second["id"], "index": 1}
    # Read and moved past as any step now.
    await harness.play_step(w, second)
    assert (await RecordingSession.get(id=sid)).current_step == 2
    # QA: the check passed before its step started; the failed try is for the inspector.
    facts = live_facts(await _timeline(sid))
    (spot,) = facts.spots
    assert spot.check == 1 and spot.passed_in_time and spot.step_id == second["id"]
    assert facts.passed_before_script() is not None
    assert [r.spot for r in facts.runs] == [None, 1, 1]
    findings = _check(await _timeline(sid))
    assert [f.code for f in findings] == ["live_spot_check_failed"]
    assert findings[0].effective_severity.value == "minor" and findings[0].step_id == second["id"]
    assert first["id"] != second["id"]


async def test_exactly_the_configured_spot_checks_fall_on_random_boundaries_R12(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.deps, "settings",
                        replace(harness.deps.settings, live_liveness_spot_checks=2))
    w = await _disclosing(harness)
    sid = w.session_id
    steps = len((await RecordingSession.get(id=sid)).steps)
    assert steps >= 4  # boundaries enough for the draw to matter
    while True:
        session = await RecordingSession.get(id=sid)
        if session.state.value != "disclosing":
            break
        if live_liveness.spot_held(session):
            await _run(harness, w, True, spot=await live_liveness.pending_spot_check(UUID(sid)))
            continue
        step = await harness.current_step(w)
        assert step is not None
        await harness.play_step(w, step)
    due = [d for t, d in await _types(sid) if t == "live_liveness_spot_due"]
    assert [d["check"] for d in due] == [1, 2]
    assert len({d["index"] for d in due}) == 2 and all(1 <= d["index"] < steps for d in due)
    facts = live_facts(await _timeline(sid))
    assert all(s.passed_in_time for s in facts.spots) and _check(await _timeline(sid)) == []


async def test_a_spot_check_failed_every_time_holds_the_script_for_good_R12(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_liveness.secrets, "randbelow", lambda n: 0)
    w = await _disclosing(harness)
    sid = w.session_id
    first, second = (await RecordingSession.get(id=sid)).steps[:2]
    await harness.play_step(w, first)
    assert not (await _run(harness, w, False, spot=1)).final
    # A run while the customer's media was gone is not counted.
    assert not (await _run(harness, w, False, spot=1, counted=False)).final
    last = await _run(harness, w, False, spot=1)
    assert last.final and last.attempts_left == 0
    state = await live_liveness.live_state(UUID(sid), spot=1)
    assert state.exhausted(harness.deps.settings)
    session = await RecordingSession.get(id=sid)
    assert live_liveness.spot_held(session) and session.current_step == 1
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/advance",
                          json={"step_id": second["id"]})
    assert r.status == 409 and r.body["code"] == "liveness_spot_check", r.body
    # QA: critical, at the moment it fell due, on the step it held.
    (finding,) = _check(await _timeline(sid))
    assert finding.code == "live_spot_check_unpassed" and finding.step_id == second["id"]
    assert finding.effective_severity.value == "critical"
    assert "第 1 次随机活体抽检未通过" in finding.message
    # The agent ends the session.
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/abort",
                          json={"reason": "客户未通过随机活体抽检"})
    assert r.status == 200 and r.body["state"] == "aborted", r.body


async def test_a_step_started_without_its_spot_check_passed_is_critical_R12(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA does not trust the workflow: a timeline where the held step started with no passed
    run of its check (written by anything else) is flagged."""
    monkeypatch.setattr(live_liveness.secrets, "randbelow", lambda n: 0)
    w = await _disclosing(harness)
    sid = w.session_id
    first, second = (await RecordingSession.get(id=sid)).steps[:2]
    await harness.play_step(w, first)
    t = await _timeline(sid)
    session = await RecordingSession.get(id=sid)
    last = t.events[-1]
    forged = SessionEvent(session_id=session.id, seq=last.seq + 1, type="step_started",
                          data={"step_id": second["id"], "index": 1}, at=last.at)
    (finding,) = _check(build_timeline(
        session, events=[*t.events, forged], acknowledgements=[], identity_checks=[],
        signatures=[], recordings=[]))
    assert finding.code == "live_spot_check_unpassed"
    assert "没有通过的检测记录，其后的话术仍继续播报" in finding.message


async def test_an_interruption_during_a_spot_check_keeps_the_step_held_R12_R30(
        harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """断点续录 during a held step: the resume replays nothing and the check is still owed."""
    monkeypatch.setattr(live_liveness.secrets, "randbelow", lambda n: 0)
    w = await _disclosing(harness)
    sid = w.session_id
    first, second = (await RecordingSession.get(id=sid)).steps[:2]
    await harness.play_step(w, first)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/interrupt",
                          json={"reason": "客户网络中断"})
    assert r.status == 200 and r.body["state"] == "interrupted", r.body
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                          json={"location": HERE})
    assert r.status == 200 and r.body["state"] == "disclosing", r.body
    session = await RecordingSession.get(id=sid)
    assert live_liveness.spot_held(session) and session.current_step == 1
    assert await live_liveness.pending_spot_check(UUID(sid)) == 1
    # Its speech does not play on the resume (the follower's clip is none while held).
    assert await clip_for(session, SpeechSettings(engines=("espeak",), cache_dir=tmp_path)) is None
    assert (await _run(harness, w, True, spot=1)).passed
    kinds = [t for t, _ in await _types(sid)]
    assert kinds[-2:] == ["live_liveness_passed", "step_started"]
    await harness.play_step(w, second)
    assert (await RecordingSession.get(id=sid)).current_step == 2
