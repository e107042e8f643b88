"""R-30 through the API with real WebRTC parties: the customer's network drops mid-call, the
call is interrupted, the agent resumes within the window, the interrupted step is played again
from its start, no acknowledgement is lost, every segment is kept and the archive verifies."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import av
import pytest

from api.keys import CALL_HUB
from app.factory import speech_settings
from media.call import UnknownSession
from media.call.client import CallClient
from models.sessions import Acknowledgement, Recording, SessionEvent
from qa.playback import COPY_NAME, make_playback_copy, playback_folder
from testing.call_media import EncodedMedia, PrerecordedTrack, write_test_media
from tests.h5.test_call_e2e import _publish_short_script
from tests.harness import HERE, Harness, Walk
from tests.media_call.conftest import speaking_media
from tests.written import read_documents
from workflow.expiry import sweep
from workflow.sealing import verify_manifest
from workflow.speech import prepare_session_speech

pytestmark = pytest.mark.one_database


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # A dead peer is noticed after 6 s instead of 10 (3 s proved too eager on a loaded
    # machine: a late pong interrupted the resumed call), and segments are short.
    return {"call_keepalive_timeout_seconds": 6.0, "call_segment_seconds": 5.0}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> EncodedMedia:
    path = write_test_media(tmp_path_factory.mktemp("m") / "party.webm", seconds=4,
                            size=(320, 240), keyframe_interval=15, video_bitrate=300_000)
    return EncodedMedia.load(path)


@pytest.fixture(scope="module")
def agent_media(tmp_path_factory: pytest.TempPathFactory) -> EncodedMedia:
    """The agent speaks (espeak-ng), so the step the agent reads is heard (R-24)."""
    return EncodedMedia.load(speaking_media(tmp_path_factory.mktemp("agent")))


def _signal(harness: Harness, path: str, token: str) -> Callable[[str, str],
                                                                Awaitable[tuple[str, str]]]:
    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await harness.request("POST", path, token=token, json={"sdp": sdp, "type": type_})
        assert r.status == 200, r.body
        return r.body["sdp"], r.body["type"]

    return signal


async def _join(harness: Harness, media: EncodedMedia, path: str, token: str) -> CallClient:
    client = CallClient(audio=PrerecordedTrack(media, "audio"),
                        video=PrerecordedTrack(media, "video"))
    await client.connect(_signal(harness, path, token))
    await client.wait_open()
    return client


async def _until(predicate: Callable[[], Awaitable[Any]], what: str, seconds: float = 30) -> Any:
    for _ in range(int(seconds * 10)):
        if result := await predicate():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _answer(harness: Harness, walk: Walk, step_id: str) -> None:
    """Answers once the step's speech has played (answers wait for it, R-24)."""
    async def accepted() -> bool:
        r = await harness.ack(walk, step_id, event_id=f"ans-{step_id}")
        assert r.status in (200, 201, 409), r.body
        return r.status in (200, 201)

    await _until(accepted, f"the answer to {step_id}")


async def _state(harness: Harness, walk: Walk) -> str:
    return await harness.state(walk)


async def test_a_dropped_customer_resumes_without_losing_anything_R30(
    harness: Harness, media: EncodedMedia, agent_media: EncodedMedia, tmp_path: Path
) -> None:
    await _publish_short_script(harness)
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    await prepare_session_speech(harness.deps, speech_settings(harness.config), harness.redis,
                                 UUID(sid))
    agent_token = await harness.login("agent01")
    await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start", json={"location": HERE})
    agent = await _join(harness, agent_media, f"/calls/{sid}/agent/offer", agent_token)
    customer = await _join(harness, media, f"/calls/{sid}/customer/offer", walk.customer_token)
    await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    await _answer(harness, walk, "opening")

    # The customer's network drops: no more pongs, then the connection is gone.
    customer.answer_pings = False
    await customer.close()
    await _until(lambda: _is(harness, walk, "interrupted"), "the interruption", 30)
    r = await harness.ack(walk, "agent-identity")
    assert r.status == 409  # nothing is answered while the call is interrupted

    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                          json={"location": HERE})
    assert r.status == 200 and r.body["state"] == "disclosing"
    assert r.body["current_step"]["id"] == "agent-identity"  # replayed from its start
    customer = await _join(harness, media, f"/calls/{sid}/customer/offer", walk.customer_token)
    while (step := await harness.current_step(walk)) is not None:
        if step["answer"] == "show_document":
            await read_documents(harness, sid, walk.customer_token, advance=asyncio.sleep)
        if step["answer"] in ("signature", "handwritten_copy"):
            await _until(functools.partial(_spoken, sid, step["id"]), "the written step's speech")
            await harness.sign(walk)
        elif step["answer"] == "none":
            await _until(functools.partial(_moved_past, harness, walk, step["index"]),
                         "the closing words", 40)
        else:
            await _answer(harness, walk, step["id"])
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/complete")
    assert r.status == 200, r.body
    await customer.close()
    await agent.close()

    acks = await Acknowledgement.filter(session_id=sid).order_by("id").values_list(
        "step_id", flat=True)
    assert len(acks) == len(set(acks)) and acks[0] == "opening"
    resumed = await SessionEvent.get(session_id=sid, type="call_resumed")
    assert resumed.data["replay_step_id"] == "agent-identity" and resumed.data["gap_ms"] > 0
    segments = await Recording.filter(session_id=sid, kind="customer_av").order_by("segment")
    assert len(segments) >= 2  # before and after the drop, both kept
    result = await sweep(harness.deps)
    assert sid in {str(s) for s in result.sealed}
    assert await verify_manifest(harness.deps, UUID(sid)) == []

    # The QA playback copy is made from what the real recorder wrote: the whole span
    # including the gap, one video and one audio stream; the evidence is left as sealed.
    outcome = await make_playback_copy(harness.deps, UUID(sid))
    assert outcome.status == "made" and outcome.sidecar is not None
    assert outcome.sidecar["status"] == "ok", outcome.sidecar["problems"]
    everything = await Recording.filter(session_id=sid)
    ends = [r.ended_at for r in everything if r.ended_at is not None]
    assert len(ends) == len(everything)  # every segment closed
    span_ms = (max(ends) - min(r.started_at for r in everything)).total_seconds() * 1000
    with av.open(str(playback_folder(harness.files, sid) / COPY_NAME)) as copy:
        assert [s.type for s in copy.streams] == ["video", "audio"]
        assert copy.duration is not None
        assert abs(copy.duration / 1000 - span_ms) < 1500, (copy.duration, span_ms)
    assert await verify_manifest(harness.deps, UUID(sid)) == []


async def _is(harness: Harness, walk: Walk, state: str) -> bool:
    return await harness.state(walk) == state


async def _spoken(sid: str, step_id: str) -> bool:
    events = await SessionEvent.filter(session_id=sid, type="tts_played")
    return any(e.data["step_id"] == step_id and e.data["complete"] for e in events)


async def _moved_past(harness: Harness, walk: Walk, index: int) -> bool:
    step = await harness.current_step(walk)
    return step is None or step["index"] != index


async def test_the_room_of_a_call_that_expires_unresumed_is_freed_R30(
    harness: Harness, media: EncodedMedia
) -> None:
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start", json={"location": HERE})
    customer = await _join(harness, media, "/customer/call/offer", walk.customer_token)
    hub = harness.client.app[CALL_HUB]
    assert hub.recorder(sid) is not None  # the room is open
    customer.answer_pings = False
    await customer.close()
    await _until(lambda: _is(harness, walk, "interrupted"), "the interruption", 30)

    real = harness.deps.clock
    harness.deps.clock = lambda: real() + timedelta(minutes=31)  # past the resume window
    result = await sweep(harness.deps)
    assert sid in {str(s) for s in result.expired}

    def room_gone() -> Awaitable[bool]:
        async def check() -> bool:
            try:
                hub.recorder(sid)
            except UnknownSession:
                return True
            return False
        return check()

    await _until(room_gone, "the expired session's room to be closed", 15)
    assert hub.connected_roles(sid) == set()
