"""Audio plumbing for TTS output: resampling, joining, trimming, WAV and Opus files (R-23).

The call plays 48 kHz mono 16-bit WAV; the archive keeps Opus. PyAV (FFmpeg's libswresample and
libopus, shipped in its wheel) does resampling, decoding and Opus encoding, so no system FFmpeg
is needed.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from media.tts.base import PcmAudio, Samples

CALL_SAMPLE_RATE = 48_000
OPUS_BITRATE = 32_000


def resample(audio: PcmAudio, rate: int = CALL_SAMPLE_RATE) -> PcmAudio:
    """`audio` at `rate` Hz (mono, 16-bit)."""
    if audio.sample_rate == rate:
        return audio
    if len(audio.samples) == 0:
        return PcmAudio(np.zeros(0, dtype=np.int16), rate)
    frame = av.AudioFrame.from_ndarray(audio.samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = audio.sample_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frames = [*resampler.resample(frame), *resampler.resample(None)]
    return PcmAudio(_join_frames(frames), rate)


def decode(data: bytes | Path, rate: int = CALL_SAMPLE_RATE) -> PcmAudio:
    """Decode any audio file FFmpeg reads (MP3, WAV, Opus, ...) to mono 16-bit PCM at `rate`."""
    source: io.BytesIO | str = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with av.open(source, mode="r") as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            frames = []
            for frame in container.decode(audio=0):
                frames.extend(resampler.resample(frame))
            frames.extend(resampler.resample(None))
    except (av.FFmpegError, IndexError) as error:
        raise ValueError(f"cannot decode audio: {error}") from error
    return PcmAudio(_join_frames(frames), rate)


def _join_frames(frames: Sequence[av.AudioFrame]) -> Samples:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype(np.int16)


def silence(seconds: float, rate: int = CALL_SAMPLE_RATE) -> PcmAudio:
    return PcmAudio(np.zeros(round(seconds * rate), dtype=np.int16), rate)


def concatenate(parts: Sequence[PcmAudio]) -> PcmAudio:
    """Join audio of one sample rate."""
    if not parts:
        raise ValueError("nothing to concatenate")
    rates = {part.sample_rate for part in parts}
    if len(rates) != 1:
        raise ValueError(f"mixed sample rates: {sorted(rates)}")
    return PcmAudio(np.concatenate([part.samples for part in parts]), parts[0].sample_rate)


def trim_silence(audio: PcmAudio, threshold: int = 200, keep_seconds: float = 0.03) -> PcmAudio:
    """Cut leading and trailing near-silence so that pauses between sentences are ours, not the
    engine's (engines pad each utterance differently)."""
    loud = np.flatnonzero(np.abs(audio.samples.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return audio
    keep = round(keep_seconds * audio.sample_rate)
    start = max(0, int(loud[0]) - keep)
    end = min(len(audio.samples), int(loud[-1]) + 1 + keep)
    return PcmAudio(audio.samples[start:end].copy(), audio.sample_rate)


def wav_bytes(audio: PcmAudio) -> bytes:
    """A standard RIFF/WAVE file (mono, 16-bit)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(audio.sample_rate)
        writer.writeframes(audio.samples.astype("<i2").tobytes())
    return buffer.getvalue()


def read_wav(path: Path) -> PcmAudio:
    """Read a mono 16-bit WAV file written by `wav_bytes`."""
    with wave.open(str(path), "rb") as reader:
        if reader.getnchannels() != 1 or reader.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit WAV")
        frames = reader.readframes(reader.getnframes())
        return PcmAudio(np.frombuffer(frames, dtype="<i2").astype(np.int16), reader.getframerate())


def opus_bytes(audio: PcmAudio, bitrate: int = OPUS_BITRATE) -> bytes:
    """An Ogg Opus file of `audio` (resampled to 48 kHz, Opus's native rate)."""
    audio = resample(audio, CALL_SAMPLE_RATE)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=CALL_SAMPLE_RATE)
        stream.layout = "mono"
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(
            audio.samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = CALL_SAMPLE_RATE
        frame.pts = 0
        # PyAV buffers to the encoder's frame size itself; flushing with None writes the tail.
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
