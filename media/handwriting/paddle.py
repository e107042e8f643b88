"""paddleocr 3.7 text recognition on onnxruntime with the PP-OCRv6 small rec model of the
rapidocr wheel (the same model folders as the ID-card OCR, media/identity/ocr/paddle.py), used
on the grid's boxes drawn side by side, ten to a line. Offline: no model hub is contacted."""

from __future__ import annotations

import importlib.metadata
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from media.handwriting import LineReading


class PaddleHandwriting:
    def __init__(self, cache_dir: Path | None = None) -> None:
        from media.identity.config import default_cache_dir
        from media.identity.ocr.paddle import _install_opencv_alias, build_model_folders

        _det_dir, rec_dir = build_model_folders(cache_dir or default_cache_dir())
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        _install_opencv_alias()
        from paddleocr import TextRecognition

        self._lock = threading.Lock()
        self._model: Any = TextRecognition(
            model_name="PP-OCRv6_small_rec", model_dir=str(rec_dir), engine="onnxruntime",
            engine_config={"intra_op_num_threads": 1, "inter_op_num_threads": 1},
        )
        self._name = (f"paddleocr {importlib.metadata.version('paddleocr')} "
                      f"(PP-OCRv6_small_rec, onnxruntime "
                      f"{importlib.metadata.version('onnxruntime')})")

    @property
    def name(self) -> str:
        return self._name

    def read_lines(self, lines: list[Image.Image]) -> list[LineReading]:
        arrays = [np.ascontiguousarray(np.asarray(line.convert("RGB"))[:, :, ::-1])
                  for line in lines]
        with self._lock:
            results = list(self._model.predict(arrays, batch_size=4))
        return [LineReading(str(r["rec_text"]), float(r["rec_score"])) for r in results]
