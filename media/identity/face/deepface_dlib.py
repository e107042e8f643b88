"""deepface with its ``Dlib`` model on weights from ``face_recognition_models`` (offline).

Traps handled here:
- deepface reads its weights only from ``$DEEPFACE_HOME/.deepface/weights`` and downloads any
  that are missing; the files are copied there first, so it never goes to the network.
- deepface >= 0.0.96 runs on onnxruntime when TensorFlow is absent, and its ``Dlib`` model and
  ``dlib`` detector need no framework at all: TensorFlow is not needed.
- deepface's ``commons.image_utils`` imports werkzeug without declaring it: install werkzeug.
- deepface declares ``opencv-contrib-python-headless``; it is installed without dependencies so
  the single ``cv2`` stays opencv-python-headless < 5 (5.x ships no Haar cascades).
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from media.identity.config import FaceConfig
from media.identity.face import FaceBox, FaceEmbedding, cosine_distance
from media.identity.imaging import Frame, limit_size
from media.identity.results import EngineInfo
from media.identity.weights import prepare_deepface_home


def deepface_home(cache_dir: Path) -> Path:
    """The operator's ``DEEPFACE_HOME`` if set, else a folder in our cache (set for deepface)."""
    home = os.environ.get("DEEPFACE_HOME")
    if home:
        return Path(home)
    path = cache_dir / "deepface"
    # deepface has no API for its weight folder: the environment variable is the only way, and it
    # must be set before deepface is imported (it creates the folder at import time).
    os.environ["DEEPFACE_HOME"] = str(path)
    return path


class DeepFaceDlibMatcher:
    metric: Literal["cosine"] = "cosine"

    def __init__(self, config: FaceConfig, cache_dir: Path, fasnet_dir: Path | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()
        home = deepface_home(cache_dir)
        prepare_deepface_home(home)
        from deepface import DeepFace

        self._deepface: Any = DeepFace
        # Build once now so the first customer does not pay for it (and failures show at start).
        DeepFace.build_model(task="facial_recognition", model_name="Dlib")
        DeepFace.build_model(task="face_detector", model_name=config.detector_backend)
        self._info = EngineInfo(
            name="deepface-dlib",
            version=f"deepface {importlib.metadata.version('deepface')}, Dlib ResNet "
            f"(dlib {importlib.metadata.version('dlib-bin')}), detector {config.detector_backend}",
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def threshold(self) -> float:
        return self._config.resolved_threshold()

    @staticmethod
    def distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
        return cosine_distance(a, b)

    def detect(self, image: Frame) -> list[FaceBox]:
        small, scale = limit_size(image, self._config.max_side_px)
        with self._lock:
            try:
                faces = self._deepface.extract_faces(
                    small,
                    detector_backend=self._config.detector_backend,
                    enforce_detection=True,
                    align=False,
                )
            except ValueError:  # deepface signals "no face" with ValueError
                return []
        boxes = [self._box(f["facial_area"], f.get("confidence", 0.0), scale) for f in faces]
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def embed(self, image: Frame, main_face_only: bool = False) -> list[FaceEmbedding]:
        small, scale = limit_size(image, self._config.max_side_px)
        with self._lock:
            try:
                reps = self._deepface.represent(
                    small,
                    model_name="Dlib",
                    detector_backend=self._config.detector_backend,
                    enforce_detection=True,
                    align=True,
                )
            except ValueError:
                return []
        out = [
            FaceEmbedding(
                box=self._box(r["facial_area"], r.get("face_confidence", 0.0), scale),
                vector=np.asarray(r["embedding"], dtype=np.float64),
            )
            for r in reps
        ]
        out.sort(key=lambda e: e.box.area, reverse=True)
        return out[:1] if main_face_only else out

    @staticmethod
    def _box(area: dict[str, Any], confidence: float, scale: float) -> FaceBox:
        return FaceBox(
            x=round(area["x"] / scale),
            y=round(area["y"] / scale),
            w=round(area["w"] / scale),
            h=round(area["h"] / scale),
            confidence=float(confidence or 0.0),
        )
