"""The call hub with real aiortc peer connections on loopback: relay, TTS, control channel and
keep-alive (R-20, R-23, R-24, R-30)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media.call import (
    ClipFinished,
    PartyConnected,
    PartyLost,
    PartyMessage,
    SignallingError,
    UnknownSession,
)
from media.call.ice import rtc_configuration
from tests.media_call.conftest import (
    AGENT_RGB,
    AGENT_TONE,
    CUSTOMER_RGB,
    CUSTOMER_TONE,
    SESSION,
    CallRig,
    corner_colour,
    decode_audio,
    decode_video,
    dominant_frequency,
    write_wav,
)


def close_to(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(colour, expected, strict=True))


async def test_r20_each_party_sees_and_hears_the_other(make_rig: Callable[..., CallRig]) -> None:
    rig = make_rig()
    customer = await rig.join("customer")
    agent = await rig.join("agent")
    await asyncio.sleep(2.5)

    assert rig.hub.connected_roles(SESSION) == {"customer", "agent"}
    for receiver, sender_rgb, sender_tone in (
        (agent, CUSTOMER_RGB, CUSTOMER_TONE),
        (customer, AGENT_RGB, AGENT_TONE),
    ):
        frames = decode_video(receiver.packets["video"])
        assert len(frames) >= 20  # ~15 fps, relayed without re-encoding
        assert (frames[-1].width, frames[-1].height) == (320, 240)
        assert close_to(corner_colour(frames[-1]), sender_rgb)
        audio = decode_audio(receiver.packets["audio"])
        assert len(audio) >= 48_000
        assert abs(dominant_frequency(audio[-48_000:]) - sender_tone) < 5
    assert {event.role for event in rig.events.of(PartyConnected)} == {"customer", "agent"}


async def test_r23_tts_clip_reaches_both_parties_and_is_reported_complete(
    make_rig: Callable[..., CallRig], tmp_path: Path
) -> None:
    rig = make_rig()
    customer = await rig.join("customer")
    agent = await rig.join("agent")
    clip = write_wav(tmp_path / "step-3.wav", seconds=1.0, tone_hz=1000.0)

    await rig.hub.play(SESSION, "step-3", clip)
    finished = await rig.events.wait_for(ClipFinished)
    await asyncio.sleep(0.3)  # the last packets are still on the wire

    assert finished == ClipFinished(SESSION, "step-3", 1000, 1000, True)
    for client in (customer, agent):
        tts = decode_audio(client.packets["tts"])
        loud = np.flatnonzero(abs(tts) > 0.05)
        tone = tts[loud[0] : loud[-1]]
        assert 0.95 * 48_000 <= len(tone) <= 1.05 * 48_000  # the whole second arrived
        assert abs(dominant_frequency(tone) - 1000) < 5
        kinds = [m["type"] for m in client.messages]
        assert kinds == ["tts_started", "tts_finished"]
        assert client.messages[1]["complete"] is True


async def test_r23_a_clip_replaced_by_the_next_is_reported_cut(
    make_rig: Callable[..., CallRig], tmp_path: Path
) -> None:
    rig = make_rig()
    await rig.join("customer")
    await rig.join("agent")
    long_clip = write_wav(tmp_path / "long.wav", seconds=3.0, tone_hz=500.0)
    short_clip = write_wav(tmp_path / "short.wav", seconds=0.4, tone_hz=700.0)

    await rig.hub.play(SESSION, "long", long_clip)
    await asyncio.sleep(0.6)
    await rig.hub.play(SESSION, "short", short_clip)
    cut = await rig.events.wait_for(ClipFinished, lambda e: e.clip_id == "long")
    done = await rig.events.wait_for(ClipFinished, lambda e: e.clip_id == "short")

    assert not cut.complete
    assert cut.duration_ms == 3000
    assert 400 <= cut.played_ms <= 1200
    assert done.complete and done.played_ms == done.duration_ms == 400

    await rig.hub.play(SESSION, "stopped", long_clip)
    await asyncio.sleep(0.2)
    await rig.hub.stop_clip(SESSION)
    stopped = await rig.events.wait_for(ClipFinished, lambda e: e.clip_id == "stopped")
    assert not stopped.complete and stopped.played_ms < 1000


async def test_r23_a_clip_the_customer_did_not_hear_to_the_end_is_incomplete(
    make_rig: Callable[..., CallRig], tmp_path: Path
) -> None:
    rig = make_rig()
    await rig.join("customer")
    await rig.join("agent")
    clip = write_wav(tmp_path / "step.wav", seconds=1.5, tone_hz=500.0)

    await rig.hub.play(SESSION, "step", clip)
    await asyncio.sleep(0.5)
    await rig.hub.leave(SESSION, "customer")
    finished = await rig.events.wait_for(ClipFinished)

    assert not finished.complete
    assert 300 <= finished.played_ms <= 900


async def test_r30_keepalive_reports_a_party_that_goes_silent(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig(keepalive_interval=0.3, keepalive_timeout=1.5)
    await rig.join("customer", answer_pings=False)  # a frozen page: connected, never answers
    await rig.join("agent")

    lost = await rig.events.wait_for(PartyLost, seconds=5)

    assert lost == PartyLost(SESSION, "customer", "keepalive_timeout")
    assert rig.hub.connected_roles(SESSION) == {"agent"}
    await asyncio.sleep(2)
    assert len(rig.events.of(PartyLost)) == 1  # the agent, answering pings, stays


async def test_r30_a_party_whose_connection_closes_is_reported_lost(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig()
    customer = await rig.join("customer")
    await rig.join("agent")

    await customer.close()  # the phone's browser is gone, nobody called leave()
    lost = await rig.events.wait_for(PartyLost, seconds=5)

    assert lost.role == "customer"
    assert lost.reason in ("connection_closed", "keepalive_timeout")


async def test_r24_control_messages_go_both_ways(make_rig: Callable[..., CallRig]) -> None:
    rig = make_rig()
    customer = await rig.join("customer")
    agent = await rig.join("agent")

    sent = await rig.hub.push(SESSION, {"type": "step", "step_id": "s3", "text": "犹豫期15日"},
                              role="customer")
    await rig.hub.push(SESSION, {"type": "progress", "step": 3})
    customer.send({"type": "acknowledge", "step_id": "s3", "answer": "yes"})
    customer.channel.send("not json")  # dropped at the edge, never reaches the workflow
    message = await rig.events.wait_for(PartyMessage)
    await asyncio.sleep(0.3)

    assert sent == 1
    assert message == PartyMessage(SESSION, "customer",
                                   {"type": "acknowledge", "step_id": "s3", "answer": "yes"})
    assert len(rig.events.of(PartyMessage)) == 1
    assert [m["type"] for m in customer.messages] == ["step", "progress"]
    assert customer.messages[0]["text"] == "犹豫期15日"
    assert [m["type"] for m in agent.messages] == ["progress"]
    with pytest.raises(UnknownSession):
        await rig.hub.push("no-such-session", {"type": "x"})


async def test_r20_offers_without_the_tts_line_or_data_channel_are_refused(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig()
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="sendrecv")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        with pytest.raises(SignallingError, match="2nd audio"):
            await rig.hub.join(SESSION, "customer", pc.localDescription.sdp, "offer")
        with pytest.raises(SignallingError, match="offer"):
            await rig.hub.join(SESSION, "customer", pc.localDescription.sdp, "answer")
        with pytest.raises(ValueError, match="session id"):
            await rig.hub.join("../etc", "customer", pc.localDescription.sdp, "offer")
    finally:
        await pc.close()


async def test_loopback_candidate_is_offered_when_configured(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig(include_loopback=True)
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        sdp, type_ = await rig.hub.join(SESSION, "customer", pc.localDescription.sdp, "offer")
        assert type_ == "answer"
        assert " 127.0.0.1 " in sdp
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=type_))
    finally:
        await pc.close()


def test_control_message_parsing() -> None:
    from media.call.messages import InvalidMessage, Ping, parse_incoming

    assert parse_incoming('{"type":"ping","seq":3}') == Ping(seq=3)
    assert parse_incoming(json.dumps({"type": "ack", "x": 1})) == {"type": "ack", "x": 1}
    for bad in ("[]", '{"x":1}', '{"type":"ping"}', "{", "x" * 70_000):
        with pytest.raises(InvalidMessage):
            parse_incoming(bad)


async def test_r23_a_clip_is_complete_only_if_the_customer_was_alive_at_its_end(
    make_rig: Callable[..., CallRig], tmp_path: Path
) -> None:
    rig = make_rig(keepalive_interval=0.3, keepalive_timeout=1.5)
    customer = await rig.join("customer")
    await rig.join("agent")
    customer.answer_pings = False  # the page froze; its connection still looks up

    await rig.hub.play(SESSION, "step", write_wav(tmp_path / "s.wav", seconds=0.5, tone_hz=500))
    finished = await rig.events.wait_for(ClipFinished, seconds=5)

    assert finished.played_ms == finished.duration_ms == 500  # every packet went out...
    assert not finished.complete  # ...but nobody confirmed hearing the end
    lost = await rig.events.wait_for(PartyLost)
    assert lost == PartyLost(SESSION, "customer", "keepalive_timeout")
