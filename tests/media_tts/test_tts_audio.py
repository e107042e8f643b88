"""Audio files for the call and the archive: 48 kHz mono 16-bit WAV and Opus (R-23)."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from media.tts.audio import (
    concatenate,
    decode,
    opus_bytes,
    read_wav,
    resample,
    silence,
    trim_silence,
    wav_bytes,
)
from media.tts.base import PcmAudio


def _tone(seconds: float, rate: int, hz: float = 220.0) -> PcmAudio:
    t = np.arange(round(seconds * rate)) / rate
    return PcmAudio((10000 * np.sin(2 * np.pi * hz * t)).astype(np.int16), rate)


def test_resampling_to_48k_keeps_the_duration() -> None:
    for rate in (16_000, 22_050, 24_000):
        out = resample(_tone(1.5, rate))
        assert out.sample_rate == 48_000
        assert abs(out.duration_seconds - 1.5) < 0.002


def test_wav_is_mono_16_bit_48k_and_round_trips(tmp_path: Path) -> None:
    audio = resample(_tone(0.8, 24_000))
    data = wav_bytes(audio)
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
            1,
            2,
            48_000,
        )
        assert reader.getnframes() == len(audio.samples)
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    assert np.array_equal(read_wav(path).samples, audio.samples)


def test_opus_decodes_to_the_same_duration_and_content() -> None:
    audio = resample(_tone(2.0, 22_050))
    encoded = opus_bytes(audio)
    assert encoded[:4] == b"OggS"
    assert len(encoded) < len(wav_bytes(audio)) / 10  # archive copy is small
    decoded = decode(encoded)
    assert decoded.sample_rate == 48_000
    assert abs(decoded.duration_seconds - 2.0) < 0.021  # within one Opus frame
    # Lossy but faithful: the 220 Hz tone is still the dominant frequency.
    spectrum = np.abs(np.fft.rfft(decoded.samples.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 48_000 / len(decoded.samples)
    assert abs(peak_hz - 220) < 2


def test_trim_and_concatenate() -> None:
    padded = concatenate([silence(0.5, 16_000), _tone(1.0, 16_000), silence(0.7, 16_000)])
    trimmed = trim_silence(padded)
    assert 1.0 <= trimmed.duration_seconds <= 1.07
    assert trim_silence(silence(1.0)).duration_seconds == 1.0  # nothing loud: left alone
