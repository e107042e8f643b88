"""Pre-encoded synthetic media for tests, benchmarks and monitoring probes of the call hub.

:func:`write_test_media` makes a WebM file (VP8 + Opus) with a solid-coloured corner, a moving
bar and noise (so the bitrate is that of a real camera, not of a flat picture) and a tone;
:class:`PrerecordedTrack` sends its frames, already encoded, in real time and in a loop, like a
browser would — so a synthetic caller costs almost no CPU and the server sees real VP8/Opus.
"""

from __future__ import annotations

import asyncio
import fractions
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.recording.packets import OPUS_CLOCK_RATE, VP8_CLOCK_RATE, MediaKind


def write_test_media(
    path: Path,
    *,
    seconds: float = 10.0,
    size: tuple[int, int] = (640, 480),
    fps: int = 15,
    rgb: tuple[int, int, int] = (200, 40, 40),
    tone_hz: float = 440.0,
    keyframe_interval: int = 30,
    video_bitrate: int = 600_000,
    voice: Path | None = None,
) -> Path:
    """Encode a synthetic VP8 + Opus WebM file (libvpx realtime; a few seconds of CPU). The
    audio is a tone with a speech-like envelope, or `voice` (a mono 16-bit WAV, e.g. espeak-ng
    speech, repeated to fill the clip): voice activity detection hears only the latter."""
    width, height = size
    rng = np.random.default_rng(7)
    with av.open(str(path), "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = video_bitrate
        video.gop_size = keyframe_interval
        video.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        audio = container.add_stream("libopus", rate=48_000)
        audio.layout = "mono"
        audio.bit_rate = 32_000
        frames = round(seconds * fps)
        for index in range(frames):
            picture = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            picture[: height // 2, : width // 2] = rgb  # a flat corner: the colour to check
            bar = (index * 8) % width
            picture[:, bar : bar + 16] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(
                format="yuv420p"
            )
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = round(seconds * 48_000)
        if voice is not None:
            wave = np.resize(_wav_48k(voice), samples)
        else:
            t = np.arange(samples) / 48_000
            envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)  # speech-like loudness changes
            wave = (np.sin(2 * np.pi * tone_hz * t) * envelope * 12_000).astype(np.int16)
        for offset in range(0, samples - 959, 960):
            sound = av.AudioFrame.from_ndarray(
                wave[offset : offset + 960].reshape(1, -1), format="s16", layout="mono"
            )
            sound.sample_rate = 48_000
            sound.pts = offset
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


def _wav_48k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path}: need a mono 16-bit WAV")
        rate = wav.getframerate()
        raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    n = round(raw.size * 48_000 / rate)
    return np.interp(np.linspace(0, raw.size - 1, n), np.arange(raw.size),
                     raw.astype(np.float64)).astype(np.int16)


@dataclass(frozen=True)
class EncodedMedia:
    """The encoded frames of a file, in memory: (seconds from start, payload) per kind."""

    video: list[tuple[float, bytes]]
    audio: list[tuple[float, bytes]]
    seconds: float

    @classmethod
    def load(cls, path: Path) -> EncodedMedia:
        frames: dict[str, list[tuple[float, bytes]]] = {"video": [], "audio": []}
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.pts is None or packet.time_base is None or not packet.size:
                    continue
                frames[packet.stream.type].append(
                    (float(packet.pts * packet.time_base), bytes(packet))
                )
        for kind in frames:
            frames[kind].sort(key=lambda item: item[0])
        end = max(
            (items[-1][0] + (1 / 15 if kind == "video" else 0.02))
            for kind, items in frames.items()
            if items
        )
        return cls(video=frames["video"], audio=frames["audio"], seconds=end)


class PrerecordedTrack(MediaStreamTrack):
    """Sends pre-encoded frames in real time, looping; aiortc packetises them as they are."""

    def __init__(self, media: EncodedMedia, kind: MediaKind) -> None:
        super().__init__()
        self.kind = kind
        self._frames = media.video if kind == "video" else media.audio
        self._loop_seconds = media.seconds
        self._clock_rate = VP8_CLOCK_RATE if kind == "video" else OPUS_CLOCK_RATE
        self._index = 0
        self._start: float | None = None
        self.frames_sent = 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live" or not self._frames:
            raise MediaStreamError
        loops, position = divmod(self._index, len(self._frames))
        offset, payload = self._frames[position]
        at = loops * self._loop_seconds + offset
        if self._start is None:
            self._start = time.monotonic() - at
        delay = self._start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._index += 1
        packet = av.Packet(payload)
        packet.pts = round(at * self._clock_rate)
        packet.time_base = fractions.Fraction(1, self._clock_rate)
        self.frames_sent += 1
        return packet
