"""paddleocr engine: PaddleOCR 3.x on onnxruntime, offline, without paddlepaddle.

The PP-OCRv6 small det/rec ONNX files inside the rapidocr wheel are turned (once, into the cache
directory) into the model folders paddlex expects: ``inference.onnx`` + ``inference.yml``; the
recognition dictionary is the ONNX metadata key ``character``. Operators may instead point the
engine at official Paddle model folders (``OcrConfig.paddle_det_model_dir`` / ``..._rec_...``).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from media.identity.config import OcrConfig
from media.identity.imaging import Frame
from media.identity.ocr import OcrLine
from media.identity.results import EngineInfo
from media.identity.weights import copy_once, package_dir

_RAPIDOCR_DET = "PP-OCRv6_det_small.onnx"
_RAPIDOCR_REC = "PP-OCRv6_rec_small.onnx"
# Bump when the generated inference.yml changes, so stale folders are rebuilt.
_FOLDER_FORMAT = "1"

_build_lock = threading.Lock()


def _det_inference_yml(model_name: str) -> dict[str, Any]:
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetLabelEncode": None},
                {"DetResizeForTest": {"resize_long": 960}},
                {
                    "NormalizeImage": {
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                        "scale": "1./255.",
                        "order": "hwc",
                    }
                },
                {"ToCHWImage": None},
                {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]
        },
        "PostProcess": {
            "name": "DBPostProcess",
            "thresh": 0.3,
            "box_thresh": 0.6,
            "max_candidates": 1000,
            "unclip_ratio": 1.5,
        },
    }


def _rec_inference_yml(model_name: str, characters: list[str]) -> dict[str, Any]:
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
                {
                    "KeepKeys": {
                        "keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]
                    }
                },
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }


def build_model_folders(cache_dir: Path) -> tuple[Path, Path]:
    """Build (once) the det and rec folders from the installed rapidocr wheel; no network."""
    import onnxruntime as ort

    version = importlib.metadata.version("rapidocr")
    root = cache_dir / "paddleocr-models" / f"rapidocr-{version}-f{_FOLDER_FORMAT}"
    det_dir, rec_dir = root / "PP-OCRv6_small_det", root / "PP-OCRv6_small_rec"
    with _build_lock:
        if (det_dir / "inference.yml").is_file() and (rec_dir / "inference.yml").is_file():
            return det_dir, rec_dir
        models = package_dir("rapidocr") / "models"
        copy_once(models / _RAPIDOCR_DET, det_dir / "inference.onnx")
        copy_once(models / _RAPIDOCR_REC, rec_dir / "inference.onnx")
        session = ort.InferenceSession(
            str(rec_dir / "inference.onnx"), providers=["CPUExecutionProvider"]
        )
        characters = session.get_modelmeta().custom_metadata_map["character"].split("\n")
        # paddlex appends the space and prepends the CTC blank itself: 18708 + 2 = output width.
        for folder, cfg in (
            (det_dir, _det_inference_yml("PP-OCRv6_small_det")),
            (rec_dir, _rec_inference_yml("PP-OCRv6_small_rec", characters)),
        ):
            tmp = folder / ".inference.yml.tmp"
            tmp.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
            tmp.replace(folder / "inference.yml")
    return det_dir, rec_dir


class _OpenCvContribAlias:
    """Answers paddlex's question "is opencv-contrib-python installed?" with the headless build.

    Trap: paddlex checks the *distribution name* ``opencv-contrib-python`` (its ``ocr-core`` extra
    pins 4.10, non-headless) before it even imports cv2 in its modules, and refuses the OCR
    pipeline otherwise. Installing that distribution would overwrite the ``cv2`` of
    opencv-python-headless (< 5) that deepface and this project depend on, so instead this
    metadata finder reports the headless distribution under that name. It answers only that name.
    """

    _NAMES = frozenset({"opencv-contrib-python", "opencv_contrib_python"})

    def find_spec(self, *args: object, **kwargs: object) -> None:
        return None

    def find_distributions(
        self, context: importlib.metadata.DistributionFinder.Context | None = None
    ) -> Iterator[importlib.metadata.Distribution]:
        name = getattr(context, "name", None)
        if name in self._NAMES:
            try:
                yield importlib.metadata.distribution("opencv-python-headless")
            except importlib.metadata.PackageNotFoundError:
                return


def _install_opencv_alias() -> None:
    try:
        importlib.metadata.distribution("opencv-contrib-python")
        return  # the real one (or our alias) is already visible
    except importlib.metadata.PackageNotFoundError:
        pass
    if "paddlex" in sys.modules:
        # paddlex caches its dependency checks at import: too late to help it now.
        raise RuntimeError(
            "paddlex was imported before media.identity could register its OpenCV alias; "
            "create the paddleocr engine before importing paddlex elsewhere"
        )
    sys.meta_path.append(_OpenCvContribAlias())  # type: ignore[arg-type]


class PaddleOcrEngine:
    def __init__(self, config: OcrConfig, cache_dir: Path) -> None:
        self._config = config
        self._lock = threading.Lock()
        if config.paddle_det_model_dir and config.paddle_rec_model_dir:
            det_dir, rec_dir = config.paddle_det_model_dir, config.paddle_rec_model_dir
            det_name, rec_name = config.paddle_det_model_name, config.paddle_rec_model_name
            engine = config.paddle_inference_engine
        else:
            det_dir, rec_dir = build_model_folders(cache_dir)
            det_name, rec_name = "PP-OCRv6_small_det", "PP-OCRv6_small_rec"
            engine = "onnxruntime"
        # Without local folders paddlex probes four model hubs (~26 s) before failing; with them
        # it never should, and this flag makes sure it does not even check connectivity.
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        _install_opencv_alias()
        from paddleocr import PaddleOCR

        kwargs: dict[str, Any] = {}
        if engine == "onnxruntime":
            kwargs["engine_config"] = {
                "intra_op_num_threads": config.threads,
                "inter_op_num_threads": 1,
            }
        else:
            kwargs["cpu_threads"] = config.threads
        self._ocr: Any = PaddleOCR(
            text_detection_model_name=det_name,
            text_detection_model_dir=str(det_dir),
            text_recognition_model_name=rec_name,
            text_recognition_model_dir=str(rec_dir),
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            use_textline_orientation=False,
            engine=engine,
            **kwargs,
        )
        self._info = EngineInfo(
            name="paddleocr",
            version=f"{importlib.metadata.version('paddleocr')} ({det_name}+{rec_name}, {engine}"
            + (
                f" {importlib.metadata.version('onnxruntime')})" if engine == "onnxruntime" else ")"
            ),
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def recognize(self, image: Frame) -> list[OcrLine]:
        with self._lock:
            results = self._ocr.predict(np.ascontiguousarray(image))
        lines: list[OcrLine] = []
        for res in results:
            polys = res["rec_polys"] if "rec_polys" in res else res["dt_polys"]
            for text, score, poly in zip(res["rec_texts"], res["rec_scores"], polys, strict=False):
                # PaddleOCR 3.x keeps lines down to score 0: drop the noise here.
                if float(score) < self._config.min_line_score or not str(text).strip():
                    continue
                quad = tuple((float(x), float(y)) for x, y in np.asarray(poly).reshape(-1, 2)[:4])
                lines.append(OcrLine(text=str(text), score=float(score), quad=quad))
        return lines
