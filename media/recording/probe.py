"""Inspects a recorded segment for quality checks and tests (R-32): streams, duration, frame
rate, audio presence and the longest silence.

Reads the container's packets (cheap); audio is decoded to measure silence; video is decoded
only when asked (``decode_video=True``) to prove every frame decodes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True, slots=True)
class SegmentProbe:
    """What a segment holds. Times in milliseconds; frame rates in frames per second."""

    path: str
    duration_ms: int
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    video_frames: int
    frame_rate: float
    longest_video_gap_ms: int
    decoded_video_frames: int | None
    decoded_video_size: tuple[int, int] | None
    audio_ms: int
    longest_silence_ms: int
    audio_rms_dbfs: float
    metadata: dict[str, str]


def probe_segment(
    path: Path | str,
    *,
    silence_dbfs: float = -50.0,
    decode_video: bool = False,
) -> SegmentProbe:
    """Probe one WebM/Matroska segment.

    ``longest_silence_ms`` counts audio windows (20 ms) quieter than ``silence_dbfs`` and gaps
    in the audio timestamps alike; a segment without audio reports its whole duration.
    """
    with av.open(str(path)) as container:
        metadata = dict(container.metadata)
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        video_times: list[float] = []
        first: float | None = None
        last_end = 0.0
        for packet in container.demux():
            if packet.pts is None or packet.time_base is None or not packet.size:
                continue
            start = float(packet.pts * packet.time_base)
            duration = float((packet.duration or 0) * packet.time_base)
            first = start if first is None else min(first, start)
            last_end = max(last_end, start + duration)
            if video is not None and packet.stream.index == video.index:
                video_times.append(start)
        duration_ms = round((last_end - (first or 0.0)) * 1000) if first is not None else 0

    frame_rate = 0.0
    longest_video_gap = 0.0
    if len(video_times) >= 2:
        video_times.sort()
        span = video_times[-1] - video_times[0]
        frame_rate = (len(video_times) - 1) / span if span > 0 else 0.0
        longest_video_gap = max(b - a for a, b in itertools.pairwise(video_times))

    decoded_frames: int | None = None
    decoded_size: tuple[int, int] | None = None
    if decode_video and video is not None:
        decoded_frames = 0
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                decoded_frames += 1
                decoded_size = (frame.width, frame.height)

    audio_ms, silence_ms, rms_dbfs = 0, duration_ms, -math.inf
    if audio is not None:
        audio_ms, silence_ms, rms_dbfs = _audio_levels(path, silence_dbfs)

    return SegmentProbe(
        path=str(path),
        duration_ms=duration_ms,
        has_video=video is not None and len(video_times) > 0,
        has_audio=audio is not None and audio_ms > 0,
        video_codec=video.codec_context.name if video is not None else None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        width=video.codec_context.width if video is not None else None,
        height=video.codec_context.height if video is not None else None,
        video_frames=len(video_times),
        frame_rate=round(frame_rate, 2),
        longest_video_gap_ms=round(longest_video_gap * 1000),
        decoded_video_frames=decoded_frames,
        decoded_video_size=decoded_size,
        audio_ms=audio_ms,
        longest_silence_ms=silence_ms,
        audio_rms_dbfs=round(rms_dbfs, 1),
        metadata=metadata,
    )


def _audio_levels(path: Path | str, silence_dbfs: float) -> tuple[int, int, float]:
    """Decoded audio length, longest quiet stretch and overall level (dBFS)."""
    window = 960  # 20 ms at 48 kHz
    threshold = 10 ** (silence_dbfs / 20)
    longest = run = 0.0
    total_samples = 0
    energy = 0.0
    expected_next: float | None = None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=48_000)
    with av.open(str(path)) as container:
        for decoded in container.decode(audio=0):
            for frame in resampler.resample(decoded):
                samples = frame.to_ndarray().reshape(-1)
                start = (
                    float(frame.pts * frame.time_base)
                    if frame.pts is not None and frame.time_base is not None
                    else None
                )
                if start is not None and expected_next is not None and start > expected_next:
                    run += start - expected_next  # a gap in the stream is silence too
                    longest = max(longest, run)
                for offset in range(0, len(samples), window):
                    chunk = samples[offset : offset + window]
                    if not len(chunk):
                        continue
                    rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
                    energy += rms * rms * len(chunk)
                    if rms < threshold:
                        run += len(chunk) / 48_000
                        longest = max(longest, run)
                    else:
                        run = 0.0
                total_samples += len(samples)
                if start is not None:
                    expected_next = start + len(samples) / 48_000
    level = 10 * math.log10(energy / total_samples) if total_samples and energy > 0 else -math.inf
    return round(total_samples / 48), round(longest * 1000), level
