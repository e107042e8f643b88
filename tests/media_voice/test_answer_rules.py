"""The answer rules on text (R-24): Chinese negation beats hedges, hedges beat a yes, and the
closed set and negation probes are read the same way. No model is loaded here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from media.voice.answers import (
    AnswerPolicy,
    Expectation,
    Verdict,
    candidates_for,
    classify,
    closed_set,
    collapse_repeats,
    decide,
    expected_answers,
    negation_probes,
    read_homophones,
    read_text,
)
from media.voice.asr.base import AsrError, Hearing, Transcript

pytestmark = pytest.mark.timeout(60)

A, N, U = Verdict.AFFIRMATIVE, Verdict.NEGATIVE, Verdict.UNCLEAR

TABLE = [
    # affirmative: the word asked for, its synonyms, a plain yes
    ("清楚", "清楚", A), ("清楚。", "清楚", A), ("清楚了", "清楚", A), ("我清楚", "清楚", A),
    ("是的，我清楚。", "清楚", A), ("明白了", "清楚", A), ("知道了", "清楚", A),
    ("好的，我知道了", "清楚", A), ("了解", "清楚", A), ("是的", "清楚", A),
    ("清楚，没有问题。", "清楚", A), ("没问题", "清楚", A), ("同意", "同意", A),
    ("我同意", "同意", A), ("确认", "确认", A), ("确认购买", "确认", A),
    ("是的，已经如实告知了。", "如实告知", A),
    # Whisper often writes traditional characters
    ("明白了。", "清楚", A), ("確認", "确认", A),
    # negative: any negation, wherever it stands
    ("不清楚", "清楚", N), ("不太清楚", "清楚", N), ("我还不清楚", "清楚", N),
    ("不明白", "清楚", N), ("不太明白", "清楚", N), ("没听懂", "清楚", N), ("听不懂", "清楚", N),
    ("沒聽懂", "清楚", N), ("聽不清楚", "清楚", N), ("不知道", "清楚", N),
    ("不是很明白", "清楚", N), ("还没明白", "清楚", N), ("没听清楚", "清楚", N),
    ("不同意", "同意", N), ("我不同意", "同意", N), ("不确认", "确认", N), ("我不要", "确认", N),
    ("没有", "如实告知", N), ("不是", "清楚", N), ("清楚，但是我不同意", "同意", N),
    ("我拒绝", "同意", N),
    # unclear: hedges, questions, requests to repeat, nothing that answers
    ("再说一遍", "清楚", U), ("请您再说一遍。", "清楚", U), ("嗯……应该吧。", "清楚", U),
    ("可能吧", "清楚", U), ("好像清楚吧", "清楚", U), ("应该明白吧", "清楚", U),
    ("差不多吧", "清楚", U), ("什么？", "清楚", U), ("清楚吗", "清楚", U), ("清楚？", "清楚", U),
    ("等一下", "同意", U), ("我想想", "同意", U), ("我考虑一下", "确认", U),
    ("大概知道吧", "清楚", U), ("基本清楚", "清楚", U), ("请问您是否清楚？", "清楚", U),
    ("", "清楚", U), ("嗯", "清楚", U), ("天主", "清楚", U),
    # a yes in the wrong sense: understanding is not consent
    ("清楚", "同意", U), ("明白", "确认", U),
]


@pytest.mark.parametrize(("text", "expected", "verdict"), TABLE)
def test_r24_text_rules(text: str, expected: str, verdict: Verdict) -> None:
    assert read_text(text, Expectation.of(expected)).verdict is verdict


def test_r24_expected_answers_from_every_spoken_step_of_the_sample_scripts() -> None:
    library = Path(__file__).resolve().parents[2] / "scripts_library" / "library"
    found = []
    for path in sorted(library.glob("*/v1.yaml")):
        for step in yaml.safe_load(path.read_text(encoding="utf-8"))["steps"]:
            if step.get("answer") == "spoken_answer":
                words = expected_answers(step["text"])
                assert words, f"{path.parent.name} {step['id']}: no expected answer found"
                found.append(words)
    assert found and {("清楚",), ("同意",), ("如实告知",)} <= set(found)
    assert expected_answers("请问您是否同意？请回答“同意”。") == ("同意",)
    assert expected_answers("请问您是否已如实告知？") == ("如实告知",)
    assert expected_answers("请确认。") == ()
    assert Expectation.from_step_text("请确认。").words == ("清楚",)


@pytest.mark.parametrize("expected", ["清楚", "同意", "确认", "如实告知", "明白"])
def test_r24_closed_set_is_labelled_as_the_rules_read_it(expected: str) -> None:
    expectation = Expectation.of(expected)
    for text, verdict in candidates_for(expectation).items():
        reading = read_text(text, expectation)
        if verdict is Verdict.UNCLEAR:
            assert reading.verdict is not Verdict.AFFIRMATIVE, text
        else:
            assert reading.verdict is verdict, text


@pytest.mark.parametrize("text", ["清楚", "我清楚了", "好的，我知道了", "是的，我清楚。",
                                  "对，清楚", "同意", "是的，已经如实告知了"])
def test_r24_negation_probes_are_negative_and_a_syllable_away(text: str) -> None:
    expectation = Expectation.of("清楚" if "同意" not in text and "告知" not in text
                                 else ("同意" if "同意" in text else "如实告知"))
    probes = negation_probes(text, expectation)
    assert probes
    for probe in probes:
        assert read_text(probe, expectation).verdict is Verdict.NEGATIVE, probe
    assert "不清楚" in negation_probes("我清楚", Expectation.of("清楚"))  # 我 heard for 不


def test_r24_a_looping_transcription_counts_once() -> None:
    assert collapse_repeats("我清楚了我清楚了") == "我清楚了"
    assert collapse_repeats("清楚，清楚，清楚。") == "清楚"
    assert collapse_repeats("是的，我清楚") == "是的我清楚"
    labelled = closed_set(Hearing("我清楚了我清楚了", -0.1, 0.0, 1.0, 0.1), Expectation.of("清楚"))
    assert labelled["我清楚了"] is Verdict.AFFIRMATIVE and labelled["不清楚了"] is Verdict.NEGATIVE


def test_r24_only_a_plain_transcription_competes_as_a_yes() -> None:
    expectation = Expectation.of("清楚")
    hearing = Hearing("我清楚了。", -0.1, 0.0, 1.0, 0.1)
    labelled = closed_set(hearing, expectation)
    assert labelled["我清楚了"] is Verdict.AFFIRMATIVE
    assert labelled["我不清楚了"] is Verdict.NEGATIVE
    # 每天清楚 was heard for 没听清楚: unknown words, so it is no affirmative candidate.
    odd = closed_set(Hearing("每天清楚", -0.1, 0.0, 1.0, 0.1), expectation)
    assert "每天清楚" not in odd and "每天不清楚" not in odd


def _decide(text: str, scores: dict[str, float], no_speech: float = 0.0) -> Verdict:
    expectation = Expectation.of("清楚")
    hearing = Hearing(text, -0.2, no_speech, 1.0, 0.1)
    return decide(hearing, expectation, closed_set(hearing, expectation), scores,
                  AnswerPolicy()).verdict


def test_r24_decision_fails_closed() -> None:
    yes = {"清楚": -0.1, "不清楚": -9.0, "嗯": -8.0}
    assert _decide("清楚", yes) is Verdict.AFFIRMATIVE
    # The transcription's negation or hedge wins over the audio's yes.
    assert _decide("不清楚", yes) is Verdict.NEGATIVE
    assert _decide("清楚吧", yes) is Verdict.UNCLEAR
    # A negated reading a few percent likely is enough to withhold the yes ...
    assert _decide("清楚", {"清楚": -0.1, "不清楚": -3.5}) is Verdict.UNCLEAR
    # ... and a likely one makes it negative, whatever the transcription says.
    assert _decide("清楚", {"清楚": -1.0, "不清楚": -0.5}) is Verdict.NEGATIVE
    # The audio fits 清楚 but the words heard hold no yes (心土东 for 听不懂): not a yes.
    assert _decide("心土东", yes) is Verdict.UNCLEAR
    # Nothing scored, nothing heard, nothing finite: never a yes.
    assert _decide("清楚", {}) is Verdict.UNCLEAR
    assert _decide("", {"清楚": -0.1}, no_speech=0.9) is Verdict.UNCLEAR
    assert _decide("清楚", {"清楚": -math.inf, "不清楚": -math.inf}) is Verdict.UNCLEAR


class ScriptedRecognizer:
    """Says what it is told to hear; counts how often it was asked to score."""

    name = "scripted"
    version = "scripted 1"

    def __init__(self, text: str, scores: dict[str, float] | None = None,
                 fail: bool = False, prompted: str | None = None) -> None:
        self.text, self.scores, self.fail, self.scored = text, scores or {}, fail, 0
        self.prompted = text if prompted is None else prompted  # heard with a prompt

    def unavailable_reason(self) -> str | None:
        return None

    def transcribe(self, samples: object, *, prompt: str | None = None) -> Transcript:
        raise NotImplementedError

    def hear(self, samples: object, *, prompt: str | None = None) -> Hearing:
        if self.fail:
            raise AsrError("the engine fell over")
        return Hearing(self.prompted if prompt else self.text, -0.1, 0.0, 1.0, 0.01)

    def score(self, hearing: Hearing, candidates: Sequence[str], *,
              prompt: str | None = None) -> dict[str, float]:
        self.scored += 1
        return {c: self.scores.get(c, -20.0) for c in candidates}


def test_r24_classify_reports_engine_and_fails_closed_on_errors() -> None:
    import numpy as np

    audio = np.zeros(16_000, dtype=np.float32)
    said_yes = ScriptedRecognizer("清楚", {"清楚": -0.05})
    verdict = classify(said_yes, audio, "清楚")
    assert verdict.verdict is Verdict.AFFIRMATIVE and verdict.engine == "scripted"
    assert verdict.engine_version == "scripted 1" and verdict.transcript == "清楚"
    assert verdict.as_dict()["verdict"] == "affirmative"
    said_no = ScriptedRecognizer("不清楚", {"清楚": -0.05})
    assert classify(said_no, audio, "清楚").verdict is Verdict.NEGATIVE
    assert said_no.scored == 0  # a transcription that says no needs no scoring
    broken = classify(ScriptedRecognizer("", fail=True), audio, "清楚")
    assert broken.verdict is Verdict.UNCLEAR and broken.reason.startswith("engine_error")


@pytest.mark.parametrize(("heard", "read"), [
    ("青楚", "清楚"), ("清出", "清楚"), ("我青楚了", "我清楚了"), ("名白", "明白"),
    ("知到了", "知道了"),
    # never when another syllable may be a negation or a question written as a homophone
    ("部青楚", "部青楚"), ("美听青楚", "美听青楚"), ("青楚吗", "青楚吗"), ("青楚嘛", "青楚嘛"),
    # a near miss is not a homophone
    ("千主", "千主"), ("心处", "心处"),
])
def test_r24_homophones_are_read_as_the_word_but_never_hide_a_negation(heard: str,
                                                                        read: str) -> None:
    assert read_homophones(heard, Expectation.of("清楚")) == read


def test_r24_classify_reads_homophones_and_hears_an_empty_answer_again() -> None:
    import numpy as np

    audio = np.zeros(16_000, dtype=np.float32)
    sounded = classify(ScriptedRecognizer("青楚", {"清楚": -0.05}), audio, "清楚")
    assert sounded.verdict is Verdict.AFFIRMATIVE and sounded.transcript == "青楚"
    assert sounded.reason.endswith(",homophone:清楚")
    # 部 may be 不: the audio's yes alone does not make it one
    assert classify(ScriptedRecognizer("部青楚", {"清楚": -0.05}), audio,
                    "清楚").verdict is Verdict.UNCLEAR
    # Nothing heard: heard again with a prompt, taken when it reads as a yes ...
    again = classify(ScriptedRecognizer("", {"清楚": -0.05}, prompted="清楚"), audio, "清楚")
    assert again.verdict is Verdict.AFFIRMATIVE and again.transcript == "清楚"
    # ... never when it echoes the prompt (以下是… holds 是), nor when it hallucinates a no
    # (the first hearing, which cannot say yes, stands)
    for prompted in ("以下是普通话的句子。", "是的不顺利"):
        verdict = classify(ScriptedRecognizer("", {"清楚": -0.05}, prompted=prompted), audio,
                           "清楚")
        assert verdict.verdict is Verdict.UNCLEAR and verdict.transcript == "", prompted
    off = AnswerPolicy(retry_prompt=None, homophones=False)
    assert classify(ScriptedRecognizer("", {"清楚": -0.05}, prompted="清楚"), audio, "清楚",
                    policy=off).verdict is Verdict.UNCLEAR
    assert classify(ScriptedRecognizer("青楚", {"清楚": -0.05}), audio, "清楚",
                    policy=off).verdict is Verdict.UNCLEAR


def test_r24_a_transcription_longer_than_the_speech_is_not_read() -> None:
    """0.3 s of speech (0.7 s cut with its two 0.2 s margins) cannot hold 我会不会说: Whisper
    filled a fragment; its 不 must not make the answer negative, nor anything a yes."""
    import numpy as np

    cut = np.zeros(round(0.7 * 16_000), dtype=np.float32)
    filled = classify(ScriptedRecognizer("我会不会说"), cut, "清楚")
    assert filled.verdict is Verdict.UNCLEAR and filled.reason == "transcript:implausible"
    assert classify(ScriptedRecognizer("不清楚"), cut, "清楚").verdict is Verdict.NEGATIVE
    said = classify(ScriptedRecognizer("清楚清楚清楚清楚", {"清楚": -0.05}), cut, "清楚")
    assert said.verdict is Verdict.AFFIRMATIVE  # a loop of the decoder counts once
