"""R-12 / issue 15 item 1: liveness challenges given over the call's data channel and judged on
the frames the server receives in the customer's WebRTC stream, by the server's clock.

Real aiortc connections; the customer's camera is a track that aiortc encodes to VP8 as it goes
(as a browser does), playing synthetic face material (testing.identity_material: a selfie of a
package photo, camera shake and noise on every frame; a blink is cloned skin with a drawn lid
line). The judge is the presence host's child process (dlib off the hub's GIL). The dev/test
plan is a blink: turns and open mouths of a face synthesized from one photo are rightly
refused by the flat-photo checks (docs/identity.md).

The face match against the card portrait is made on the same frames (the uploaded clip is no
longer the evidence): the customer in the call is a package photo of one person (obama.jpg);
the card portrait another photo of the same person (obama2.jpg) or of someone else (biden.jpg),
cropped as on a card.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
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
from media.call.live_liveness import ChallengeRun, LiveChallengeConfig, run_challenge
from media.identity.config import IdentityConfig, LivenessConfig
from media.identity.imaging import Frame, encode_jpeg
from media.identity.presence_host import PresenceHost
from media.identity.results import Challenge, ChallengePlan
from media.recording.packets import VP8_CLOCK_RATE
from models.sessions import RecordingSession, SessionEvent
from testing import identity_material as synth
from testing.call_media import EncodedMedia, PrerecordedTrack
from testing.face_photos import load_sample
from tests.harness import HERE, Harness, Walk
from workflow import live_liveness
from workflow.evidence import EvidenceStore
from workflow.live_liveness import live_call_face_path, portrait_path
from workflow.media_events import live_face_path, presence_reference

SESSION = "s-live-liveness-1"
FPS = 10  # a phone's camera on a weak network; also less CPU for this shared machine
LIMIT_S = 6.0  # as in production (LivenessConfig.time_limit_s)


@dataclass
class FaceClips:
    neutral: list[Frame]  # the customer looking at the camera: shake and noise, no action
    blink: list[Frame]  # a blink, with a short lead-in and a pause after
    still: Frame  # one picture, never changing (a photo fed as a camera)


@pytest.fixture(scope="module")
def clips() -> FaceClips:
    from media.identity.service import IdentityService

    service = IdentityService()
    photo = load_sample("obama.jpg")
    box = service.matcher.detect(photo)[0]
    base = synth.selfie_frame(photo, (box.x, box.y, box.w, box.h))
    obs = service.landmarker.observe(base)
    assert obs.landmarks is not None
    pts = obs.landmarks * (base.shape[1] / min(base.shape[1], 480))
    rng = np.random.default_rng(4)
    closed = synth.close_eyes(base, pts)
    # Deliberate blinks, as people do when asked to (most blink twice; the lids shut for most
    # of a second): on this shared machine the judge sees only some frames (docs/identity.md).
    blink = [synth.jitter(picture, rng) for picture, seconds in
             ((base, 0.4), (closed, 0.8), (base, 0.8), (closed, 0.8), (base, 1.0))
             for _ in range(round(seconds * FPS))]
    return FaceClips(neutral=[f for _, f in synth.still_clip(base, 2.0, fps=FPS, seed=5)],
                     blink=blink, still=base)


def card_portrait(name: str) -> bytes:
    """A card-style crop (head and shoulders, 3:4) of a package photo, as a JPEG."""
    from media.identity.service import IdentityService

    photo = load_sample(name)
    box = IdentityService().matcher.detect(photo)[0]
    return encode_jpeg(synth.crop_portrait(photo, (box.x, box.y, box.w, box.h)), 92)


@pytest.fixture(scope="module")
def portraits() -> dict[str, bytes]:
    return {"same": card_portrait("obama2.jpg"), "other": card_portrait("biden.jpg")}


class FaceCamera(MediaStreamTrack):
    """Plays ``idle`` in a loop; once ``trigger()`` is true, plays ``then`` once and goes back
    to ``after`` (default: ``idle``); when ``trigger()`` counts (an int), plays ``then`` again
    each time the count grows (the customer does what each new challenge asks). ``switched_at``:
    the frames' own wall-clock time of the first frame of ``then`` the last time (the clock
    their RTP timestamps carry). ``stall``: stop sending frames once switched (a stream that
    stops)."""

    kind = "video"

    def __init__(self, idle: list[Frame], then: list[Frame] | None = None,
                 after: list[Frame] | None = None,
                 trigger: Callable[[], bool | int] = lambda: False,
                 stall: bool = False) -> None:
        super().__init__()
        self._then, self._after = then or [], after or idle
        self._trigger, self._stall = trigger, stall
        self._frames: Iterator[Frame] = _chain([], idle)
        self._switches = 0
        self.switched_at: float | None = None  # by the frames' clock
        self.switched_real: float | None = None  # by the machine's clock
        self._index = 0
        self.frames = 0
        self._start: float | None = None
        self._start_wall = 0.0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start, self._start_wall = time.monotonic(), time.time()
        at = self._index / FPS
        delay = self._start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if int(self._trigger()) > self._switches:
            self._switches = int(self._trigger())
            self.switched_at = self._start_wall + at
            self.switched_real = time.time()
            if self._stall:
                await asyncio.sleep(3600)
            self._frames = _chain(self._then, self._after)
        self._index += 1
        self.frames += 1
        picture = next(self._frames)
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
        frame.pts = round(at * VP8_CLOCK_RATE)
        frame.time_base = Fraction(1, VP8_CLOCK_RATE)
        return frame


def _chain(once: list[Frame], loop: list[Frame]) -> Iterator[Frame]:
    yield from once
    while True:
        yield from loop


@pytest.fixture(scope="module")
def judge() -> Iterator[PresenceHost]:
    """The presence host's child process, with the test profile's blink-only plan."""
    host = PresenceHost(IdentityConfig(liveness=LivenessConfig(challenges=(Challenge.BLINK,))))
    # Engines loaded before the first call (the application's host is up by then, presence).
    host.live_open("warm-up", ChallengePlan(challenges=[Challenge.BLINK], time_limit_s=1.0))
    host.live_drop("warm-up")
    yield host
    host.shutdown()


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[CallHub]:
    hub = CallHub(CallHubConfig(storage_root=tmp_path, record=False, include_loopback=True,
                                keepalive_interval=0.5, keepalive_timeout=10.0))
    yield hub
    await hub.shutdown()


@dataclass
class Customer:
    client: CallClient
    camera: FaceCamera
    sent: list[dict[str, Any]] = field(default_factory=list)


def challenged(client: CallClient) -> Callable[[], bool]:
    """True once the customer's channel has delivered a challenge."""
    return lambda: any(m.get("type") == "liveness_challenge" for m in client.messages)


def challenges_seen(client: CallClient) -> int:
    """How many challenges the customer's channel has delivered."""
    return sum(1 for m in client.messages if m.get("type") == "liveness_challenge")


async def _join(hub: CallHub, media: EncodedMedia,
                make_camera: Callable[[Callable[[], bool]], FaceCamera]) -> Customer:
    received: list[CallClient] = []
    camera = make_camera(lambda: bool(received) and challenged(received[0])())
    client = CallClient(audio=PrerecordedTrack(media, "audio"), video=camera)
    received.append(client)

    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        return await hub.join(SESSION, "customer", sdp, type_)

    await client.connect(signal)
    await client.wait_open()
    return Customer(client, camera)


async def _challenge(hub: CallHub, judge: PresenceHost, customer: Customer,
                     portrait: bytes | None = None) -> ChallengeRun:
    async def send(message: dict[str, Any]) -> None:
        customer.sent.append(message)
        await hub.push(SESSION, message, "customer")

    return await run_challenge(hub.video_source(SESSION, "customer"), send, judge,
                               Challenge.BLINK, LIMIT_S, key=f"{SESSION}/1",
                               config=LiveChallengeConfig(), portrait=portrait)


@pytest.mark.timeout(90)
async def test_r12_blink_asked_over_the_data_channel_and_done_after_it_passes(
    hub: CallHub, judge: PresenceHost, clips: FaceClips, party_media: dict[str, EncodedMedia],
) -> None:
    customer = await _join(hub, party_media["customer"], lambda c: FaceCamera(
        clips.neutral, then=clips.blink, trigger=c))
    try:
        run = await _challenge(hub, judge, customer)
    finally:
        await customer.client.close()
    assert run.passed, ([t for t in run.frame_times if t >= 0], run.result.challenges, run.thinned,
                        (customer.camera.switched_real or 0) - (run.sent_at or 0))
    assert run.failure is None and run.sent_at is not None
    # The message the page got: what to do, by when (server clock), in Chinese.
    (message,) = customer.sent
    assert message["type"] == "liveness_challenge" and message["action"] == "blink"
    assert message["instruction"] == "请眨眨眼" and message["time_limit_ms"] == 6000
    assert message["deadline"] == round((run.sent_at + LIMIT_S) * 1000)
    await _until(challenged(customer.client), "the challenge on the customer's channel")
    # The action began after the challenge went out and was seen within its limit.
    assert customer.camera.switched_real is not None
    assert customer.camera.switched_real >= run.sent_at
    done = run.completed_at_s
    assert done is not None and 0 < done <= LIMIT_S
    # Baseline frames before the challenge, judged ones after, at about the camera's rate.
    assert min(run.frame_times) < 0 < max(run.frame_times)
    assert run.max_gap_s <= LiveChallengeConfig().max_frame_gap_s
    assert run.decoded >= len(run.frame_times)
    assert run.summary()["passed"] is True


@pytest.mark.timeout(90)
async def test_r12_blink_done_before_the_challenge_fails(
    hub: CallHub, judge: PresenceHost, clips: FaceClips, party_media: dict[str, EncodedMedia],
) -> None:
    """A clip that blinks on its own (made in advance) and stops once the challenge comes."""
    customer = await _join(hub, party_media["customer"], lambda c: FaceCamera(
        clips.blink, then=[], after=clips.neutral, trigger=c))
    try:
        run = await _challenge(hub, judge, customer)
    finally:
        await customer.client.close()
    assert not run.passed and run.completed_at_s is None, run.result
    # Normally a time-out; on a starved machine the stream may stall first (also a failure).
    assert run.result.reason_code in ("challenge_timeout", "stream_gap"), run.result
    if run.result.reason_code == "challenge_timeout":
        assert run.result.reason == "未在规定时间内完成「眨眼」动作，请按提示重新操作"
    assert max(run.frame_times) <= LIMIT_S + 0.01


@pytest.mark.timeout(90)
async def test_r12_still_photo_as_camera_fails(
    hub: CallHub, judge: PresenceHost, clips: FaceClips, party_media: dict[str, EncodedMedia],
) -> None:
    customer = await _join(hub, party_media["customer"],
                           lambda c: FaceCamera([clips.still]))
    try:
        # aiortc's encoder refines a still picture over its first seconds (as a browser's
        # does): the photo is shown for a while before the server asks.
        await _until(lambda: customer.camera.frames >= 3 * FPS, "three seconds of the photo")
        run = await _challenge(hub, judge, customer)
    finally:
        await customer.client.close()
    # Frozen, normally; on a starved machine (the encoder's quality steps between sparse
    # judged frames) it may run into its time limit instead: it never passes either way.
    assert not run.passed, run
    assert run.result.reason_code in ("frozen", "challenge_timeout"), run.result
    if run.failure == "frozen":
        assert "静止" in (run.result.reason or "")


@pytest.mark.timeout(90)
async def test_r12_a_stream_that_stops_after_the_challenge_fails(
    hub: CallHub, judge: PresenceHost, clips: FaceClips, party_media: dict[str, EncodedMedia],
) -> None:
    customer = await _join(hub, party_media["customer"], lambda c: FaceCamera(
        clips.neutral, then=clips.blink, trigger=c, stall=True))
    try:
        run = await _challenge(hub, judge, customer)
    finally:
        await customer.client.close()
    assert not run.passed and run.failure == "stream_gap", run
    assert "中断" in (run.result.reason or "")


@pytest.mark.timeout(60)
async def test_r12_the_card_holder_in_the_call_passes_with_the_score_on_the_run(
    hub: CallHub, judge: PresenceHost, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes],
) -> None:
    customer = await _join(hub, party_media["customer"], lambda c: FaceCamera(
        clips.neutral, then=clips.blink, trigger=c))
    try:
        run = await _challenge(hub, judge, customer, portrait=portraits["same"])
    finally:
        await customer.client.close()
    assert run.passed, run.result
    match = run.result.face_match
    assert match is not None and match.passed and match.reason_code is None, match
    # The identity step's engine and threshold (IdentityConfig defaults: dlib-chip, 0.54).
    assert match.metric == "euclidean" and match.threshold == pytest.approx(0.54)
    assert match.distance is not None and match.distance < match.threshold
    summary = run.summary()["face_match"]
    assert summary["passed"] and summary["distance"] == match.distance
    assert summary["engine"].startswith("dlib")


@pytest.mark.timeout(60)
async def test_r12_another_persons_card_fails_the_live_run_whatever_the_actions_showed(
    hub: CallHub, judge: PresenceHost, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes],
) -> None:
    customer = await _join(hub, party_media["customer"], lambda c: FaceCamera(
        clips.neutral, then=clips.blink, trigger=c))
    try:
        run = await _challenge(hub, judge, customer, portrait=portraits["other"])
    finally:
        await customer.client.close()
    # The blink itself was performed in time; the face is not the card's.
    (outcome,) = run.result.challenges
    assert outcome.passed and outcome.completed_at_s is not None, run.result
    assert 0 < outcome.completed_at_s <= LIMIT_S
    assert not run.passed and run.result.reason_code == "card_face_mismatch", run.result
    assert run.result.reason is not None and "身份证上的本人" in run.result.reason
    match = run.result.face_match
    assert match is not None and not match.passed and match.reason_code == "face_mismatch"
    assert match.distance is not None and match.distance > match.threshold


async def _until(predicate: Callable[[], Any], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_frozen_threshold_is_far_below_camera_noise(clips: FaceClips) -> None:
    """What `frozen_diff` separates: consecutive frames of the (noisy, shaking) camera differ
    by far more than it (a frozen stream needs 1.5 s of frames below it)."""
    import cv2

    def thumb(frame: Frame) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return cv2.resize(gray, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)

    diffs = [float(np.abs(thumb(a) - thumb(b)).mean())
             for a, b in zip(clips.neutral, clips.neutral[1:], strict=False)]
    threshold = LiveChallengeConfig().frozen_diff
    assert min(diffs) > 2 * threshold and float(np.median(diffs)) > 10 * threshold, diffs


# ------------------------------------------------------------------ through the application


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """The production policy (the test profile does not require the live check by default);
    two runs, a short pause between them."""
    return {"live_liveness_required": True, "live_liveness_max_attempts": 2,
            "live_liveness_retry_seconds": 0.3}


def _signal_to(harness: Harness, path: str, token: str) -> Callable[[str, str], Any]:
    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await harness.request("POST", path, token=token, json={"sdp": sdp, "type": type_})
        assert r.status == 200, r.body
        return r.body["sdp"], r.body["type"]

    return signal


async def _events(sid: str, *types: str) -> list[SessionEvent]:
    return await SessionEvent.filter(session_id=sid, type__in=types).order_by("seq")


async def _until_event(sid: str, type_: str, count: int = 1, seconds: float = 150) -> None:
    deadline = time.monotonic() + seconds
    while len(await _events(sid, type_)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {type_} on the timeline: "
                f"{[(e.type, e.data) for e in await _events(sid, *LIVE)]}; events: "
                f"{[e.type for e in await SessionEvent.filter(session_id=sid).order_by('seq')]}")
        await asyncio.sleep(0.2)


LIVE = ("live_liveness_started", "live_liveness_passed", "live_liveness_failed")


def _final_result(m: dict[str, Any]) -> bool:
    return m["type"] == "liveness_result" and m.get("scope") == "run" and bool(m.get("final"))


async def _until_told(client: CallClient, told: Callable[[dict[str, Any]], bool],
                      seconds: float = 10) -> None:
    """Until the customer's channel delivered a message that ``told`` accepts."""
    deadline = time.monotonic() + seconds
    while not any(told(m) for m in client.messages):
        if time.monotonic() > deadline:
            raise AssertionError(f"not told: {client.messages[-5:]}")
        await asyncio.sleep(0.05)


@dataclass
class Call:
    harness: Harness
    walk: Walk
    customer: CallClient
    agent: CallClient

    async def close(self) -> None:
        await self.harness.app[CALL_HUB].close(self.walk.session_id)
        await self.customer.close()
        await self.agent.close()


def _portrait(harness: Harness, photo: bytes) -> Callable[[str], Awaitable[None]]:
    """Stores what the identity step keeps of attempt 1 (here reported by an engine): the card
    portrait the live run matches its best call frame against."""
    async def store(sid: str) -> None:
        await EvidenceStore(harness.deps.storage, harness.deps.cipher).put(
            portrait_path(UUID(sid), 1), photo)
    return store


def _blinking(clips: FaceClips) -> Callable[[Callable[[], int]], FaceCamera]:
    """A customer's camera that holds a neutral face and blinks once a challenge arrives."""
    return lambda trigger: FaceCamera(clips.neutral, then=clips.blink, trigger=trigger)


async def _call(harness: Harness, media: EncodedMedia,
                camera: Callable[[Callable[[], int]], FaceCamera],
                before_call: Callable[[str], Awaitable[None]] | None = None,
                ) -> tuple[Call, FaceCamera]:
    """The session walked into the call, both parties connected; the customer's ``camera`` is
    given a trigger that counts the challenges delivered (it acts on each new one, so a run
    retried after a stalled stream is answered as well)."""
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    if before_call is not None:
        await before_call(sid)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start",
                          json={"location": HERE})
    assert r.status == 200, r.body
    await harness.pin_speech(walk)
    agent = CallClient(audio=PrerecordedTrack(media, "audio"),
                       video=PrerecordedTrack(media, "video"))
    await agent.connect(_signal_to(harness, f"/calls/{sid}/agent/offer",
                                   await harness.login("agent01")))
    await agent.wait_open()
    holder: list[CallClient] = []
    cam = camera(lambda: challenges_seen(holder[0]) if holder else 0)
    customer = CallClient(audio=PrerecordedTrack(media, "audio"), video=cam)
    holder.append(customer)
    await customer.connect(_signal_to(harness, f"/calls/{sid}/customer/offer",
                                      walk.customer_token))
    await customer.wait_open()
    return Call(harness, walk, customer, agent), cam


@pytest.mark.one_database
@pytest.mark.timeout(240)
async def test_r12_the_script_starts_only_after_the_live_check_passed_in_the_call(
    harness: Harness, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes],
) -> None:
    # The card portrait: another photo of the person in the call, cropped as on a card.
    call, camera = await _call(harness, party_media["customer"], _blinking(clips),
                               before_call=_portrait(harness, portraits["same"]))
    sid = call.walk.session_id
    try:
        await _until_event(sid, "live_liveness_started")
        # Both parties are in and recorded, the speech is there: only the check is missing.
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 409 and r.body["code"] == "call_not_ready", r.body
        assert r.body["problems"] == ["客户尚未通过通话中的实时活体检测"]
        await _until_event(sid, "live_liveness_passed")
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 200, r.body
        await _until_told(call.customer, _final_result)
    finally:
        await call.close()
    session = await RecordingSession.get(id=sid)
    assert session.recording_started_at is not None
    origin = session.recording_started_at.timestamp()
    # One run, normally; on a starved machine a stalled stream may fail the first (it is
    # retried, as for a customer whose network stalled).
    events = [e.data for e in await _events(sid, *LIVE)]
    started, passed = events[-2:]
    assert started["attempt"] == len(events) // 2 and started["plan"] == ["blink"]
    assert started["at_ms"] >= 0
    assert passed["passed"] and passed["final"] and passed["counted"]
    # The card holder: the call's best frame against the verified card portrait.
    face = passed["face_match"]
    assert face["status"] == "matched" and face["passed"] and face["attempt"] == 1, face
    assert face["distance"] < face["threshold"] and face["frames"] == 1
    (challenge,) = passed["challenges"]
    assert challenge["action"] == "blink" and challenge["passed"]
    # Its moments in the recording: when it was sent, done and due (QA's replay seeks there);
    # the customer's camera started the blink only after the challenge went out.
    assert camera.switched_real is not None
    assert challenge["sent_ms"] <= round((camera.switched_real - origin) * 1000)
    assert challenge["sent_ms"] < challenge["completed_ms"] <= challenge["deadline_ms"]
    assert challenge["deadline_ms"] == challenge["sent_ms"] + 6000
    assert challenge["frames_judged"] > 0 and challenge["frames_baseline"] > 0
    # What the customer's page was told, in order.
    told = [m for m in call.customer.messages if m["type"].startswith("liveness_")][-4:]
    assert [m["type"] for m in told] == ["liveness_prepare", "liveness_challenge",
                                         "liveness_result", "liveness_result"]
    assert told[1]["instruction"] == "请眨眨眼" and told[1]["id"] == challenge["id"]
    assert told[3]["passed"] and told[3]["final"] and "通过" in told[3]["message"]


@pytest.mark.one_database
@pytest.mark.timeout(240)
async def test_r12_a_spot_check_during_the_script_is_judged_on_the_call_and_releases_the_step(
    harness: Harness, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15: a challenge at a random moment of the script, not only before it. The draw
    falls on the first step boundary here; the customer's camera blinks at each challenge."""
    monkeypatch.setattr(live_liveness.secrets, "randbelow", lambda n: 0)
    call, camera = await _call(harness, party_media["customer"], _blinking(clips),
                               before_call=_portrait(harness, portraits["same"]))
    sid = call.walk.session_id
    try:
        await _until_event(sid, "live_liveness_passed")
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 200, r.body
        first, second = (await RecordingSession.get(id=sid)).steps[:2]
        # As before the end of a real script's first step: presence took the run's call frame,
        # and the customer's camera finished the first blink (its second closing is 3.5 s
        # after the challenge: a baseline taken then would be of closed eyes).
        await _until_event(sid, "presence_started")
        assert camera.switched_real is not None
        await asyncio.sleep(max(0.0, camera.switched_real + len(clips.blink) / FPS + 0.3
                                - time.time()))
        await harness.play_step(call.walk, first)  # answered: the boundary into step 2
        await _until_event(sid, "live_liveness_passed", count=2, seconds=40)
        # The pass started the held step (the follower plays it).
        await _until_event(sid, "step_started")
        await _until_told(call.customer, lambda m: _final_result(m) and m.get("spot") == 1)
    finally:
        await call.close()
    events = [(e.type, e.data) for e in await SessionEvent.filter(session_id=sid).order_by("seq")]
    (due,) = [d for t, d in events if t == "live_liveness_spot_due"]
    assert due["check"] == 1 and due["step_id"] == second["id"] and due["index"] == 1
    spot = [d for t, d in events if t in LIVE and d.get("spot") == 1]
    # One run, normally; on a starved machine a stalled stream may fail the first.
    started, passed = spot[-2:]
    assert started["plan"] == ["blink"] and passed["passed"] and passed["final"]
    # Judged on the call's frames after the server gave it, and the face is the card's.
    (challenge,) = passed["challenges"]
    assert due["at_ms"] <= challenge["sent_ms"] < challenge["completed_ms"]
    assert challenge["frames_judged"] > 0
    assert passed["face_match"]["status"] == "matched", passed["face_match"]
    at = next(i for i, (t, d) in enumerate(events) if t == "live_liveness_passed"
              and d.get("spot") == 1)
    assert events[at + 1] == ("step_started", {"step_id": second["id"], "index": 1})
    session = await RecordingSession.get(id=sid)
    assert not session.paused and session.current_step == 1
    # The customer's page was told it is a spot check, and that it passed.
    told = [m for m in call.customer.messages if m["type"].startswith("liveness_")
            and m.get("spot") == 1]
    assert told[0]["type"] == "liveness_prepare" and "随机活体抽检" in told[0]["text"]
    assert told[-1]["scope"] == "run" and told[-1]["passed"] and "抽检通过" in told[-1]["message"]


@pytest.mark.one_database
@pytest.mark.timeout(240)
async def test_r12_a_photo_in_front_of_the_camera_never_lets_the_script_start(
    harness: Harness, clips: FaceClips, party_media: dict[str, EncodedMedia],
) -> None:
    call, _ = await _call(harness, party_media["customer"],
                          lambda trigger: FaceCamera([clips.still]))
    sid = call.walk.session_id
    try:
        await _until_event(sid, "live_liveness_failed", count=2)
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        # The page is told after the timeline has it: wait for the last word before hanging up.
        await _until_told(call.customer, _final_result)
    finally:
        await call.close()
    assert r.status == 409 and r.body["code"] == "call_not_ready", r.body
    assert "2 次均未通过" in r.body["problems"][0]
    events = [(e.type, e.data) for e in await _events(sid, *LIVE)]
    assert [t for t, _ in events] == ["live_liveness_started", "live_liveness_failed"] * 2
    first, last = events[1][1], events[3][1]
    # Frozen, normally (on a starved machine possibly a time-out or a stalled stream instead):
    # a photo never passes.
    assert {first["reason_code"], last["reason_code"]} <= {"frozen", "challenge_timeout",
                                                           "stream_gap"}
    assert (first["attempts_left"], first["final"]) == (1, False)
    assert (last["attempts_left"], last["final"]) == (0, True)
    told = [m for m in call.customer.messages
            if m["type"] == "liveness_result" and m.get("scope") == "run"]
    assert [m["final"] for m in told] == [False, True]
    assert "无法继续" in told[-1]["message"]
    assert last["reason"].rstrip("。") in told[-1]["message"]


@pytest.mark.one_database
@pytest.mark.timeout(120)
async def test_r12_a_face_that_is_not_the_cards_never_lets_the_script_start(
    harness: Harness, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes],
) -> None:
    call, _ = await _call(harness, party_media["customer"], _blinking(clips),
                          before_call=_portrait(harness, portraits["other"]))
    sid = call.walk.session_id

    async def judged() -> list[dict[str, Any]]:
        return [e.data for e in await _events(sid, "live_liveness_failed", "live_liveness_passed")]

    try:
        # The first run, normally (a run whose stream stalled on a starved machine is retried,
        # and the customer blinks again).
        deadline = time.monotonic() + 90
        while not any(d.get("reason_code") == "card_face_mismatch" or d.get("final")
                      for d in await judged()):
            assert time.monotonic() < deadline, await judged()
            await asyncio.sleep(0.2)
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        told = [m for m in call.customer.messages
                if m["type"] == "liveness_result" and m.get("scope") == "run"]
    finally:
        await call.close()
    assert r.status == 409 and r.body["code"] == "call_not_ready", r.body
    runs = await judged()
    assert not any(d["passed"] for d in runs), runs
    data = next(d for d in runs if d["reason_code"] == "card_face_mismatch")
    # A blink done in time, by a face that is not the card's: the score and the threshold on
    # the timeline; the reason is what the agent's console shows, with the score.
    assert "身份证" in data["reason"] and data["counted"]
    face = data["face_match"]
    assert face["status"] == "mismatch" and face["passed"] is False, face
    assert face["attempt"] == 1 and face["frames"] == 1 and face["metric"] == "euclidean"
    assert face["distance"] > face["threshold"] == pytest.approx(0.54)
    (challenge,) = data["challenges"]
    assert challenge["passed"] is False and challenge["completed_ms"] is not None
    assert challenge["face_match"]["distance"] == face["distance"]
    # The customer's page says in Chinese what to do.
    message = told[data["attempt"] - 1]
    assert not message["passed"] and "身份证上的本人" in message["message"], message


@pytest.mark.one_database
@pytest.mark.timeout(60)
async def test_r13_presence_compares_with_the_call_frame_the_live_run_matched(
    harness: Harness, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes],
) -> None:
    """Issue 15: presence starts with the identity check's live face (the uploaded clip's);
    once the live run has matched a call frame against the card portrait, that frame is stored
    encrypted and becomes the presence reference; each presence_started says which."""
    evidence = EvidenceStore(harness.deps.storage, harness.deps.cipher)
    clip_face = card_portrait("obama.jpg")

    async def with_identity_evidence(sid: str) -> None:
        await evidence.put(portrait_path(UUID(sid), 1), portraits["same"])
        await evidence.put(live_face_path(UUID(sid), 1), clip_face)

    call, _ = await _call(harness, party_media["customer"], _blinking(clips),
                          before_call=with_identity_evidence)
    sid = call.walk.session_id
    try:
        await _until_event(sid, "presence_started", count=2, seconds=50)
    finally:
        await call.close()
    (passed,) = [e.data for e in await _events(sid, "live_liveness_passed")]
    assert passed["face_match"]["status"] == "matched"
    started = [e.data for e in await _events(sid, "presence_started")]
    assert started == [{"attempt": 1, "reference": "liveness_clip"},
                       {"attempt": 1, "reference": "live_call",
                        "live_attempt": passed["attempt"]}]
    # Stored encrypted, as the clip's live face; a JPEG of the call's frame once decrypted.
    path = live_call_face_path(UUID(sid), passed["attempt"])
    assert path == f"sessions/{sid}/identity/live-call-face-{passed['attempt']}.jpg.enc"
    raw = await harness.deps.storage.run(harness.deps.storage.get_bytes_sync, path)
    face = await evidence.get(path)
    assert face.startswith(b"\xff\xd8") and not raw.startswith(b"\xff\xd8")
    assert face not in (clip_face, portraits["same"])
    picture = cv2.imdecode(np.frombuffer(face, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[:2] == clips.still.shape[:2]
    # A customer connecting again (another node, a restart) is compared with it as well.
    reference = await presence_reference(harness.deps, UUID(sid))
    assert (reference.source, reference.image) == ("live_call", face)


@pytest.mark.one_database
@pytest.mark.timeout(60)
async def test_r13_without_a_clip_face_presence_starts_once_the_live_run_matched_one(
    harness: Harness, clips: FaceClips, party_media: dict[str, EncodedMedia],
    portraits: dict[str, bytes],
) -> None:
    """An identity check reported without its live face (an external engine): presence is
    unavailable when the customer connects, and starts with the call frame the live run
    matched against the card portrait."""
    call, _ = await _call(harness, party_media["customer"], _blinking(clips),
                          before_call=_portrait(harness, portraits["same"]))
    sid = call.walk.session_id
    try:
        await _until_event(sid, "presence_started", seconds=50)
    finally:
        await call.close()
    (passed,) = [e.data for e in await _events(sid, "live_liveness_passed")]
    watch = [(e.type, e.data) for e in await _events(sid, "presence_unavailable",
                                                      "presence_started")]
    assert [t for t, _ in watch] == ["presence_unavailable", "presence_started"], watch
    assert watch[1][1] == {"attempt": 1, "reference": "live_call",
                           "live_attempt": passed["attempt"]}
