"""The room's TTS audio track: plays the script's pre-rendered clips to both parties (R-23).

One pacer per room encodes each 20 ms of the current clip to Opus once and publishes the packet
to a fanout that feeds both parties' TTS tracks and the ``tts`` recording — so the recording
holds exactly the packets that were sent. Between clips it sends a cached Opus silence packet,
keeping the track continuous. A clip that is replaced, stopped or closed is reported as cut;
one that ran to its end while the customer was connected throughout is reported complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from media.call.events import ClipFinished
from media.call.relay import PacketFanout
from media.recording.packets import OPUS_CLOCK_RATE, EncodedPacket

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


def read_clip(path: Path) -> np.ndarray:
    """Samples of a 48 kHz mono 16-bit PCM WAV file (the TTS engines' output format)."""
    with wave.open(str(path), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(
                f"{path}: need 48 kHz mono 16-bit PCM, got {wav.getframerate()} Hz, "
                f"{wav.getnchannels()} channel(s), {8 * wav.getsampwidth()} bit"
            )
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


def _opus_encoder() -> av.AudioCodecContext:
    encoder = av.CodecContext.create("libopus", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 48_000
    encoder.options = {"application": "voip"}
    return encoder


def _encode(encoder: av.AudioCodecContext, samples: np.ndarray | None, pts: int) -> list[bytes]:
    if samples is None:
        return [bytes(packet) for packet in encoder.encode(None)]
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    return [bytes(packet) for packet in encoder.encode(frame)]


@dataclass
class _Clip:
    clip_id: str
    samples: np.ndarray
    encoder: av.AudioCodecContext
    position: int = 0
    played_samples: int = 0
    flushed: bool = False

    @property
    def duration_ms(self) -> int:
        return round(len(self.samples) * 1000 / SAMPLE_RATE)


class TtsPlayer:
    """Paces the TTS track of one room in real time and reports how each clip ended."""

    def __init__(
        self,
        session_id: str,
        fanout: PacketFanout,
        *,
        epoch: int,
        customer_listening: Callable[[], bool],
        on_started: Callable[[str, int], None],
        on_finished: Callable[[ClipFinished], None],
    ) -> None:
        self.session_id = session_id
        self._fanout = fanout
        self._epoch = epoch
        self._customer_listening = customer_listening
        self._on_started = on_started
        self._on_finished = on_finished
        self._clip: _Clip | None = None
        self._timestamp = 0
        self._silence = _encode(_opus_encoder(), np.zeros(FRAME_SAMPLES, np.int16), 0)[0]
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def play(self, clip_id: str, wav_path: Path) -> None:
        """Start ``clip_id`` now; a clip still playing is cut (reported incomplete)."""
        samples = await asyncio.to_thread(read_clip, wav_path)
        self._end_clip(complete=False)
        self._clip = _Clip(clip_id=clip_id, samples=samples, encoder=_opus_encoder())
        self._on_started(clip_id, self._clip.duration_ms)

    def stop_clip(self) -> None:
        """Cut the clip that is playing, if any."""
        self._end_clip(complete=False)

    @property
    def playing(self) -> str | None:
        return self._clip.clip_id if self._clip else None

    async def close(self) -> None:
        self._end_clip(complete=False)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            tick += 1
            delay = start + tick * FRAME_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.5:
                # The loop stalled: resume the pace from now rather than bursting to catch up.
                start = loop.time() - tick * FRAME_SECONDS
            try:
                self._tick()
            except Exception:
                logger.exception("tts %s: clip failed", self.session_id)
                self._end_clip(complete=False)

    def _tick(self) -> None:
        clip = self._clip
        payloads = [self._silence]
        if clip is not None:
            chunk = clip.samples[clip.position : clip.position + FRAME_SAMPLES]
            if len(chunk):
                sent = len(chunk)
                if sent < FRAME_SAMPLES:
                    chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - sent, np.int16)])
                payloads = _encode(clip.encoder, chunk, clip.position) or [self._silence]
                clip.position += sent
                if self._customer_listening():
                    clip.played_samples += sent
            else:
                # The encoder's look-ahead holds the clip's last few milliseconds: flush them.
                payloads = _encode(clip.encoder, None, clip.position) or [self._silence]
                self._end_clip(complete=True)
        for payload in payloads:
            self._fanout.publish(
                EncodedPacket(
                    kind="audio",
                    data=payload,
                    timestamp=self._timestamp,
                    clock_rate=OPUS_CLOCK_RATE,
                    keyframe=True,
                    received_at=time.time(),
                    epoch=self._epoch,
                )
            )
            self._timestamp += FRAME_SAMPLES

    def _end_clip(self, *, complete: bool) -> None:
        clip, self._clip = self._clip, None
        if clip is None:
            return
        total = len(clip.samples)
        self._on_finished(
            ClipFinished(
                session_id=self.session_id,
                clip_id=clip.clip_id,
                played_ms=round(clip.played_samples * 1000 / SAMPLE_RATE),
                duration_ms=clip.duration_ms,
                complete=complete and clip.played_samples == total,
            )
        )
