"""Renders a playback plan into one MP4 (H.264 + AAC, faststart so a browser plays while it
loads). CPU-heavy: meant to run in a child process (`python -m media.playback.compose OUT`,
plan JSON on stdin, result JSON on stdout), niced, with one encoder thread by default.

The copy is 1:1 with the recording clock — second N of the copy is second N of the session —
so the replay page's marks apply to it unchanged. Each output frame at time t shows, per party,
the last decoded picture at or before t (held up to ``hold_ms``) or a card saying why there is
none (interruption, unreadable segment, no picture, not connected). The audio is the sum of
the customer's, the agent's and the TTS track, each sample placed by its segment's start time.
Only as much of each source as the current moment needs is kept in memory.

A source that is missing, whose bytes no longer match the sealed hash, or that fails to decode
is reported and left out (from the point where it failed); the rest is still rendered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from media.playback import overlay
from media.playback.plan import PlaybackPlan, RenderSettings, SourceSegment, Span

log = logging.getLogger(__name__)
RATE = 48_000
AAC_FRAME = 1024
PARTIES = (("customer_av", "客户"), ("agent_av", "销售人员"))
PROBLEM_LABELS = {"missing": "文件缺失", "hash_mismatch": "与封存哈希不符",
                  "decode_error": "解码失败"}


@dataclass
class SourceReport:
    """What became of one source segment."""

    recording_id: int
    kind: str
    segment: int
    sha256: str  # sealed
    start_ms: int
    end_ms: int
    sha256_read: str | None = None
    used: bool = False
    problem: str | None = None  # missing | hash_mismatch | decode_error
    detail: str = ""

    def fail(self, problem: str, detail: str) -> None:
        if self.problem is None:
            self.problem, self.detail = problem, detail[:300]
            log.warning("playback source %s #%d (%s): %s %s", self.kind, self.segment,
                        self.recording_id, problem, detail)


@dataclass
class ComposeResult:
    duration_ms: int
    video_frames: int
    audio_samples: int
    sha256: str
    size_bytes: int
    encoder: dict[str, Any]
    sources: list[SourceReport] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sources(plan: PlaybackPlan) -> list[tuple[SourceSegment, SourceReport]]:
    """Each source is read only if its bytes are still the sealed ones."""
    checked = []
    for s in plan.segments:
        report = SourceReport(s.recording_id, s.kind, s.segment, s.sha256, s.start_ms, s.end_ms)
        path = Path(s.path)
        if not path.is_file():
            report.fail("missing", f"{path} does not exist")
        else:
            report.sha256_read = file_sha256(path)
            if report.sha256_read != s.sha256:
                report.fail("hash_mismatch", f"read {report.sha256_read}")
            else:
                report.used = True
        checked.append((s, report))
    return checked


class VideoTrack:
    """One party's pictures across its segments, as tiles of the copy's size."""

    def __init__(self, sources: list[tuple[SourceSegment, SourceReport]],
                 settings: RenderSettings) -> None:
        self._sources = sorted(sources, key=lambda x: x[0].start_ms)
        self._settings = settings
        self._frames = self._decode()
        self._next = next(self._frames, None)
        self._current: tuple[int, Any, SourceSegment] | None = None
        self._tile: tuple[int, np.ndarray] | None = None

    def _decode(self) -> Iterator[tuple[int, Any, SourceSegment]]:
        for source, report in self._sources:
            if not report.used:
                continue
            try:
                with av.open(source.path) as container:
                    if not container.streams.video:
                        continue
                    stream = container.streams.video[0]
                    stream.codec_context.thread_count = 1
                    for frame in container.decode(stream):
                        if frame.time is not None:
                            yield source.start_ms + round(frame.time * 1000), frame, source
            except Exception as exc:  # a broken file must not end the copy
                report.fail("decode_error", f"video: {exc}")

    def at(self, t_ms: int) -> np.ndarray | None:
        while self._next is not None and self._next[0] <= t_ms:
            self._current, self._next = self._next, next(self._frames, None)
        current = self._current
        if current is None:
            return None
        at, frame, source = current
        if t_ms - at > self._settings.hold_ms or t_ms > source.end_ms + 100:
            return None
        if self._tile is None or self._tile[0] != id(frame):
            self._tile = (id(frame), self._fit(frame))
        return self._tile[1]

    def _fit(self, frame: Any) -> np.ndarray:
        """Scaled into the tile keeping its aspect (a phone's portrait picture is pillarboxed),
        as I420 like the canvas: no RGB round trip."""
        tw, th = self._settings.tile_width, self._settings.tile_height
        scale = min(tw / frame.width, th / frame.height)
        w = max(4, round(frame.width * scale) // 4 * 4)
        h = max(4, round(frame.height * scale) // 4 * 4)
        picture = frame.reformat(width=w, height=h, format="yuv420p",
                                 interpolation="BILINEAR").to_ndarray()
        if (w, h) == (tw, th):
            return picture  # type: ignore[no-any-return]
        tile = black_i420(tw, th)
        paste(tile, tw, th, picture, w, h, (th - h) // 4 * 2, (tw - w) // 4 * 2)
        return tile


def black_i420(width: int, height: int) -> np.ndarray:
    """An I420 picture (planes stacked as PyAV's ``yuv420p`` ndarray) in video black."""
    buf = np.full((height * 3 // 2, width), 128, np.uint8)
    buf[:height] = 16
    return buf


def to_i420(rgb: np.ndarray) -> np.ndarray:
    """An overlay drawn in RGB, converted once (even width and height)."""
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(  # type: ignore[no-any-return]
        format="yuv420p").to_ndarray()


def _planes(buf: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    flat = buf.reshape(-1)  # a view: the buffer is contiguous
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (flat[:luma].reshape(height, width),
            flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2))


def paste(dst: np.ndarray, dw: int, dh: int, src: np.ndarray, sw: int, sh: int,
          top: int, left: int) -> None:
    """Copies an I420 picture into another at an even position."""
    for d, s, k in zip(_planes(dst, dw, dh), _planes(src, sw, sh), (1, 2, 2), strict=True):
        d[top // k:top // k + sh // k, left // k:left // k + sw // k] = s


class AudioTrack:
    """One kind's audio across its segments, 48 kHz mono, added into the mix on demand."""

    def __init__(self, sources: list[tuple[SourceSegment, SourceReport]]) -> None:
        self._sources = sorted(sources, key=lambda x: x[0].start_ms)
        self._chunks = self._decode()
        self._buffer: deque[tuple[int, np.ndarray]] = deque()
        self._exhausted = False

    def _decode(self) -> Iterator[tuple[int, np.ndarray]]:
        for source, report in self._sources:
            if not report.used:
                continue
            try:
                with av.open(source.path) as container:
                    if not container.streams.audio:
                        continue
                    stream = container.streams.audio[0]
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
                    base = source.start_ms * RATE // 1000
                    for decoded in container.decode(stream):
                        if decoded.time is None:
                            continue
                        at = base + round(decoded.time * RATE)
                        for frame in resampler.resample(decoded):
                            samples = frame.to_ndarray().reshape(-1).astype(np.float32)
                            yield at, samples
                            at += samples.size
            except Exception as exc:
                report.fail("decode_error", f"audio: {exc}")

    def add_into(self, out: np.ndarray, start: int) -> None:
        """Adds this track's samples for [start, start + len(out)) into ``out``."""
        end = start + out.size
        while not self._exhausted and (not self._buffer
                                       or self._buffer[-1][0] + self._buffer[-1][1].size < end):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._exhausted = True
            else:
                self._buffer.append(chunk)
        for at, samples in self._buffer:
            a, b = max(at, start), min(at + samples.size, end)
            if a < b:
                out[a - start:b - start] += samples[a - at:b - at]
        while self._buffer and self._buffer[0][0] + self._buffer[0][1].size <= end:
            self._buffer.popleft()


def _covering(spans: list[Span], t_ms: int) -> Span | None:
    found = None
    for span in spans:
        if span.start_ms <= t_ms < span.end_ms:
            found = span  # the latest that started wins (a replayed step)
    return found


class Painter:
    """Composes one output picture in I420: top band, two tiles, bottom band. Overlays are
    drawn in RGB once per distinct text and converted once (cached)."""

    def __init__(self, plan: PlaybackPlan,
                 checked: list[tuple[SourceSegment, SourceReport]]) -> None:
        self.plan = plan
        self.s = plan.settings
        self.started_at = datetime.fromisoformat(plan.recording_started_at)
        self.canvas = black_i420(self.s.width, self.s.height)
        self.steps = sorted(plan.steps, key=lambda x: x.start_ms)
        self.gaps = list(plan.interruptions)
        self.checked = checked
        self._top: tuple[int, np.ndarray] | None = None
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}
        self.labels = {kind: to_i420(overlay.label(text)) for kind, text in PARTIES}

    def _cached(self, key: tuple[Any, ...], make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = to_i420(make())
        return self._cache[key]

    def step_label(self, t_ms: int) -> tuple[str, bool]:
        gap = _covering(self.gaps, t_ms)
        if gap is not None:
            return (f"通话中断：{gap.label}（{overlay.position(gap.start_ms)} 起，"
                    f"时长 {overlay.position(gap.end_ms - gap.start_ms)}）"), True
        step = _covering(self.steps, t_ms)
        if step is not None:
            return step.label, False
        if not self.steps or t_ms < self.steps[0].start_ms:
            return "话术尚未开始", False
        return "话术已结束", False

    def card_for(self, kind: str, t_ms: int) -> np.ndarray:
        w, h = self.s.tile_width, self.s.tile_height
        gap = _covering(self.gaps, t_ms)
        if gap is not None:
            note = f"{gap.label} · 时长 {overlay.position(gap.end_ms - gap.start_ms)}"
            return self._cached(("gap", note), lambda: overlay.card(
                w, h, "通话中断", note, alert=True))
        bad = [(s, r) for s, r in self.checked
               if s.kind == kind and r.problem and s.start_ms <= t_ms < s.end_ms]
        if bad:
            s, r = bad[0]
            note = f"第 {s.segment} 段{PROBLEM_LABELS.get(r.problem or '', r.problem)}"
            return self._cached(("bad", note), lambda: overlay.card(
                w, h, "录像无法读取", note, alert=True))
        if any(s.kind == kind and s.start_ms <= t_ms < s.end_ms for s, _ in self.checked):
            return self._cached(("dark",), lambda: overlay.card(
                w, h, "无画面", "摄像头关闭或画面中断"))
        return self._cached(("absent",), lambda: overlay.card(
            w, h, "未接入", "该方此时不在通话中"))

    def paint(self, t_ms: int, tiles: dict[str, np.ndarray | None]) -> np.ndarray:
        s, c = self.s, self.canvas
        W, H, band = s.width, s.height, s.band_height
        second = t_ms // 1000
        if self._top is None or self._top[0] != second:
            self._top = (second, to_i420(overlay.top_band(
                W, band, self.started_at, second * 1000, self.plan.session_id)))
        paste(c, W, H, self._top[1], W, band, 0, 0)
        for n, (kind, _) in enumerate(PARTIES):
            tile = tiles.get(kind)
            if tile is None:
                tile = self.card_for(kind, t_ms)
            left = n * s.tile_width
            paste(c, W, H, tile, s.tile_width, s.tile_height, band, left)
            tag = self.labels[kind]
            tag_h, tag_w = tag.shape[0] * 2 // 3, tag.shape[1]
            paste(c, W, H, tag, tag_w, tag_h, band + 6, left + 6)
        text, alert = self.step_label(t_ms)
        bottom = self._cached(("bottom", text, alert),
                              lambda: overlay.bottom_band(W, band, text, alert))
        paste(c, W, H, bottom, W, band, band + s.tile_height, 0)
        return c


def compose(plan: PlaybackPlan, out_path: Path) -> ComposeResult:
    """Writes the copy to ``out_path`` (replaced if present) and says what went into it."""
    started, cpu_start = time.monotonic(), _cpu_seconds()
    s = plan.settings
    checked = _check_sources(plan)
    of_kind = {kind: [(src, rep) for src, rep in checked if src.kind == kind]
               for kind in ("customer_av", "agent_av", "tts")}
    videos = {kind: VideoTrack(of_kind[kind], s) for kind, _ in PARTIES}
    audios = [AudioTrack(items) for items in of_kind.values()]
    painter = Painter(plan, checked)
    frames = max(1, math.ceil(plan.duration_ms * s.fps / 1000))
    with av.open(str(out_path), "w", format="mp4",
                 options={"movflags": "+faststart"}) as out:
        vstream = out.add_stream("libx264", rate=s.fps)
        vstream.width, vstream.height, vstream.pix_fmt = s.width, s.height, "yuv420p"
        vstream.codec_context.thread_count = s.threads
        vstream.options = {"crf": str(s.crf), "preset": s.preset, "g": str(2 * s.fps),
                           "threads": str(s.threads)}
        astream = out.add_stream("aac", rate=RATE)
        astream.layout = "mono"
        astream.bit_rate = s.audio_bitrate
        pending = np.zeros(0, np.float32)
        samples_done = 0
        for i in range(frames):
            t_ms = i * 1000 // s.fps
            picture = painter.paint(t_ms, {kind: v.at(t_ms) for kind, v in videos.items()})
            frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, s.fps)
            for packet in vstream.encode(frame):
                out.mux(packet)
            a, b = i * RATE // s.fps, (i + 1) * RATE // s.fps
            mix = np.zeros(b - a, np.float32)
            for track in audios:
                track.add_into(mix, a)
            pending = np.concatenate([pending, np.clip(mix, -1.0, 1.0)])
            pending, samples_done = _encode_audio(out, astream, pending, samples_done,
                                                  last=i == frames - 1)
        for packet in vstream.encode():
            out.mux(packet)
        for packet in astream.encode():
            out.mux(packet)
        encoder = {
            "container": "mp4 (faststart)",
            "video": f"{vstream.codec_context.name} H.264 {s.width}x{s.height} {s.fps} fps "
                     f"crf {s.crf} preset {s.preset} threads {s.threads}",
            "audio": f"{astream.codec_context.name} {RATE} Hz mono "
                     f"{s.audio_bitrate // 1000} kbit/s",
            "layout": "side_by_side",
            "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        }
    for kind_video in videos.values():
        kind_video.at(plan.duration_ms + 10**9)  # drain: surfaces a late decode error
    return ComposeResult(
        duration_ms=frames * 1000 // s.fps, video_frames=frames, audio_samples=samples_done,
        sha256=file_sha256(out_path), size_bytes=out_path.stat().st_size, encoder=encoder,
        sources=[r for _, r in checked], cpu_seconds=round(_cpu_seconds() - cpu_start, 2),
        wall_seconds=round(time.monotonic() - started, 2),
    )


def _encode_audio(out: Any, stream: Any, pending: np.ndarray, done: int,
                  last: bool) -> tuple[np.ndarray, int]:
    while pending.size >= AAC_FRAME or (last and pending.size):
        chunk, pending = pending[:AAC_FRAME], pending[AAC_FRAME:]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, done, Fraction(1, RATE)
        done += chunk.size
        for packet in stream.encode(frame):
            out.mux(packet)
    return pending, done


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    """Child-process entry: ``python -m media.playback.compose OUT`` with the plan on stdin."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(OSError):
        os.nice(10)  # live calls in the server come first
    plan = PlaybackPlan.from_json(sys.stdin.read())
    result = compose(plan, Path(argv[1]))
    sys.stdout.write(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
