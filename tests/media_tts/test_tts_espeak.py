"""The always-available offline engine really speaks (R-23): espeak-ng reading pinyin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from media.tts import PcmAudio
from media.tts.audio import resample, silence
from media.tts.espeak import EspeakTTS

# The detector fixture (conftest.py) returns (analyse, looks_like_speech); stats are a dataclass.
Detector = tuple[Callable[[PcmAudio], Any], Callable[[Any], bool]]
SENTENCE = "本产品的犹豫期为十五日，自您签收保险合同之日起计算。"


@pytest.mark.asyncio
async def test_r23_espeak_output_is_speech_not_silence(
    espeak: EspeakTTS, speech_detector: Detector
) -> None:
    analyse, looks_like_speech = speech_detector
    audio = await espeak.synthesize(SENTENCE, voice=espeak.default_voice, rate=1.0)
    stats = analyse(audio)
    assert looks_like_speech(stats), stats
    # One syllable per hanzi: the nuclei counted in the audio follow the text (25 syllables).
    syllables = stats.syllables_per_second * stats.duration
    assert 15 <= syllables <= 32, stats
    assert 80 <= stats.median_pitch_hz <= 250, stats  # espeak's male Mandarin voice


def test_the_speech_detector_rejects_silence_noise_and_tones(speech_detector: Detector) -> None:
    analyse, looks_like_speech = speech_detector
    rate = 22_050
    rng = np.random.default_rng(1)
    t = np.arange(3 * rate) / rate
    noise = PcmAudio((rng.normal(0, 3000, 3 * rate)).astype(np.int16), rate)
    tone = PcmAudio((8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16), rate)
    for fake in (silence(3.0, rate), noise, tone):
        assert not looks_like_speech(analyse(fake)), analyse(fake)


@pytest.mark.asyncio
async def test_espeak_rate_changes_the_duration(espeak: EspeakTTS) -> None:
    normal = await espeak.synthesize(SENTENCE, voice=espeak.default_voice, rate=1.0)
    fast = await espeak.synthesize(SENTENCE, voice=espeak.default_voice, rate=1.5)
    assert fast.duration_seconds < normal.duration_seconds * 0.8


@pytest.mark.asyncio
async def test_espeak_reads_numbers_as_chinese_words(espeak: EspeakTTS) -> None:
    # Digits left as digits would make espeak read English numbers: much shorter than Chinese.
    digits = await espeak.synthesize("热线12378", voice=espeak.default_voice, rate=1.0)
    words = await espeak.synthesize("热线一二三七八", voice=espeak.default_voice, rate=1.0)
    assert np.array_equal(resample(digits).samples, resample(words).samples)
