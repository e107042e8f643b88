"""Comparing what was read with what had to be copied: character error rate and which boxes
differ (R-25)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    """`cer` = edit distance / expected length; `wrong_boxes` are indexes into the expected text
    of the characters that were not read as written (substituted, missing, or next to extra
    characters)."""

    cer: float
    distance: int
    wrong_boxes: tuple[int, ...]


def compare(expected: str, read: str) -> Comparison:
    """Levenshtein alignment of `read` against `expected`, character by character."""
    n, m = len(expected), len(read)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        table[i][0] = i
    for j in range(m + 1):
        table[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                              table[i - 1][j - 1] + (expected[i - 1] != read[j - 1]))
    wrong: set[int] = set()
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i][j] == table[i - 1][j - 1] + (
                expected[i - 1] != read[j - 1]):
            if expected[i - 1] != read[j - 1]:
                wrong.add(i - 1)
            i, j = i - 1, j - 1
        elif i > 0 and table[i][j] == table[i - 1][j] + 1:
            wrong.add(i - 1)  # a character not read at all
            i -= 1
        else:
            wrong.add(max(i - 1, 0) if i > 0 else 0)  # something extra next to box i
            j -= 1
    distance = table[n][m]
    cer = distance / n if n else float(m > 0)
    return Comparison(cer, distance, tuple(sorted(k for k in wrong if k < max(n, 1))))
