"""Evidence that fails closed: the server, not the page, decides when the script may start, when
a step may be answered and whether the recording is whole (R-23, R-24, R-30). Each attempt to
skip is refused with a 409 and a Chinese reason, and nothing already stored is lost."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from models.audit import AuditEntry
from models.sessions import Acknowledgement, Recording, RecordingSession
from scripts_library.render import SessionStep
from tests.harness import HERE, Harness, Walk
from tests.written import read_documents, stepped_clock
from workflow import media_events

pytestmark = pytest.mark.timeout(120)


def _sid(w: Walk) -> uuid.UUID:
    return uuid.UUID(w.session_id)


async def _in_call_without_media(harness: Harness) -> Walk:
    """A started call in which nobody's media has connected (the README's old curl walk)."""
    walk = await harness.walk_to("identity_verified")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/start",
                          json={"location": HERE})
    assert r.status == 200, r.body
    await harness.pin_speech(walk)
    return walk


async def test_the_script_starts_only_with_both_parties_recorded_R30(harness: Harness) -> None:
    walk = await _in_call_without_media(harness)
    path = f"/sessions/{walk.session_id}/script/start"
    r = await harness.as_("agent01", "POST", path)
    assert r.status == 409 and r.body["code"] == "call_not_ready"
    assert "客户和销售人员的音视频尚未接通录制" in r.body["detail"]
    await harness.connect_media(walk, roles=("customer",))
    r = await harness.as_("agent01", "POST", path)
    assert r.status == 409 and "销售人员的音视频尚未接通录制" in r.body["detail"]
    assert "客户" not in r.body["problems"][0]
    # a party that connected but is not recorded does not count
    await media_events.party_connected(harness.deps, _sid(walk), "agent", recording=False)
    assert (await harness.as_("agent01", "POST", path)).status == 409
    await harness.connect_media(walk, roles=("agent",))
    r = await harness.as_("agent01", "POST", path)
    assert r.status == 200 and r.body["state"] == "disclosing"
    assert set(r.body["call_parties"]) == {"customer", "agent"}


async def test_the_script_waits_for_its_speech_to_be_rendered_R23(harness: Harness) -> None:
    walk = await harness.walk_to("identity_verified")
    await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/start",
                      json={"location": HERE})
    await harness.connect_media(walk)
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/script/start")
    assert r.status == 409 and r.body["code"] == "call_not_ready"
    assert "话术语音正在生成" in r.body["detail"]


async def test_a_lost_party_no_longer_counts_as_connected(harness: Harness) -> None:
    walk = await harness.walk_to("in_call")
    await media_events.party_lost(harness.deps, _sid(walk), "customer", "keepalive_timeout")
    session = await RecordingSession.get(id=walk.session_id)
    assert set(session.call_parties) == {"agent"}
    assert session.state.value == "interrupted"


async def test_no_answer_before_the_speech_reached_the_customer_in_full_R24(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("disclosing")
    step = await harness.current_step(walk)
    assert step is not None and step["speaker"] == "tts"
    view = (await harness.request("GET", "/customer/session", token=walk.customer_token)).body
    assert view["answer_open"] is False
    # nothing played yet (no call media at all, or the speech not started)
    r = await harness.ack(walk, step["id"])
    assert r.status == 409 and r.body["code"] == "answer_not_open"
    assert r.body["detail"] == "请先听完本项内容再回答"
    # playing, then cut (the customer dropped or the clip was replaced): still closed
    session = await RecordingSession.get(id=walk.session_id)
    clip = f"{step['id']}@{session.event_seq}"
    await media_events.speech_started(harness.deps, _sid(walk), clip)
    assert (await harness.ack(walk, step["id"])).status == 409
    await media_events.clip_finished(harness.deps, _sid(walk), clip, 1200, 5000, False)
    assert (await harness.ack(walk, step["id"])).status == 409
    # a complete clip of another step opens nothing
    await media_events.clip_finished(harness.deps, _sid(walk), "cooling-off@1", 5000, 5000, True)
    assert (await harness.ack(walk, step["id"])).status == 409
    # played in full to the connected customer: open, the page is told, the answer is taken
    await media_events.clip_finished(harness.deps, _sid(walk), clip, 5000, 5000, True)
    view = (await harness.request("GET", "/customer/session", token=walk.customer_token)).body
    assert view["answer_open"] is True
    r = await harness.ack(walk, step["id"])
    assert r.status == 201
    # the next step is closed again until its own speech completes
    nxt = await harness.current_step(walk)
    assert nxt is not None and nxt["id"] != step["id"]
    assert (await harness.ack(walk, nxt["id"])).status == 409
    events = (await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/events")).body
    opened = [e for e in events["events"] if e["type"] == "answer_opened"]
    assert [(e["data"]["step_id"], e["data"]["by"]) for e in opened] == [
        (step["id"], "speech_complete")]


async def test_an_agent_read_step_needs_the_agent_heard_reading_it_R24(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.play_script(walk, until="agent-identity")  # hears it too: undone below
    session = await RecordingSession.get(id=walk.session_id)
    step = session.steps[session.current_step]
    assert step["id"] == "agent-identity" and step["speaker"] == "agent"
    await RecordingSession.filter(id=walk.session_id).update(answer_open_step="")
    needed = media_events.agent_voice_needed_ms(SessionStep.model_validate(step),
                                                harness.deps.settings)
    assert needed >= 1500
    r = await harness.ack(walk, step["id"])
    assert r.status == 409 and r.body["code"] == "answer_not_open"
    assert "销售人员尚未宣读完本项内容" in r.body["detail"]
    assert not await media_events.agent_voice(harness.deps, _sid(walk), step["id"], needed - 1)
    assert (await harness.ack(walk, step["id"])).status == 409
    # voice reported for a step that is not current opens nothing
    assert not await media_events.agent_voice(harness.deps, _sid(walk), "opening", needed * 9)
    assert await media_events.agent_voice(harness.deps, _sid(walk), step["id"], needed)
    await read_documents(harness, walk.session_id, walk.customer_token)  # the licence card
    r = await harness.ack(walk, step["id"])
    assert r.status == 201, r.body
    events = (await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/events")).body
    opened = [e["data"] for e in events["events"] if e["type"] == "answer_opened"
              and e["data"]["step_id"] == step["id"]]
    assert opened[-1]["by"] == "agent_voice" and opened[-1]["voiced_ms"] == needed


async def test_the_agent_cannot_move_past_words_not_yet_played_R23(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.play_script(walk, until="signature")
    await harness.sign(walk)
    step = await harness.current_step(walk)
    assert step is not None and step["id"] == "closing" and step["answer"] == "none"
    advance = f"/sessions/{walk.session_id}/script/advance"
    r = await harness.as_("agent01", "POST", advance, json={"step_id": "closing"})
    assert r.status == 409 and r.body["code"] == "answer_not_open"
    await harness.hear(walk)  # played in full: a step needing no answer moves on by itself
    assert await harness.state(walk) == "signing"


async def test_after_an_interruption_the_step_must_be_heard_again_R30(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("disclosing")
    step = await harness.current_step(walk)
    assert step is not None
    await harness.hear(walk)
    sid = walk.session_id
    await harness.as_("agent01", "POST", f"/sessions/{sid}/call/interrupt",
                      json={"reason": "客户网络断开"})
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                          json={"location": HERE})
    assert r.status == 200 and r.body["answer_open"] is False
    r = await harness.ack(walk, step["id"])
    assert r.status == 409 and r.body["code"] == "answer_not_open"
    await harness.hear(walk)
    assert (await harness.ack(walk, step["id"])).status == 201


async def _signed(harness: Harness) -> Walk:
    """Every step heard and answered, two minutes into the call (the workflow clock)."""
    walk = await harness.walk_to("disclosing")
    await harness.play_script(walk)
    assert await harness.state(walk) == "signing"
    stepped_clock(harness).advance(120)
    return walk


async def test_complete_refuses_a_recording_with_a_gap_R30(harness: Harness) -> None:
    walk = await _signed(harness)
    await harness.record_call(walk)
    # the agent's second minute is missing: the recorder lost it, no interruption explains it
    session = await RecordingSession.get(id=walk.session_id)
    assert session.recording_started_at is not None
    agent = await Recording.get(session_id=walk.session_id, kind="agent_av")
    cut = session.recording_started_at + timedelta(seconds=1)
    await Recording.filter(id=agent.id).update(ended_at=cut)
    late = harness.deps.clock() + timedelta(seconds=5)
    stored = harness.deps.storage.put(f"{walk.session_id}/agent_av/00002.webm", b"later part")
    await Recording.create(session_id=walk.session_id, kind="agent_av", segment=2,
                           path=stored.path, sha256=stored.sha256, size_bytes=stored.size_bytes,
                           duration_ms=2000, started_at=late - timedelta(seconds=2),
                           ended_at=late)
    acks_before = await Acknowledgement.filter(session_id=walk.session_id).count()
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/complete")
    assert r.status == 409 and r.body["code"] == "recording_incomplete"
    assert "销售人员音视频在录制第 00:01 起缺失" in r.body["detail"]
    assert r.body["gaps"][0]["stream"] == "agent_av"
    assert await harness.state(walk) == "signing"
    assert await Acknowledgement.filter(session_id=walk.session_id).count() == acks_before
    refused = await AuditEntry.filter(action="session.complete_refused",
                                      object_id=walk.session_id)
    assert len(refused) == 1 and refused[0].details["gaps"][0]["stream"] == "agent_av"
    # such a session can only be aborted (its evidence is sealed as incomplete)
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/abort",
                          json={"reason": "录像不完整，重新录制"})
    assert r.status == 200 and r.body["state"] == "aborted"


async def test_complete_refuses_a_call_recorded_by_nobody_R30(harness: Harness) -> None:
    walk = await _signed(harness)  # every step heard and answered, but no segment registered
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/complete")
    assert r.status == 409 and r.body["code"] == "recording_incomplete"
    assert {g["stream"] for g in r.body["gaps"]} == {"customer_av", "agent_av", "tts"}


async def test_a_gap_explained_by_an_interruption_is_allowed_R30(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    sid = walk.session_id
    await harness.hear(walk)
    assert (await harness.ack(walk, "opening")).status == 201
    await media_events.party_lost(harness.deps, _sid(walk), "customer", "keepalive_timeout")
    assert await harness.state(walk) == "interrupted"
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                          json={"location": HERE})
    assert r.status == 200
    await harness.connect_media(walk, roles=("customer",))
    await harness.play_script(walk)
    await harness.record_call(walk)  # one segment per stream before and after the drop
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/complete")
    assert r.status == 200 and r.body["state"] == "completed", r.body


def test_only_the_interrupted_stretch_of_a_stream_may_be_missing_R30() -> None:
    """Unit: an interruption allows a hole from one keep-alive before it until the party's
    media connected again after the resume; a hole after that is still a gap."""
    from datetime import UTC, datetime

    from workflow.coverage import allowed_gaps, stream_gaps

    t0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    class E:
        def __init__(self, type_: str, s: float, role: str = "") -> None:
            self.type, self.at, self.data = type_, at(s), {"role": role}

    events = [E("interrupted", 70), E("call_resumed", 100), E("party_connected", 104, "agent"),
              E("party_connected", 106, "customer")]
    tolerance = timedelta(seconds=3)
    allowed = allowed_gaps(events, ("customer",), timedelta(seconds=13),  # type: ignore[arg-type]
                           tolerance)
    assert allowed == [(at(57), at(109))]
    # media stopped at 60 (lost), came back at 107: explained
    ok = [(at(-1), at(60)), (at(107), at(200))]
    assert stream_gaps(ok, (at(0), at(199)), allowed, tolerance, t0, "customer_av") == []
    # a second hole at 150-170, after the customer was back: a gap, named with its place
    holed = [(at(-1), at(60)), (at(107), at(150)), (at(170), at(200))]
    gaps = stream_gaps(holed, (at(0), at(199)), allowed, tolerance, t0, "customer_av")
    assert [(g.offset_s, g.seconds) for g in gaps] == [(150.0, 20.0)]
    assert gaps[0].describe() == "客户音视频在录制第 02:30 起缺失约 20 秒"
    # a hole shorter than the tolerance passes; the end must be covered too
    assert stream_gaps([(at(-1), at(50)), (at(52), at(196))], (at(0), at(199)), [], tolerance,
                       t0, "tts") == []
    tail = stream_gaps([(at(-1), at(150))], (at(0), at(199)), [], tolerance, t0, "tts")
    assert [(g.offset_s, g.seconds) for g in tail] == [(150.0, 49.0)]
