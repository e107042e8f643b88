"""Handwriting of the customer (R-25): stroke data, checks against blank boxes, zig-zags and
pretend signatures, offline recognition of the hand-copied sentence and its comparison with the
text to copy. The recogniser is chosen here, never by the workflow (docs/handwriting.md)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image


@dataclass(frozen=True, slots=True)
class LineReading:
    text: str
    score: float


@runtime_checkable
class HandwritingRecognizer(Protocol):
    """Reads lines of handwritten Chinese (black ink on white). Thread-safe."""

    @property
    def name(self) -> str: ...

    def read_lines(self, lines: list[Image.Image]) -> list[LineReading]: ...


_lock = threading.Lock()
_engines: dict[tuple[str, Path | None], HandwritingRecognizer] = {}


def recognizer(engine: str = "paddleocr", cache_dir: Path | None = None) -> HandwritingRecognizer:
    """The process's recogniser (loaded once, ~1 s; later calls reuse it)."""
    key = (engine, cache_dir)
    with _lock:
        if key not in _engines:
            if engine != "paddleocr":
                raise ValueError(f"unknown handwriting engine {engine!r}")
            from media.handwriting.paddle import PaddleHandwriting

            _engines[key] = PaddleHandwriting(cache_dir)
        return _engines[key]
