"""Face landmarks for active liveness: dlib's 68-point model from ``face_recognition_models``.

Per frame it yields the number of faces and, for the largest, three metrics that actions move:
eye aspect ratio (blink), inner-mouth aspect ratio (open mouth) and a yaw proxy (head turn).
"""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.imaging import Frame, resize_to_width
from media.identity.results import EngineInfo
from media.identity.weights import DLIB_LANDMARKS_68, face_recognition_model


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """What one frame shows. Coordinates are in the analysed (scaled) frame."""

    faces: int
    ear: float | None = None
    mar: float | None = None
    yaw: float | None = None
    box: tuple[int, int, int, int] | None = None
    landmarks: NDArray[np.float64] | None = None


def eye_aspect_ratio(pts: NDArray[np.float64]) -> float:
    """Mean EAR of both eyes (Soukupová & Čech): ~0.25–0.35 open, < 0.15 closed."""

    def one(e: NDArray[np.float64]) -> float:
        vertical = np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])
        return float(vertical / (2.0 * np.linalg.norm(e[0] - e[3]) + 1e-9))

    return (one(pts[36:42]) + one(pts[42:48])) / 2


def mouth_aspect_ratio(pts: NDArray[np.float64]) -> float:
    """Inner-lip opening over inner-lip width: ~0–0.25 closed or smiling, > 0.5 open."""
    vertical = (
        np.linalg.norm(pts[61] - pts[67])
        + np.linalg.norm(pts[62] - pts[66])
        + np.linalg.norm(pts[63] - pts[65])
    )
    return float(vertical / (3.0 * np.linalg.norm(pts[60] - pts[64]) + 1e-9))


def yaw_proxy(pts: NDArray[np.float64]) -> float:
    """Where the nose tip sits between the jaw contour: 0 frontal, > 0 nose towards image-right.

    A ratio of horizontal distances: it ignores scale and in-plane position, and only a real
    rotation in depth (or a non-affine warp) changes it.
    """
    left = abs(pts[30, 0] - pts[2, 0])
    right = abs(pts[14, 0] - pts[30, 0])
    return float((left - right) / (left + right + 1e-9))


class Dlib68Landmarker:
    """dlib HOG face detector + 68-point shape predictor; thread-safe."""

    def __init__(self, analysis_width: int = 480) -> None:
        import dlib

        self._dlib: Any = dlib
        self._detector: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = dlib.shape_predictor(str(face_recognition_model(DLIB_LANDMARKS_68)))
        self._width = analysis_width
        self._lock = threading.Lock()
        self._info = EngineInfo(
            name="dlib-68",
            version=f"dlib {importlib.metadata.version('dlib-bin')}, "
            "shape_predictor_68_face_landmarks (face_recognition_models 0.3.0)",
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def observe(self, frame: Frame) -> FaceObservation:
        small, _ = (
            resize_to_width(frame, self._width) if frame.shape[1] > self._width else (frame, 1.0)
        )
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        with self._lock:
            rects = self._detector(gray, 0)
            if len(rects) == 0:
                # Faces under ~80 px need one upsampling; only pay for it when the cheap pass fails.
                rects = self._detector(gray, 1)
            if len(rects) == 0:
                return FaceObservation(faces=0)
            main = max(rects, key=lambda r: r.width() * r.height())
            shape = self._predictor(gray, main)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return FaceObservation(
            faces=len(rects),
            ear=eye_aspect_ratio(pts),
            mar=mouth_aspect_ratio(pts),
            yaw=yaw_proxy(pts),
            box=(main.left(), main.top(), main.width(), main.height()),
            landmarks=pts,
        )
