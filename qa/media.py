"""Reading the recorded segments for the checks (R-30, R-32, R-24): where each track has
recording, where it is loud, where someone speaks, and each segment's picture facts.

Segments are placed on the session's timeline by their wall-clock `started_at` (the recorder
anchors them to arrival time), so a gap between two segments is a gap in the recording. Audio
is handled one segment at a time (16 kHz mono), never a whole call in memory. Picture facts
come from the recorder's own probe (`media.recording.probe_segment`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import numpy as np

from media.recording import SegmentProbe, probe_segment
from media.voice.vad import RATE, Interval, Samples, VoiceActivityDetector
from models.sessions import Recording
from storage import ObjectMissing, ObjectStore, file_sha256

log = logging.getLogger(__name__)
AV_KINDS = ("customer_av", "agent_av")
WINDOW = 320  # 20 ms at 16 kHz


@dataclass
class SegmentFacts:
    recording: Recording
    start_ms: int
    end_ms: int
    exists: bool = True
    hash_ok: bool = True
    error: str = ""
    probe: SegmentProbe | None = None


@dataclass
class TrackFacts:
    kind: str
    segments: list[SegmentFacts] = field(default_factory=list)
    covered: list[Interval] = field(default_factory=list)
    loud: list[Interval] = field(default_factory=list)
    speech: list[Interval] = field(default_factory=list)
    audio_ms: int = 0

    def speech_within(self, start_ms: int, end_ms: int) -> int:
        return overlap(self.speech, start_ms, end_ms)


@dataclass
class MediaFacts:
    tracks: dict[str, TrackFacts]
    recorded_ms: int
    vad_engine: str

    def track(self, kind: str) -> TrackFacts:
        return self.tracks.get(kind) or TrackFacts(kind)


def overlap(intervals: list[Interval], start_ms: int, end_ms: int) -> int:
    return sum(max(0, min(b, end_ms) - max(a, start_ms)) for a, b in intervals)


def union(intervals: list[Interval], slack_ms: int = 0) -> list[Interval]:
    merged: list[list[int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + slack_ms:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def holes(intervals: list[Interval], start_ms: int, end_ms: int) -> list[Interval]:
    """The parts of [start_ms, end_ms) that `intervals` do not cover."""
    out: list[Interval] = []
    cursor = start_ms
    for a, b in union(intervals):
        if b <= cursor:
            continue
        if a > cursor:
            out.append((cursor, min(a, end_ms)))
        cursor = max(cursor, b)
        if cursor >= end_ms:
            break
    if cursor < end_ms:
        out.append((cursor, end_ms))
    return [(a, b) for a, b in out if b > a]


def decode_audio(path: Path) -> tuple[Samples, float]:
    """The audio of one file as 16 kHz mono float32, and the time (s) of its first sample
    relative to the start of the container (audio may start after the video)."""
    pieces: list[Samples] = []
    first: float | None = None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32), 0.0
        start = container.start_time / 1_000_000 if container.start_time else 0.0
        for decoded in container.decode(audio=0):
            if first is None and decoded.pts is not None and decoded.time_base is not None:
                first = float(decoded.pts * decoded.time_base) - start
            for frame in resampler.resample(decoded):
                pieces.append(frame.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        for frame in resampler.resample(None):
            pieces.append(frame.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return samples, max(first or 0.0, 0.0)


def loud_intervals(samples: Samples, silence_dbfs: float) -> list[Interval]:
    n = samples.size // WINDOW
    if n == 0:
        return []
    frames = samples[: n * WINDOW].reshape(n, WINDOW).astype(np.float64)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    active = rms >= 10 ** (silence_dbfs / 20)
    padded = np.concatenate(([False], active, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    step = WINDOW * 1000 // RATE
    return [(int(a) * step, int(b) * step) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def analyse_segment(
    storage: ObjectStore, facts: SegmentFacts, track: TrackFacts,
    vad: VoiceActivityDetector | None, silence_dbfs: float, verify_hashes: bool,
) -> None:
    """Blocking. The segment is read from a local file: the local backend's own, or a
    temporary download of the S3 object (one segment at a time)."""
    try:
        with storage.local_copy_sync(facts.recording.path) as path:
            _analyse_file(path, facts, track, vad, silence_dbfs, verify_hashes)
    except ObjectMissing:
        facts.exists = False


def _analyse_file(
    path: Path, facts: SegmentFacts, track: TrackFacts,
    vad: VoiceActivityDetector | None, silence_dbfs: float, verify_hashes: bool,
) -> None:
    r = facts.recording
    if verify_hashes and file_sha256(path)[0] != r.sha256:
        facts.hash_ok = False
    try:
        if r.kind in AV_KINDS:
            facts.probe = probe_segment(path, silence_dbfs=silence_dbfs)
        samples, first_s = decode_audio(path)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        facts.error = f"{type(exc).__name__}: {exc}"[:300]
        return
    offset = facts.start_ms + round(first_s * 1000)
    track.audio_ms += samples.size * 1000 // RATE
    track.loud += [(a + offset, b + offset) for a, b in loud_intervals(samples, silence_dbfs)]
    if vad is not None and samples.size:
        track.speech += [(a + offset, b + offset) for a, b in vad.speech(samples)]


def analyse_recordings(
    storage: ObjectStore, recordings: list[Recording], offset_of: Callable[[datetime], int],
    vad: VoiceActivityDetector, silence_dbfs: float, *, verify_hashes: bool = True,
) -> MediaFacts:
    """Blocking (decoding and ONNX): run it in a worker thread."""
    tracks: dict[str, TrackFacts] = {}
    end = 0
    for r in sorted(recordings, key=lambda x: (x.kind, x.segment)):
        track = tracks.setdefault(r.kind, TrackFacts(r.kind))
        start_ms = offset_of(r.started_at)
        end_ms = offset_of(r.ended_at) if r.ended_at is not None else start_ms + r.duration_ms
        facts = SegmentFacts(r, start_ms, max(end_ms, start_ms))
        track.segments.append(facts)
        # Speech only matters for the parties; the TTS track only needs its loudness.
        analyse_segment(storage, facts, track, vad if r.kind in AV_KINDS else None,
                        silence_dbfs, verify_hashes)
        if facts.exists and not facts.error:
            track.covered.append((facts.start_ms, facts.end_ms))
        end = max(end, facts.end_ms)
    for track in tracks.values():
        track.covered = union(track.covered)
        track.loud = union(track.loud, slack_ms=20)
        track.speech = union(track.speech, slack_ms=100)
    return MediaFacts(tracks, end, vad.name)
