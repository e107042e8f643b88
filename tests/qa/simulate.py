"""A recorded session for the QA tests: the real API walks the session through the call while
a test clock moves on as a real call would, and real WebM segments (VP8 640×480@15 fps + Opus,
as the recorder writes them) are made for the customer, the agent and the TTS track, with
espeak-ng speech where someone speaks. Scenarios switch on one fault at a time."""

from __future__ import annotations

import fractions
import hashlib
import subprocess
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import av
import numpy as np

from models.sessions import Acknowledgement, RecordingSession
from qa.timeline import PRESENCE_MARK, record_media_event
from security.audit import Actor
from tests.harness import HERE, Harness, Walk
from workflow import call, media_events

RATE = 48_000
FPS = 15
Window = tuple[int, int]


class FakeClock:
    """The workflow's clock, moved on by the simulated call."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


def _espeak(text: str, folder: Path, name: str) -> np.ndarray:
    path = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-s", "150", "-w", str(path), text],
                   check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    samples = raw.astype(np.float32) / 32768
    n = round(samples.size * RATE / rate)
    return np.interp(np.linspace(0, samples.size - 1, n), np.arange(samples.size),
                     samples).astype(np.float32)


@dataclass
class MediaKit:
    """Encoded once per test run: 10 s of VP8 video (a key frame every second) and speech."""

    video_file: Path
    packets: list[tuple[bytes, bool]]
    customer_speech: np.ndarray
    agent_speech: np.ndarray
    tts_speech: np.ndarray

    @classmethod
    def build(cls, folder: Path, size: tuple[int, int] = (640, 480)) -> MediaKit:
        folder.mkdir(parents=True, exist_ok=True)
        video_file = folder / f"video-{size[0]}x{size[1]}.webm"
        width, height = size
        with av.open(str(video_file), "w", format="webm") as out:
            stream = out.add_stream("libvpx", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"deadline": "realtime", "cpu-used": "16", "b": "200k",
                              "g": str(FPS), "keyint_min": str(FPS)}
            plane = np.full((height * 3 // 2, width), 128, np.uint8)  # grey, neutral chroma
            for i in range(10 * FPS):
                plane[:height] = 100
                x = (i * 4) % (width - 40)
                plane[height // 2 - 20:height // 2 + 20, x:x + 40] = 200
                frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with av.open(str(video_file)) as inp:
            packets = [(bytes(p), bool(p.is_keyframe)) for p in inp.demux(inp.streams.video[0])
                       if p.size]
        return cls(video_file, packets,
                   customer_speech=_espeak("shi4 de5, ming2 bai2", folder, "customer"),
                   agent_speech=_espeak("nin2 hao3, wo3 shi4 xiao1 shou4 ren2 yuan2, "
                                        "zhe4 shi4 wo3 de5 zhi2 ye4 zheng4", folder, "agent"),
                   tts_speech=_espeak("qing3 nin2 ren4 zhen1 yue4 du2 bao3 xian3 tiao2 kuan3, "
                                      "ru2 you3 yi2 wen4 qing3 ti2 chu1", folder, "tts"))

    def write_segment(self, path: Path, duration_ms: int, audio: np.ndarray,
                      video: bool = True) -> None:
        """One WebM segment: the cached video from its first key frame, and `audio` (48 kHz)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(self.video_file)) as template, \
                av.open(str(path), "w", format="webm") as out:
            vstream = out.add_stream_from_template(template.streams.video[0]) if video else None
            astream = out.add_stream("libopus", rate=RATE)
            astream.layout = "mono"
            astream.options = {"compression_level": "0"}  # fastest; quality is not the point
            packets: list[av.Packet] = []
            for start in range(0, audio.size, 960):
                chunk = np.zeros(960, np.float32)
                piece = audio[start:start + 960]
                chunk[:piece.size] = piece
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt",
                                                   layout="mono")
                frame.sample_rate = RATE
                frame.pts = start
                packets += astream.encode(frame)
            packets += astream.encode()
            if vstream is not None:
                for i in range(duration_ms * FPS // 1000):
                    data, key = self.packets[i % len(self.packets)]
                    packet = av.Packet(data)
                    packet.pts = packet.dts = round(i * 1000 / FPS)
                    packet.time_base = fractions.Fraction(1, 1000)
                    packet.stream = vstream
                    packet.is_keyframe = key
                    packets.append(packet)
            for packet in sorted(packets, key=lambda p: float((p.pts or 0) * p.time_base)):
                out.mux(packet)


@dataclass
class Scenario:
    """One simulated call; by default a clean one."""

    tts_ms: int = 2500
    agent_ms: int = 3000
    answer_ms: int = 1500
    sign_ms: int = 4000
    segment_ms: int = 30_000
    skip_step: str | None = None  # its clip is cut short and the customer answers anyway
    silent_customer: bool = False
    drop_ack_of: str | None = None  # the stored answer of this step goes missing
    presence: list[tuple[str, float, int]] = field(default_factory=list)  # type, at_s, faces
    gap: Window | None = None  # no recording of either party in this window (ms)
    interrupt_after: str | None = None  # the call drops after this step, and resumes
    interruption_ms: int = 6000
    negative_at: str | None = None  # a negative answer first, explained, then affirmative
    video_size: tuple[int, int] = (640, 480)


@dataclass
class Recorded:
    walk: Walk
    session_id: str
    started_at: datetime
    plays: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # step -> [(start, end)]
    answers: dict[str, int] = field(default_factory=dict)  # step id -> ack offset
    step_kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    end_ms: int = 0


def _place(track: np.ndarray, sound: np.ndarray, start_ms: int, length_ms: int) -> None:
    start = start_ms * RATE // 1000
    n = min(length_ms * RATE // 1000, track.size - start)
    if n <= 0:
        return
    tiled = np.resize(sound, n)  # repeats the speech to fill the window
    track[start:start + n] += tiled


async def record_session(h: Harness, kit: MediaKit, sc: Scenario,
                         clock: FakeClock | None = None, *, agent: str = "agent01",
                         birth: str = "19800101") -> Recorded:
    clock = clock or FakeClock()
    h.deps.clock = clock
    w = await h.walk_to("in_call", agent, birth=birth)
    sid = w.session_id
    session = await RecordingSession.get(id=sid)
    assert session.recording_started_at is not None
    t0 = session.recording_started_at
    # What the speech pre-render job would have pinned on each TTS step.
    steps = [{**s, "audio": {"duration_ms": sc.tts_ms, "engine": "espeak", "voice": "test",
                             "sha256": hashlib.sha256(s["id"].encode()).hexdigest(),
                             "cache_key": "not-rendered-in-these-tests"}}
             if s["speaker"] == "tts" else s for s in session.steps]
    await RecordingSession.filter(id=sid).update(steps=steps)
    rec = Recorded(w, sid, t0, step_kinds={s["id"]: s for s in steps})
    windows: dict[str, list[Window]] = {"customer": [], "agent": [], "tts": []}
    offline: list[Window] = []

    def now_ms() -> int:
        return int((clock.now - t0).total_seconds() * 1000)

    clock.advance(800)
    r = await h.as_(agent, "POST", f"/sessions/{sid}/script/start")
    assert r.status == 200, r.body
    negative_done = False
    while (step := await h.current_step(w)) is not None:
        step_id = step["id"]
        start = now_ms()
        if step["speaker"] == "tts":
            played = 1000 if step_id == sc.skip_step else sc.tts_ms
            windows["tts"].append((start, start + played))
            clip_id = f"{step_id}@{start}"
            await media_events.speech_started(h.deps, UUID(sid), clip_id)
            clock.advance(played)
            # What the call bridge does with the hub's ClipFinished (a step needing no
            # answer moves on by itself once played in full).
            await media_events.clip_finished(h.deps, UUID(sid), clip_id, played, sc.tts_ms,
                                             played == sc.tts_ms)
        else:
            windows["agent"].append((start + 200, start + sc.agent_ms - 200))
            clock.advance(sc.agent_ms)
        answer = step["answer"]
        if answer == "none":
            clock.advance(300)
            current = await h.current_step(w)
            if current is not None and current["id"] == step_id:
                r = await h.as_(agent, "POST", f"/sessions/{sid}/script/advance",
                                json={"step_id": step_id})
                assert r.status == 200, r.body
        elif answer in ("signature", "handwritten_copy"):
            clock.advance(sc.sign_ms)
            await h.sign(w, step.get("copy_text") or "本人亲笔签名")
        else:
            if step_id == sc.negative_at and not negative_done:
                negative_done = True
                if not sc.silent_customer:
                    windows["customer"].append((now_ms() + 300, now_ms() + 1300))
                clock.advance(sc.answer_ms)
                r = await h.ack(w, step_id, "negative")
                assert r.status == 201, r.body
                rec.plays.setdefault(step_id, []).append((start, now_ms()))
                windows["agent"].append((now_ms() + 300, now_ms() + 3300))
                clock.advance(3600)
                r = await h.as_(agent, "POST", f"/sessions/{sid}/script/resume",
                                json={"note": "已向客户解释保险责任"})
                assert r.status == 200, r.body
                continue
            if not sc.silent_customer:
                windows["customer"].append((now_ms() + 300, now_ms() + 1300))
            clock.advance(sc.answer_ms)
            r = await h.ack(w, step_id)
            assert r.status == 201, r.body
            rec.answers[step_id] = now_ms()
        rec.plays.setdefault(step_id, []).append((start, now_ms()))
        if step_id == sc.interrupt_after:
            clock.advance(200)
            r = await h.as_(agent, "POST", f"/sessions/{sid}/call/interrupt",
                            json={"reason": "客户网络中断"})
            assert r.status == 200, r.body
            gap_start = now_ms()
            clock.advance(sc.interruption_ms)
            offline.append((gap_start, now_ms()))
            r = await h.as_(agent, "POST", f"/sessions/{sid}/call/resume",
                            json={"location": HERE})
            assert r.status == 200, r.body
    clock.advance(500)
    rec.end_ms = now_ms()
    if sc.gap:
        offline.append(sc.gap)
    await _write_recordings(h, kit, sc, rec, windows, offline)
    for type_, at_s, faces in sc.presence:
        await record_media_event(h.deps, UUID(sid), PRESENCE_MARK, {
            "type": type_, "at_s": at_s, "message": "", "faces": faces})
    if sc.drop_ack_of:
        await Acknowledgement.filter(session_id=sid, step_id=sc.drop_ack_of).delete()
    clock.advance(1000)
    r = await h.as_(agent, "POST", f"/sessions/{sid}/complete")
    assert r.status == 200 and r.body["state"] == "completed", r.body
    from workflow.expiry import sweep

    result = await sweep(h.deps)
    assert sid in {str(s) for s in result.sealed}
    return rec


def _pieces(end_ms: int, segment_ms: int, offline: list[Window]) -> list[Window]:
    """The recorded stretches: cut every `segment_ms`, and nothing while offline."""
    cuts: list[Window] = []
    cursor = 0
    for a, b in [*sorted(offline), (end_ms, end_ms)]:
        while cursor < a:
            stop = min(cursor + segment_ms, a)
            cuts.append((cursor, stop))
            cursor = stop
        cursor = max(cursor, b)
    return [(a, b) for a, b in cuts if b - a >= 200]


async def _write_recordings(h: Harness, kit: MediaKit, sc: Scenario, rec: Recorded,
                            windows: dict[str, list[Window]], offline: list[Window]) -> None:
    rng = np.random.default_rng(7)
    total = rec.end_ms
    tracks = {kind: (rng.standard_normal(total * RATE // 1000) * 0.0008).astype(np.float32)
              for kind in ("customer_av", "agent_av", "tts")}
    for a, b in windows["customer"]:
        _place(tracks["customer_av"], kit.customer_speech * 0.5, a, b - a)
    for a, b in windows["agent"]:
        _place(tracks["agent_av"], kit.agent_speech * 0.5, a, b - a)
    for a, b in windows["tts"]:
        _place(tracks["tts"], kit.tts_speech * 0.5, a, b - a)
    root = h.deps.storage.root
    for kind, audio in tracks.items():
        pieces = _pieces(total, sc.segment_ms, offline)
        for n, (a, b) in enumerate(pieces, start=1):
            relative = f"{rec.session_id}/{kind}/{n:05d}.webm"
            path = root / relative
            kit.write_segment(path, b - a, audio[a * RATE // 1000:b * RATE // 1000],
                              video=kind != "tts")
            data = path.read_bytes()
            await call.register_recording(h.deps, Actor.system("media"), UUID(rec.session_id),
                                          call.NewRecording(
                kind=kind, segment=n, path=relative, sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data), duration_ms=b - a,
                started_at=rec.started_at + timedelta(milliseconds=a),
                ended_at=rec.started_at + timedelta(milliseconds=b)))
