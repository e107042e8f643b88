"""rapidocr engine: PP-OCRv6 small det/rec ONNX models shipped in its wheel, zero setup."""

from __future__ import annotations

import importlib.metadata
import threading
from typing import Any

import numpy as np

from media.identity.config import OcrConfig
from media.identity.imaging import Frame
from media.identity.ocr import OcrLine
from media.identity.results import EngineInfo


class RapidOcrEngine:
    def __init__(self, config: OcrConfig) -> None:
        from rapidocr import RapidOCR

        self._config = config
        self._lock = threading.Lock()
        self._engine: Any = RapidOCR(
            params={
                "Global.log_level": "warning",
                "Global.text_score": config.min_line_score,
                # The card is upright after our own 90°-step search; the classifier only costs.
                "Global.use_cls": False,
                "EngineConfig.onnxruntime.intra_op_num_threads": config.threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )
        self._info = EngineInfo(
            name="rapidocr",
            version=f"{importlib.metadata.version('rapidocr')} "
            f"(PP-OCRv6 small, onnxruntime {importlib.metadata.version('onnxruntime')})",
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def recognize(self, image: Frame) -> list[OcrLine]:
        with self._lock:
            out = self._engine(np.ascontiguousarray(image))
        if out.boxes is None or out.txts is None:
            return []
        lines = []
        for box, text, score in zip(out.boxes, out.txts, out.scores, strict=True):
            if float(score) < self._config.min_line_score or not text.strip():
                continue
            quad = tuple((float(x), float(y)) for x, y in np.asarray(box).reshape(-1, 2)[:4])
            lines.append(OcrLine(text=str(text), score=float(score), quad=quad))
        return lines
