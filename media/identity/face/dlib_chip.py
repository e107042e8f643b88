"""dlib's own face-recognition pipeline on aligned chips (R-12, R-13): the default engine.

What dlib (and face_recognition) do, and deepface's ``Dlib`` model does not: the 5-point shape
predictor finds the eye corners and the nose base, ``dlib.get_face_chip`` warps the face with a
similarity transform onto the 150×150 template the ResNet was trained on (padding 0.25), and
the 128-d descriptors are compared by euclidean distance (dlib's LFW threshold is 0.6). deepface
crops the detector's box, rotates it by the eye line only and scales it without the template's
geometry, which moves a genuine pair's distance up: measured on the package set, see
docs/identity.md "Face match threshold".

Weights: ``dlib_face_recognition_resnet_model_v1.dat`` and ``shape_predictor_5_face_landmarks.dat``
read in place from the installed ``face_recognition_models`` package; nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.config import FaceConfig
from media.identity.face import FaceBox, FaceEmbedding
from media.identity.imaging import Frame, limit_size
from media.identity.results import EngineInfo
from media.identity.weights import DLIB_LANDMARKS_5, DLIB_RECOGNITION, face_recognition_model

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class DlibChipMatcher:
    """HOG detector (one upsampling, as deepface's ``dlib`` backend and face_recognition do),
    5-point alignment onto 150×150 chips, dlib ResNet descriptors, euclidean distance."""

    metric: Literal["euclidean"] = "euclidean"

    def __init__(
        self,
        config: FaceConfig,
        recognition_model: Path | None = None,
        landmarks_model: Path | None = None,
    ) -> None:
        import dlib

        self._config = config
        self._threshold = config.resolved_threshold()
        self._dlib: Any = dlib
        self._detector: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = dlib.shape_predictor(
            str(landmarks_model or face_recognition_model(DLIB_LANDMARKS_5))
        )
        self._encoder: Any = dlib.face_recognition_model_v1(
            str(recognition_model or face_recognition_model(DLIB_RECOGNITION))
        )
        self._lock = threading.Lock()
        self._info = EngineInfo(
            name="dlib-chip",
            version=f"dlib {importlib.metadata.version('dlib-bin')}, ResNet v1 128-d on 5-point "
            f"aligned {CHIP_SIZE}px chips (padding {CHIP_PADDING}), HOG detector, euclidean",
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def threshold(self) -> float:
        return self._threshold

    @staticmethod
    def distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))

    def _detect(
        self, image: Frame, main_face_only: bool = False
    ) -> tuple[list[Any], list[float], float]:
        """Face rectangles (in ``image`` coordinates) and scores, found on a copy whose longest
        side is at most ``max_side_px``: the HOG detector with one upsampling (as deepface's
        ``dlib`` backend and face_recognition use it) is the cost of a match, and it finds faces
        down to ~40 px of that copy (the second person at the back of a presence sample)."""
        small, scale = limit_size(image, self._config.max_side_px)
        rgb = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        found, scores = [], []
        if main_face_only:
            # A face that fills the picture (an ID portrait) needs no upsampling: a quarter of
            # the cost (measured: 6.5 instead of 25.7 ms on a 285×360 portrait).
            found, scores, _ = self._detector.run(rgb, 0, 0.0)
            scores = [s if s >= self._config.min_detection_score else -1.0 for s in scores]
            if max(scores, default=-1.0) < 0:
                found, scores = [], []
        if not found:
            found, scores, _ = self._detector.run(rgb, 1, 0.0)
        rects, kept = [], []
        for r, score in zip(found, scores, strict=True):
            if score < self._config.min_detection_score:
                continue  # e.g. a badge on astronaut.png's suit at 0.12; faces score 0.5-2.5
            rects.append(self._dlib.rectangle(
                round(r.left() / scale), round(r.top() / scale),
                round(r.right() / scale), round(r.bottom() / scale),
            ))
            kept.append(float(score))
        return rects, kept, scale

    def detect(self, image: Frame) -> list[FaceBox]:
        with self._lock:
            rects, scores, _ = self._detect(image)
        boxes = [self._box(r, s) for r, s in zip(rects, scores, strict=True)]
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def embed(self, image: Frame, main_face_only: bool = False) -> list[FaceEmbedding]:
        """Every face found, largest first; ``main_face_only``: the largest face only, found
        without upsampling when it is large enough (the ID portrait of a match)."""
        # Landmarks and chips come from the full-size image: a face that is 90 px in the
        # detector's copy may be 260 px here, and the 150 px chip keeps that detail.
        rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        with self._lock:
            rects, scores, _ = self._detect(image, main_face_only)
            if not rects:
                return []
            if main_face_only:
                main = max(range(len(rects)), key=lambda i: rects[i].area())
                rects, scores = [rects[main]], [scores[main]]
            shapes = self._dlib.full_object_detections()
            for r in rects:
                shapes.append(self._predictor(rgb, r))
            # get_face_chips + compute_face_descriptor on the chips is exactly what
            # compute_face_descriptor(img, shapes, padding=0.25) does inside dlib.
            chips = self._dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
            vectors = self._encoder.compute_face_descriptor(chips)
        out = [
            FaceEmbedding(box=self._box(r, s), vector=np.asarray(v, dtype=np.float64))
            for r, s, v in zip(rects, scores, vectors, strict=True)
        ]
        return sorted(out, key=lambda e: e.box.area, reverse=True)

    def chip(self, image: Frame) -> Frame | None:
        """The aligned chip of the largest face (BGR), for evidence and debugging."""
        rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        with self._lock:
            rects, _, _ = self._detect(image)
            if not rects:
                return None
            main = max(rects, key=lambda r: r.area())
            chip = self._dlib.get_face_chip(
                rgb, self._predictor(rgb, main), size=CHIP_SIZE, padding=CHIP_PADDING
            )
        return np.ascontiguousarray(np.asarray(chip)[:, :, ::-1])

    @staticmethod
    def _box(rect: Any, score: float) -> FaceBox:
        x0, y0 = max(0, rect.left()), max(0, rect.top())
        return FaceBox(
            x=x0, y=y0, w=rect.right() - x0, h=rect.bottom() - y0, confidence=round(score, 3)
        )
