"""Fixtures for the TTS tests: fake engines with call counts, the real espeak-ng engine, and a
small speech detector that tells speech from silence, noise and tones without any model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from media.tts import PcmAudio, TtsError
from media.tts.espeak import EspeakTTS


class FakeEngine:
    """Deterministic engine: a 150 Hz buzz as long as the text needs, or a scripted failure."""

    def __init__(
        self,
        name: str,
        *,
        fail_on: str | None = None,
        hang: bool = False,
        unavailable: str | None = None,
        seconds_per_char: float = 0.05,
        sample_rate: int = 16_000,
    ) -> None:
        self.name = name
        self.default_voice = f"{name}-voice"
        self.fail_on = fail_on
        self.hang = hang
        self.unavailable = unavailable
        self.seconds_per_char = seconds_per_char
        self.sample_rate = sample_rate
        self.calls: list[str] = []

    def unavailable_reason(self) -> str | None:
        return self.unavailable

    async def synthesize(self, text: str, *, voice: str, rate: float) -> PcmAudio:
        self.calls.append(text)
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail_on is not None and self.fail_on in text:
            raise TtsError(f"{self.name} cannot say {self.fail_on!r}")
        count = round(len(text) * self.seconds_per_char / rate * self.sample_rate)
        t = np.arange(count) / self.sample_rate
        buzz = 8000 * np.sign(np.sin(2 * np.pi * 150 * t))
        return PcmAudio(buzz.astype(np.int16), self.sample_rate)


@pytest.fixture
def fake_engine() -> Callable[..., FakeEngine]:
    return FakeEngine


@pytest.fixture(scope="session")
def espeak() -> EspeakTTS:
    """The real espeak-ng engine; missing espeak-ng is a failure, not a skip: it is the one
    engine that must work on every machine (apt-get install espeak-ng)."""
    engine = EspeakTTS()
    reason = engine.unavailable_reason()
    assert reason is None, reason
    return engine


@dataclass(frozen=True)
class SpeechStats:
    duration: float
    active_ratio: float  # frames above the noise floor
    voiced_ratio: float  # active frames with a clear pitch period
    median_pitch_hz: float
    syllables_per_second: float


def analyse(audio: PcmAudio) -> SpeechStats:
    """Frame-level statistics that separate speech from silence, noise and steady tones.

    Speech alternates voiced nuclei (periodic, pitch 70-400 Hz) with consonants and short gaps,
    a few syllables per second; silence has no active frames, noise has no pitch, a steady tone
    has one long 'syllable'.
    """
    rate = audio.sample_rate
    x = audio.samples.astype(np.float64) / 32768.0
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    count = max(0, 1 + (len(x) - frame) // hop)
    if count == 0:
        return SpeechStats(audio.duration_seconds, 0.0, 0.0, 0.0, 0.0)
    frames = np.stack([x[i * hop : i * hop + frame] for i in range(count)])
    rms = np.sqrt((frames**2).mean(axis=1))
    peak = rms.max()
    active = rms > max(0.05 * peak, 1e-3)
    min_lag, max_lag = rate // 400, rate // 70
    # Autocorrelation of every active frame at once, through the FFT (Wiener-Khinchin).
    segments = frames[active] - frames[active].mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(segments, n=2 * frame, axis=1)
    corr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    energy = np.maximum(corr[:, :1], 1e-12)
    window = corr[:, min_lag:max_lag] / energy
    lags = np.argmax(window, axis=1)
    strength = window[np.arange(len(lags)), lags]
    is_voiced = strength > 0.5
    voiced = int(is_voiced.sum())
    pitches = list(rate / (lags[is_voiced] + min_lag))
    envelope = np.convolve(rms, np.ones(5) / 5, mode="same")
    high, low = 0.35 * envelope.max(), 0.15 * envelope.max()
    syllables, above = 0, False
    for value in envelope:
        if not above and value > high:
            syllables, above = syllables + 1, True
        elif above and value < low:
            above = False
    active_count = int(active.sum())
    return SpeechStats(
        duration=audio.duration_seconds,
        active_ratio=active_count / count,
        voiced_ratio=voiced / active_count if active_count else 0.0,
        median_pitch_hz=float(np.median(pitches)) if pitches else 0.0,
        syllables_per_second=syllables / audio.duration_seconds,
    )


def looks_like_speech(stats: SpeechStats) -> bool:
    return (
        stats.active_ratio > 0.3
        and 0.3 < stats.voiced_ratio < 0.98
        and 70 <= stats.median_pitch_hz <= 400
        and 1.5 <= stats.syllables_per_second <= 9
    )


@pytest.fixture
def speech_detector() -> tuple[Callable[[PcmAudio], SpeechStats], Callable[[SpeechStats], bool]]:
    return analyse, looks_like_speech
