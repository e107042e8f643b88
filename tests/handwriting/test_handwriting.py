"""Hand-copy and signature checks on synthetic handwriting (R-25): the right sentence in three
hands is read and accepted, the wrong sentence is refused by its CER, blank and scribbled boxes
are named, malformed stroke data is refused, and a signature needs real strokes."""

from __future__ import annotations

from typing import Any

import pytest

from media.handwriting import recognizer
from media.handwriting.compare import compare
from media.handwriting.ink import MalformedInk, grid_problems, pad_problems, parse_grid, parse_pad
from media.handwriting.reading import DEFAULT_MAX_CER, read_copy, writable
from testing import handwriting as synthetic
from workflow.consent_texts import RISK_SENTENCE

pytestmark = pytest.mark.timeout(120)
EXPECTED = writable(RISK_SENTENCE)


def test_risk_sentence_has_38_boxes_punctuation_printed_R25() -> None:
    assert len(EXPECTED) == 38 and "，" not in EXPECTED and "、" not in EXPECTED


def test_cer_and_the_boxes_that_differ_R25() -> None:
    assert compare("本人已阅读", "本人已阅读").cer == 0
    result = compare("本人已阅读", "本入已读")
    assert result.distance == 2 and result.wrong_boxes == (1, 3)
    assert compare("本人已阅读", "").cer == 1.0


@pytest.mark.parametrize("style", sorted(synthetic.STYLES))
def test_the_right_sentence_is_read_in_each_hand_R25(style: str) -> None:
    grid = parse_grid(synthetic.grid(RISK_SENTENCE, style, seed=3), len(EXPECTED))
    assert grid_problems(grid)[1] is None
    reading = read_copy(recognizer(), grid, EXPECTED)
    assert reading.comparison.cer <= 0.06, reading.text
    assert reading.engine.startswith("paddleocr")


def test_the_wrong_sentence_is_refused_by_its_cer_R25() -> None:
    wrong = ("我今天去银行存款买基金收益稳定高" * 3)[:len(EXPECTED)]
    grid = parse_grid(synthetic.grid(wrong, "neat", seed=1), len(EXPECTED))
    assert grid_problems(grid)[1] is None  # real handwriting, just not the sentence
    reading = read_copy(recognizer(), grid, EXPECTED)
    assert reading.comparison.cer > DEFAULT_MAX_CER
    assert len(reading.comparison.wrong_boxes) > 30


def test_blank_zigzag_and_scribbled_boxes_are_named_R25() -> None:
    body = synthetic.grid(RISK_SENTENCE, "neat", seed=2, blank=(4,), zigzags=(0, 9),
                          scribbles=(20,))
    reports, problem = grid_problems(parse_grid(body, len(EXPECTED)))
    assert problem == ("第 5 个字格没有写字；第 1、10、21 个字格像是乱画或涂抹，不是工整的字。"
                       "请在这些字格中逐字工整抄写后再提交")
    assert reports[0].max_reversals > 4


def test_a_single_dot_in_a_box_counts_as_blank_R25() -> None:
    body = synthetic.grid(RISK_SENTENCE, "neat", seed=2)
    body["boxes"][7] = [[[30, 30, 0], [31, 31, 20]]]
    _, problem = grid_problems(parse_grid(body, len(EXPECTED)))
    assert problem is not None and problem.startswith("第 8 个字格没有写字")


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.update(kind="pad"), "抄录笔迹格式不正确"),
    (lambda b: b["boxes"].pop(), "抄录字格数量不对：应为 38 个，收到 37 个"),
    (lambda b: b["boxes"][0][0].append([1, 2]), "每个点应为 [x, y, 时间]"),
    (lambda b: b["boxes"][0][0].append([1, "x", 3]), "坐标不是数字"),
    (lambda b: b["boxes"][0][0].append([1e9, 2, 3]), "坐标超出范围"),
    (lambda b: b["boxes"][0][0].append([1, 2, 0]), "时间倒流"),
    (lambda b: b["boxes"][1].extend([[[1, 1, 10_000]]] * 61), "每处最多 60 笔"),
    (lambda b: b["boxes"][2].append([]), "笔画为空"),
])
def test_malformed_stroke_data_is_refused_R25(mutate: Any, message: str) -> None:
    body = synthetic.grid(RISK_SENTENCE, "neat", seed=0)
    mutate(body)
    with pytest.raises(MalformedInk) as error:
        parse_grid(body, len(EXPECTED))
    assert message in error.value.message


def test_too_many_points_are_refused_R25() -> None:
    body = synthetic.pad()
    body["strokes"] = [[[i % 300, 50, i] for i in range(2000)]] * 16
    with pytest.raises(MalformedInk, match="笔迹点数过多"):
        parse_pad(body)


def test_a_written_name_is_a_signature_R25() -> None:
    for seed in range(5):
        assert pad_problems(parse_pad(synthetic.pad("张三丰", seed=seed))) is None
        assert pad_problems(parse_pad(synthetic.pad("李四", seed=seed, style="neat"))) is None


@pytest.mark.parametrize("body, message", [
    ({"kind": "pad", "width": 340, "height": 200, "strokes": []}, "没有检测到签名笔迹"),
    (synthetic.dot_pad(), "没有检测到签名笔迹"),
    (synthetic.line_pad(), "签名只是一条直线"),
    ({"kind": "pad", "width": 340, "height": 200,
      "strokes": [[[10 + i % 5, 10 + i // 5, i * 10] for i in range(25)]]}, "签名太小或太短"),
])
def test_a_dot_a_line_or_a_tiny_mark_is_not_a_signature_R25(body: dict[str, Any],
                                                            message: str) -> None:
    problem = pad_problems(parse_pad(body))
    assert problem is not None and message in problem
