"""R-13 fed from the live call: the hub samples the customer's VP8 video (key frames asked for
with a PLI and decoded alone, in a worker thread) for the presence monitor, whose marks go on the
session's timeline at their time in the recording.

Every call here is a real aiortc connection; the customer's camera is a track whose frames aiortc
encodes to VP8 as it goes (as a browser does, key frames only when asked for), made from real
face photos (testing.face_photos).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any
from uuid import UUID

import av
import cv2
import numpy as np
import pytest
import pytest_asyncio
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from api.keys import CALL_HUB
from media.call import CallHub, CallHubConfig
from media.call.client import CallClient
from media.call.hub import RoomClosed
from media.call.presence import Frame, VideoSampler
from media.identity.imaging import encode_jpeg
from media.identity.presence_host import PresenceHost, PresenceHostError
from media.recording.packets import VP8_CLOCK_RATE, EncodedPacket
from models.sessions import SessionEvent
from qa.checks import CheckInput, check_presence
from qa.settings import QaSettings
from qa.timeline import load_timeline
from testing import identity_material as synth
from testing.call_media import EncodedMedia, PrerecordedTrack
from testing.face_photos import load_sample
from tests.harness import HERE, Harness
from workflow.evidence import EvidenceStore
from workflow.media_events import live_face_path

pytestmark = pytest.mark.one_database

SESSION = "s-presence-1"
CORNER_RGB = (220, 30, 30)


class CameraTrack(MediaStreamTrack):
    """A camera filming ``pictures[scene]``; the test changes ``scene`` as the call goes. aiortc
    encodes the frames (VP8; a key frame only when the far end sends a PLI, as browsers do).
    ``shown`` lists each scene with the wall-clock time of its first frame (by the frames' own
    clock, the one their RTP timestamps carry)."""

    kind = "video"

    def __init__(self, pictures: dict[str, Frame], scene: str, fps: int = 10) -> None:
        super().__init__()
        self.pictures = pictures
        self.scene = scene
        self.shown: list[tuple[str, float]] = []
        self._fps = fps
        self._index = 0
        self._start: float | None = None
        self._start_wall = 0.0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start, self._start_wall = time.monotonic(), time.time()
        at = self._index / self._fps
        delay = self._start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._index += 1
        scene = self.scene
        if not self.shown or self.shown[-1][0] != scene:
            self.shown.append((scene, self._start_wall + at))
        frame = av.VideoFrame.from_ndarray(self.pictures[scene], format="bgr24").reformat(
            format="yuv420p")
        frame.pts = round(at * VP8_CLOCK_RATE)
        frame.time_base = Fraction(1, VP8_CLOCK_RATE)
        return frame


def _flat_camera(fps: int = 15) -> CameraTrack:
    picture = np.full((240, 320, 3), 128, np.uint8)
    picture[:120, :160] = CORNER_RGB[::-1]  # BGR
    return CameraTrack({"flat": picture}, "flat", fps)


# ------------------------------------------------------------------ the sampler in the hub


@dataclass
class Rig:
    hub: CallHub
    closed: list[RoomClosed] = field(default_factory=list)
    clients: list[CallClient] = field(default_factory=list)

    async def join(self, audio: EncodedMedia) -> CallClient:
        client = CallClient(audio=PrerecordedTrack(audio, "audio"),
                            video=_flat_camera())
        self.clients.append(client)

        async def signal(sdp: str, type_: str) -> tuple[str, str]:
            return await self.hub.join(SESSION, "customer", sdp, type_)

        await client.connect(signal)
        await client.wait_open()
        return client


@pytest_asyncio.fixture
async def rig(tmp_path: Any) -> AsyncIterator[Rig]:
    closed: list[RoomClosed] = []
    rig = Rig(CallHub(CallHubConfig(storage_root=tmp_path, record=False, include_loopback=True,
                                    keepalive_interval=0.3, keepalive_timeout=5.0),
                      on_room_closed=closed.append), closed)
    yield rig
    await rig.hub.shutdown()
    for client in rig.clients:
        await client.close()


async def _until(predicate: Callable[[], Any], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Probe:
    """An analysis that records what it was given, optionally held until released."""

    samples: list[tuple[float, tuple[int, ...], tuple[int, int, int], bool]] = field(
        default_factory=list)
    delivered: list[float] = field(default_factory=list)
    hold: threading.Event | None = None
    running: int = 0
    max_running: int = 0

    def analyse(self, t: float, image: Frame) -> float:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            hold = self.hold
            if hold is not None:
                hold.wait(30)
            corner = image[image.shape[0] // 8: image.shape[0] // 3,
                           image.shape[1] // 8: image.shape[1] // 3].reshape(-1, 3).mean(axis=0)
            bgr = (round(corner[0]), round(corner[1]), round(corner[2]))
            on_worker = threading.current_thread() is not threading.main_thread()
            self.samples.append((t, image.shape, bgr, on_worker))
            return t
        finally:
            self.running -= 1


async def test_r13_sampler_decodes_requested_key_frames_only_off_the_loop_and_follows_rejoins(
    rig: Rig, party_media: dict[str, EncodedMedia]
) -> None:
    origin = time.time()
    first = await rig.join(party_media["customer"])
    probe = Probe()
    sampler: VideoSampler[float] = rig.hub.watch_video(
        SESSION, "customer", probe.analyse, sample_fps=2.0, origin=origin,
        on_result=probe.delivered.append)
    await _until(lambda: len(probe.delivered) >= 6, "six samples")

    # Two a second, asked for: aiortc's VP8 encoder makes a key frame only on a PLI.
    times = [s[0] for s in probe.samples]
    assert probe.delivered == times[: len(probe.delivered)]  # in order, in the loop
    gaps = np.diff(times)
    assert gaps.min() >= 0.5 - 1e-6, gaps  # never faster than sample_fps
    assert gaps[:5].mean() < 1.5, gaps  # and key frames came on request (none without)
    stats = sampler.stats
    assert stats.keyframe_requests >= 5
    # Only key frames are decoded: one per sample, while every packet was consumed.
    assert stats.samples == len(probe.samples) <= stats.keyframes < stats.packets / 3
    assert stats.decode_errors == stats.analyse_errors == 0
    shape, bgr, on_worker = probe.samples[0][1:]
    assert shape == (240, 320, 3) and on_worker
    assert all(abs(a - b) < 12 for a, b in zip(bgr, CORNER_RGB[::-1], strict=True)), bgr
    # t is the frame's time from the origin (the recording clock): close to now.
    assert times[0] >= 0 and times[-1] <= time.time() - origin + 1.0

    # A slow analysis never blocks the loop and never queues: key frames that come meanwhile
    # are dropped, one sample is in flight at a time.
    probe.hold = threading.Event()
    await _until(lambda: probe.running == 1, "the held sample")
    packets, dropped = stats.packets, stats.dropped_busy
    fanout = rig.hub._room(SESSION).sources[("customer", "video")]
    deadline = time.monotonic() + 30
    while stats.dropped_busy < dropped + 3:
        # Key frames someone else asks for (the recorder, the agent) are dropped, not queued.
        assert time.monotonic() < deadline, "no key frame came while the sample was held"
        fanout.request_keyframe()
        await asyncio.sleep(0.2)
    await _until(lambda: stats.packets > packets + 30, "packets while the sample is held")
    assert probe.max_running == 1
    probe.hold.set()
    probe.hold = None
    count = len(probe.delivered)
    await _until(lambda: len(probe.delivered) >= count + 2, "samples after the slow one")

    # The customer leaves: the sampler unsubscribes and stops asking.
    await rig.hub.leave(SESSION, "customer")
    await first.close()
    assert sampler.attached_epoch is None
    seen, requests = stats.packets, stats.keyframe_requests
    fanout.publish(EncodedPacket("video", b"\x00" * 10, 0, VP8_CLOCK_RATE, True, time.time(), 0))
    assert stats.packets == seen
    assert fanout._subscribers == []  # nobody else is in this room
    await asyncio.sleep(1.2)  # longer than a sample period: nothing may be asked meanwhile
    assert stats.keyframe_requests == requests

    # A rejoin is a new epoch (new RTP clock, new decoder): sampling simply goes on.
    before, last_t = len(probe.delivered), probe.delivered[-1]
    await rig.join(party_media["customer"])
    assert sampler.attached_epoch is not None
    await _until(lambda: len(probe.delivered) >= before + 3, "samples after the rejoin")
    assert probe.delivered[before] > last_t + 1.2  # the clock went on across the gap

    # Closing the room closes the sampler (after its last result) and reports the room.
    await rig.hub.close(SESSION)
    assert sampler.attached_epoch is None and fanout._subscribers == []
    assert rig.closed == [RoomClosed(SESSION)]
    assert len(probe.delivered) == len(probe.samples) == stats.samples


# ------------------------------------------------------------------ through the application



@pytest.fixture(scope="module")
def faces() -> dict[str, Frame]:
    from media.identity.service import IdentityService

    detector = IdentityService().matcher  # the frames are built with their own engine copy

    def selfie(name: str) -> Frame:
        photo = load_sample(name)
        box = detector.detect(photo)[0]
        return synth.selfie_frame(photo, (box.x, box.y, box.w, box.h))

    customer, other = selfie("obama.jpg"), selfie("astronaut.png")
    return {
        "reference": selfie("obama2.jpg"),  # the live face kept by the identity check
        "customer": customer,
        "crowded": synth.paste(customer, cv2.resize(other, (160, 213)), (0, 0), 213),
    }


def _signal(harness: Harness, token: str) -> Callable[[str, str], Awaitable[tuple[str, str]]]:
    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await harness.request("POST", "/customer/call/offer", token=token,
                                  json={"sdp": sdp, "type": type_})
        assert r.status == 200, r.body
        return r.body["sdp"], r.body["type"]

    return signal


async def _marks(sid: str) -> list[dict[str, Any]]:
    events = await SessionEvent.filter(session_id=sid, type="presence_mark").order_by("seq")
    return [e.data for e in events]


async def _until_marks(sid: str, count: int, seconds: float = 90) -> None:
    for _ in range(int(seconds * 5)):
        if len(await _marks(sid)) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} presence marks not written: {await _marks(sid)}")


async def test_r13_a_second_face_in_the_call_is_marked_on_the_timeline_at_its_time(
    harness: Harness, faces: dict[str, Frame], party_media: dict[str, EncodedMedia],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="workflow.call_followers")
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    # What the identity job keeps of a passed attempt: the matched live face (encrypted).
    await EvidenceStore(harness.deps.storage, harness.deps.cipher).put(
        live_face_path(UUID(sid), 1), encode_jpeg(faces["reference"], 92))
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start",
                          json={"location": HERE})
    assert r.status == 200, r.body
    origin = datetime.fromisoformat(
        (await harness.as_("qa01", "GET", f"/sessions/{sid}")).body["recording_started_at"]
    ).timestamp()

    hub = harness.app[CALL_HUB]
    camera = CameraTrack({"alone": faces["customer"], "crowded": faces["crowded"]}, "alone")
    customer = CallClient(audio=PrerecordedTrack(party_media["customer"], "audio"), video=camera)
    try:
        await customer.connect(_signal(harness, walk.customer_token))
        await customer.wait_open()
        await _until(lambda: hub.video_samplers(sid), "the presence sampler", 60)
        stats = hub.video_samplers(sid)[0].stats
        # Conditions, not fixed times: on a busy machine a sample takes seconds.
        await _until(lambda: stats.samples >= 3, "three samples of the customer alone", 60)
        camera.scene = "crowded"  # someone sits down beside the customer
        await _until_marks(sid, 1)
        camera.scene = "alone"
        await _until_marks(sid, 2)
        taken = stats.samples
        await _until(lambda: stats.samples >= taken + 3, "three more samples alone", 60)
        await hub.close(sid)
    finally:
        await customer.close()

    marks = await _marks(sid)
    assert [m["type"] for m in marks] == ["second_face_appeared", "second_face_gone"], marks
    # at_s is the time in the recording: from recording_started_at, by the frames' clock. A
    # mark is dated by the first sample that saw the change: at most one gap between samples
    # (plus the first frame's transit, which anchors the clock) after the picture changed.
    assert [scene for scene, _ in camera.shown] == ["alone", "crowded", "alone"]
    crowded_at, alone_at = (at - origin for _, at in camera.shown[1:])
    late = stats.max_gap_s + 0.5
    assert crowded_at - 0.1 <= marks[0]["at_s"] <= crowded_at + late, (marks, crowded_at, stats)
    assert alone_at - 0.1 <= marks[1]["at_s"] <= alone_at + late, (marks, alone_at, stats)
    assert marks[0]["faces"] == 2 and marks[1]["faces"] == 1
    assert marks[0]["message"] == "画面中出现第二张人脸"
    assert set(marks[0]) == {"type", "at_s", "message", "faces", "distance"}
    assert stats.decode_errors == stats.analyse_errors == 0

    # What the QA side reads of them: the same marks, in ms, and a second-face finding.
    timeline = await load_timeline(UUID(sid))
    assert [(p.type, p.at_ms) for p in timeline.presence] == [
        (m["type"], round(m["at_s"] * 1000)) for m in marks]
    findings = check_presence(CheckInput(timeline, None, None, QaSettings()))  # type: ignore[arg-type]
    assert [f.code for f in findings] == ["second_face"]
    assert findings[0].details["until_ms"] == round(marks[1]["at_s"] * 1000)
    # The monitor's report is logged when the room closes.
    assert any("presence failed (second_face)" in r.getMessage() for r in caplog.records)


async def test_r13_no_sampling_without_a_verified_live_face(
    harness: Harness, party_media: dict[str, EncodedMedia], caplog: pytest.LogCaptureFixture
) -> None:
    """Identity reported without the engines' evidence: logged once, nothing sampled."""
    caplog.set_level("INFO", logger="workflow.call_followers")
    walk = await harness.walk_to("in_call")
    sid = walk.session_id
    hub = harness.app[CALL_HUB]
    clients = []
    try:
        for _ in range(2):  # the second connection replaces the first: a rejoin
            customer = CallClient(audio=PrerecordedTrack(party_media["customer"], "audio"),
                                  video=_flat_camera(10))
            clients.append(customer)
            await customer.connect(_signal(harness, walk.customer_token))
            await customer.wait_open()
        assert hub._room(sid).samplers == []
        await hub.close(sid)  # returns once the hub's callbacks (both connections') are done
    finally:
        for customer in clients:
            await customer.close()
    logged = [r for r in caplog.records if "not checked" in r.getMessage()]
    assert len(logged) == 1 and "no live face stored for attempt 1" in logged[0].getMessage()
    assert await _marks(sid) == []


def test_r13_presence_host_runs_monitors_in_a_child_and_survives_its_death(
    faces: dict[str, Frame],
) -> None:
    """Face analysis holds the GIL, so the hub's monitors run in a child process."""
    host = PresenceHost()
    try:
        with pytest.raises(PresenceHostError, match="no face"):
            host.open("blank", encode_jpeg(np.full((480, 640, 3), 200, np.uint8)))
        assert host.open("room-1", encode_jpeg(faces["reference"], 92)) == 1.0
        marks = [m for t in range(3) for m in host.add_frame("room-1", float(t), faces["crowded"])]
        assert [(m.type, m.at_s, m.faces) for m in marks] == [("second_face_appeared", 0.0, 2)]
        child = host._process
        assert child is not None and child.pid != os.getpid()
        child.kill()
        child.wait()
        # The next call starts a new child and re-creates the monitor from its reference.
        assert host.add_frame("room-1", 3.0, faces["customer"]) == []
        assert host._process is not None and host._process.pid != child.pid
        report = host.finish("room-1", 4.0)
        assert report.samples == 1 and report.marks == []  # what came before the crash is lost
        with pytest.raises(PresenceHostError, match="room-1"):
            host.add_frame("room-1", 5.0, faces["customer"])  # finished: no such monitor
    finally:
        host.shutdown()
    assert child.returncode is not None and host._process is None
