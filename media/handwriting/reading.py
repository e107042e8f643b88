"""Reading a hand-copied sentence (R-25): the grid's boxes are drawn ten to a line with one
pen, read line by line, and the text is compared with the characters to copy.

Line by line, not box by box: on synthetic handwriting both read the risk sentence with a CER
of 0-3 %, but a line of ten boxes is read in a fifth of the time (docs/handwriting.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from media.handwriting import HandwritingRecognizer
from media.handwriting.compare import Comparison, compare
from media.handwriting.ink import Grid, render_rows

DEFAULT_MAX_CER = 0.2
PER_ROW = 10


def writable(text: str) -> str:
    """The characters of `text` that get a box: the Chinese characters (punctuation and spaces
    are printed in the grid, not written)."""
    return "".join(c for c in text if "\u4e00" <= c <= "\u9fff")


@dataclass(frozen=True)
class CopyReading:
    text: str
    comparison: Comparison
    engine: str
    line_scores: tuple[float, ...]


def read_copy(engine: HandwritingRecognizer, grid: Grid, expected: str) -> CopyReading:
    """What the engine reads in `grid`, compared with `expected` (its writable characters)."""
    rows = render_rows(grid, PER_ROW)
    readings = engine.read_lines([image for _, image in rows])
    text = "".join(writable(r.text) for r in readings)
    return CopyReading(text, compare(expected, text), engine.name,
                       tuple(round(r.score, 4) for r in readings))
