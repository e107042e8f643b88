"""ID-card OCR engines behind one ``IdCardOcr`` protocol (R-12).

``paddleocr`` (default) runs PaddleOCR 3.x on onnxruntime with model folders built from the
PP-OCRv6 ONNX files inside the rapidocr wheel; ``rapidocr`` runs the same files with zero setup.
The engine is chosen by ``OcrConfig.engine``, never by the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from media.identity.config import IdentityConfig
from media.identity.imaging import Frame
from media.identity.results import EngineInfo


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One recognised text line: its text, recognition score and quadrilateral (4 × (x, y))."""

    text: str
    score: float
    quad: tuple[tuple[float, float], ...]

    @property
    def left(self) -> float:
        return min(p[0] for p in self.quad)

    @property
    def right(self) -> float:
        return max(p[0] for p in self.quad)

    @property
    def top(self) -> float:
        return min(p[1] for p in self.quad)

    @property
    def bottom(self) -> float:
        return max(p[1] for p in self.quad)

    @property
    def center(self) -> tuple[float, float]:
        return (
            sum(p[0] for p in self.quad) / len(self.quad),
            sum(p[1] for p in self.quad) / len(self.quad),
        )

    @property
    def height(self) -> float:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = self.quad[:4]
        return (
            float(
                ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5 + ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
            )
            / 2
        )


@runtime_checkable
class IdCardOcr(Protocol):
    """Text lines of an image. Implementations are thread-safe (they serialise internally)."""

    @property
    def info(self) -> EngineInfo: ...

    def recognize(self, image: Frame) -> list[OcrLine]: ...


def create_id_card_ocr(config: IdentityConfig) -> IdCardOcr:
    """The configured OCR engine (built now; model loading costs 1–3 s, keep the instance)."""
    if config.ocr.engine == "rapidocr":
        from media.identity.ocr.rapid import RapidOcrEngine

        return RapidOcrEngine(config.ocr)
    from media.identity.ocr.paddle import PaddleOcrEngine

    return PaddleOcrEngine(config.ocr, config.cache_dir)
