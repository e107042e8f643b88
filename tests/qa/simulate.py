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
from typing import Any, cast
from uuid import UUID

import av
import numpy as np

from models.sessions import Acknowledgement, RecordingSession, SessionEvent
from qa.timeline import (
    PRESENCE_MARK,
    PRESENCE_STARTED,
    PRESENCE_UNAVAILABLE,
    record_media_event,
)
from scripts_library.render import SessionStep
from security.audit import Actor
from storage import LocalFolderStore
from tests.harness import HERE, Harness, Walk
from tests.written import read_documents
from workflow import call, media_events

RATE = 48_000
FPS = 15
Window = tuple[int, int]
Said = tuple[str, np.ndarray]  # what a party says: its text and its audio (48 kHz)


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
    # The presence monitor watched the customer (`presence_started`, R-13; written here unless
    # the walk did); or could not (`presence_unavailable` with this reason).
    presence_watched: bool = True
    presence_unavailable: str | None = None
    # Spoken-answer steps are answered by voice (answer_kind "voice" with the span the live
    # recogniser heard, R-24) as the live call stores them; False: by the button.
    voice_answers: bool = True
    customer_speech_ms: int = 1000
    # What the parties say instead of the kit's default speech: the customer's answer to a
    # step, the agent's reading of an agent step (which also becomes the step's text), a remark
    # the agent makes at the start of a step.
    customer_says: dict[str, Said] = field(default_factory=dict)
    agent_reads: dict[str, Said] = field(default_factory=dict)
    agent_remarks: dict[str, Said] = field(default_factory=dict)
    # The after-call transcript (qa/transcripts.py): "scripted" stores what a recogniser that
    # heard every window exactly would write (engine "simulated"), "none" stores nothing (the
    # tests that run the real job on the recorded audio).
    transcript: str = "scripted"


@dataclass
class Recorded:
    walk: Walk
    session_id: str
    started_at: datetime
    plays: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # step -> [(start, end)]
    answers: dict[str, int] = field(default_factory=dict)  # step id -> ack offset
    step_kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    end_ms: int = 0
    said: list[tuple[str, int, int, str]] = field(default_factory=list)  # party, start, end, text
    remarks: dict[str, int] = field(default_factory=dict)  # step id -> start of the remark


def _ms(audio: np.ndarray) -> int:
    return audio.size * 1000 // RATE


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
             if s["speaker"] == "tts" else
             {**s, "text": sc.agent_reads[s["id"]][0]} if s["id"] in sc.agent_reads else s
             for s in session.steps]
    await RecordingSession.filter(id=sid).update(steps=steps)
    rec = Recorded(w, sid, t0, step_kinds={s["id"]: s for s in steps})
    windows: dict[str, list[tuple[int, int, np.ndarray | None]]] = {
        "customer": [], "agent": [], "tts": []}
    offline: list[Window] = []

    def now_ms() -> int:
        return (clock.now - t0) // timedelta(milliseconds=1)

    clock.advance(800)
    r = await h.as_(agent, "POST", f"/sessions/{sid}/script/start")
    assert r.status == 200, r.body
    # What the live call writes when the presence monitor starts (or cannot) — unless the walk
    # already did.
    if sc.presence_watched and not await SessionEvent.filter(
            session_id=sid, type=PRESENCE_STARTED).exists():
        await record_media_event(h.deps, UUID(sid), PRESENCE_STARTED, {"attempt": 1})
    if sc.presence_unavailable:
        await record_media_event(h.deps, UUID(sid), PRESENCE_UNAVAILABLE,
                                 {"reason": sc.presence_unavailable})
    negative_done = False
    while (step := await h.current_step(w)) is not None:
        step_id = step["id"]
        start = now_ms()
        if step["speaker"] == "tts":
            played = 1000 if step_id == sc.skip_step else sc.tts_ms
            windows["tts"].append((start, start + played, None))
            clip_id = f"{step_id}@{start}"
            await media_events.speech_started(h.deps, UUID(sid), clip_id)
            clock.advance(played)
            # What the call bridge does with the hub's ClipFinished (a step needing no
            # answer moves on by itself once played in full).
            await media_events.clip_finished(h.deps, UUID(sid), clip_id, played, sc.tts_ms,
                                             played == sc.tts_ms)
            if step_id == sc.skip_step:
                # The gate refuses this answer now; the QA check still has to catch a
                # session where it was let through (recorded before the gate, a forged report).
                await RecordingSession.filter(id=sid).update(answer_open_step=step_id)
        else:
            # The agent reads it aloud, as long as the server needs to hear it (voice activity
            # on the agent's audio, R-24).
            voiced = max(sc.agent_ms - 400,
                         media_events.agent_voice_needed_ms(SessionStep.model_validate(step),
                                                            h.deps.settings))
            text, sound = sc.agent_reads.get(step_id, (step["text"], None))
            if sound is not None:
                voiced = max(voiced, _ms(sound))
            windows["agent"].append((start + 200, start + voiced + 200, sound))
            rec.said.append(("agent", start + 200, start + voiced + 200, text))
            clock.advance(voiced + 400)
            assert await media_events.agent_voice(h.deps, UUID(sid), step_id, voiced)
        if step_id in sc.agent_remarks:
            text, sound = sc.agent_remarks[step_id]
            windows["agent"].append((start + 100, start + 100 + _ms(sound), sound))
            rec.said.append(("agent", start + 100, start + 100 + _ms(sound), text))
            rec.remarks[step_id] = start + 100
        answer = step["answer"]
        if answer == "show_document":
            await read_documents(h, sid, w.customer_token,
                                 advance=lambda s: clock.advance(int(s * 1000)))
        if answer == "none":
            clock.advance(300)
            current = await h.current_step(w)
            if current is not None and current["id"] == step_id:
                r = await h.as_(agent, "POST", f"/sessions/{sid}/script/advance",
                                json={"step_id": step_id})
                assert r.status == 200, r.body
        elif answer in ("signature", "handwritten_copy"):
            clock.advance(sc.sign_ms)
            await h.sign(w)
        else:
            if step_id == sc.negative_at and not negative_done:
                negative_done = True
                if not sc.silent_customer:
                    windows["customer"].append((now_ms() + 300, now_ms() + 1300, None))
                    rec.said.append(("customer", now_ms() + 300, now_ms() + 1300, "不清楚"))
                clock.advance(sc.answer_ms)
                r = await h.ack(w, step_id, "negative")
                assert r.status == 201, r.body
                rec.plays.setdefault(step_id, []).append((start, now_ms()))
                windows["agent"].append((now_ms() + 300, now_ms() + 3300, None))
                rec.said.append(("agent", now_ms() + 300, now_ms() + 3300,
                                 "我再为您解释一下保险责任"))
                clock.advance(3600)
                r = await h.as_(agent, "POST", f"/sessions/{sid}/script/resume",
                                json={"note": "已向客户解释保险责任"})
                assert r.status == 200, r.body
                continue
            text, sound = sc.customer_says.get(step_id, ("是的，明白", None))
            spoken = (now_ms() + 300, now_ms() + 300 + (
                _ms(sound) if sound is not None else sc.customer_speech_ms))
            if not sc.silent_customer:
                windows["customer"].append((*spoken, sound))
                rec.said.append(("customer", *spoken, text))
            clock.advance(max(sc.answer_ms, spoken[1] - now_ms() + 200))
            if answer == media_events.SPOKEN_ANSWER and sc.voice_answers:
                # What the live call stores for an answer its recogniser judged affirmative.
                outcome = await media_events.spoken_answer(
                    h.deps, UUID(sid), step_id, {"verdict": "affirmative", "transcript": text,
                                                 "confidence": 0.99, "engine": "simulated"},
                    *spoken)
                assert outcome == "acknowledged", outcome
                rec.answers[step_id] = spoken[1]
            else:
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
    if sc.gap:
        # `complete` refuses a recording with a gap now; the QA check must still catch
        # one that got through (recorded before the gate): completed behind its back.
        assert r.status == 409 and r.body["code"] == "recording_incomplete", r.body
        await RecordingSession.filter(id=sid).update(state="completed",
                                                     completed_at=clock(), ended_at=clock())
    else:
        assert r.status == 200 and r.body["state"] == "completed", r.body
    from workflow.expiry import sweep

    result = await sweep(h.deps)
    assert sid in {str(s) for s in result.sealed}
    if sc.transcript == "scripted":
        from qa.transcripts import store_transcript

        await store_transcript(h.deps, UUID(sid), {
            "status": "done", "engine": "simulated", "attempts": 1,
            "lines": [{"party": party, "start_ms": a, "end_ms": b, "text": text}
                      for party, a, b, text in sorted(rec.said, key=lambda x: x[1])]})
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
                            windows: dict[str, list[tuple[int, int, np.ndarray | None]]],
                            offline: list[Window]) -> None:
    rng = np.random.default_rng(7)
    total = rec.end_ms
    tracks = {kind: (rng.standard_normal(total * RATE // 1000) * 0.0008).astype(np.float32)
              for kind in ("customer_av", "agent_av", "tts")}
    defaults = {"customer": ("customer_av", kit.customer_speech),
                "agent": ("agent_av", kit.agent_speech), "tts": ("tts", kit.tts_speech)}
    for party, (kind, default) in defaults.items():
        for a, b, sound in windows[party]:
            _place(tracks[kind], (default if sound is None else sound) * 0.5, a, b - a)
    root = cast(LocalFolderStore, h.deps.storage).root  # the harness stores in a local folder
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
