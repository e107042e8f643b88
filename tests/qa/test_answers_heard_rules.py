"""R-24: how QA reads what the customer said against a stored affirmative answer. A "no" that
negates none of the accepted words while another clause says one (不得，我清楚: 是的 misheard by
the recogniser) is for the inspector to hear (major), not a certain contradiction (critical); a
negated accepted word (不清楚) stays critical (tests/qa/test_transcripts.py)."""

from __future__ import annotations

import pytest

from media.voice.answers import Expectation
from qa.checks import _negation_beside_yes

ASKS_CLEAR = Expectation.from_step_text("您是否清楚犹豫期的规定？请回答“清楚”。")


@pytest.mark.parametrize(("said", "mixed"), [
    ("不得，我清楚", True),      # 是的，我清楚 read by the recogniser as 不得
    ("不，我清楚", True),        # "no (questions), I'm clear"
    ("不清楚，我清楚", False),   # a negated 清楚 is a real no, whatever follows
    ("不，我不清楚", False),     # no twice: a contradiction
    ("不清楚", False),
    ("我不清楚。", False),
    ("是的，我清楚", False),     # no negation at all
    ("我清楚，但是不太明白", False),  # 明白 negated: a real no
    ("是的，不是", False),       # a negated yes
])
def test_a_no_beside_an_unnegated_yes_is_mixed(said: str, mixed: bool) -> None:
    assert _negation_beside_yes(said, ASKS_CLEAR) is mixed
