"""Face landmarks for active liveness: dlib's 68-point model from ``face_recognition_models``.

Per frame it yields the number of faces and, for the largest, three metrics that actions move:
eye aspect ratio (blink), inner-mouth aspect ratio (open mouth) and a yaw proxy (head turn).

HOG detection is most of a frame's cost (the 68 landmarks take ~1 ms). A run of frames (a
liveness challenge) passes a :class:`FaceTrack`: the face is then looked for only around where
it was in the previous frame (the box grown by half its size each side, ~1/3 of a selfie
frame's pixels), at the same analysis resolution, so the box and landmarks are the detector's
own, not extrapolated; every ``rescan_every``-th frame is a full scan as without a track (the
face count: a second face anywhere in the frame is seen within that many frames). When the
face is not found near its last place (the track is lost) it is looked for on a small copy
(``reacquire_width``) first, then as without a track, so no face is missed that a full scan
would find. Measured in bench/live_liveness.py and docs/identity.md.
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

# The face's width in the crop a tracked frame is searched in (dlib's HOG window is 80 px).
_TRACK_FACE_PX = 110


@dataclass(slots=True)
class FaceTrack:
    """Where the face was in the previous frame of one run (analysed-frame pixels); one per run,
    never shared (the landmarker is). Counters for benchmarks and tests."""

    box: tuple[int, int, int, int] | None = None
    faces: int = 0  # faces counted by the last full scan
    since_scan: int = 0  # frames tracked since the last full scan
    tracked: int = 0
    scans: int = 0
    reacquired: int = 0  # found on the small copy after the track was lost


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

    def __init__(self, analysis_width: int = 480, rescan_every: int = 5,
                 reacquire_width: int = 320) -> None:
        import dlib

        self._dlib: Any = dlib
        self._detector: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = dlib.shape_predictor(str(face_recognition_model(DLIB_LANDMARKS_68)))
        self._width = analysis_width
        self._rescan_every = rescan_every
        self._reacquire_width = reacquire_width
        self._lock = threading.Lock()
        self._info = EngineInfo(
            name="dlib-68",
            version=f"dlib {importlib.metadata.version('dlib-bin')}, "
            "shape_predictor_68_face_landmarks (face_recognition_models 0.3.0)",
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def observe(self, frame: Frame, track: FaceTrack | None = None) -> FaceObservation:
        """One frame; with the run's ``track``, the face is looked for where it was (see the
        module docstring) and the track updated."""
        small, _ = (
            resize_to_width(frame, self._width) if frame.shape[1] > self._width else (frame, 1.0)
        )
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        with self._lock:
            faces, main = self._find(gray, track)
            if main is None:
                return FaceObservation(faces=0)
            shape = self._predictor(gray, main)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return FaceObservation(
            faces=faces,
            ear=eye_aspect_ratio(pts),
            mar=mouth_aspect_ratio(pts),
            yaw=yaw_proxy(pts),
            box=(main.left(), main.top(), main.width(), main.height()),
            landmarks=pts,
        )

    def _find(self, gray: NDArray[Any], track: FaceTrack | None) -> tuple[int, Any]:
        """(faces, the largest face's rectangle or None); under the lock."""
        box = None if track is None else track.box
        if track is not None and box is not None and track.since_scan + 1 < self._rescan_every:
            near = self._near(gray, box)
            if near:
                main = max(near, key=lambda r: r.width() * r.height())
                track.box = (main.left(), main.top(), main.width(), main.height())
                track.since_scan += 1
                track.tracked += 1
                return max(track.faces, len(near)), main
            # Lost: a small copy finds a face of selfie size at a fraction of the cost.
            found = self._on_small_copy(gray)
            if found:
                track.reacquired += 1
                return self._tracked_scan(track, found)
        rects = list(self._detector(gray, 0))
        if not rects:
            # Faces under ~80 px need one upsampling; only pay for it when the cheap pass fails.
            rects = list(self._detector(gray, 1))
        if track is not None:
            return self._tracked_scan(track, rects)
        if not rects:
            return 0, None
        return len(rects), max(rects, key=lambda r: r.width() * r.height())

    def _tracked_scan(self, track: FaceTrack, rects: list[Any]) -> tuple[int, Any]:
        track.scans += 1
        track.since_scan = 0
        track.faces = len(rects)
        if not rects:
            track.box = None
            return 0, None
        main = max(rects, key=lambda r: r.width() * r.height())
        track.box = (main.left(), main.top(), main.width(), main.height())
        return len(rects), main

    def _near(self, gray: NDArray[Any], box: tuple[int, int, int, int]) -> list[Any]:
        """Faces in the previous box grown by half its size each side, in ``gray``'s pixels.
        The crop is scaled so that the face is ``_TRACK_FACE_PX`` wide (HOG's window is 80 px):
        the cost of detection goes with the pixels, and a selfie's face is 150-250 px."""
        x, y, w, h = box
        m = max(w, h) // 2
        x0, y0 = max(x - m, 0), max(y - m, 0)
        x1, y1 = min(x + w + m, gray.shape[1]), min(y + h + m, gray.shape[0])
        f = min(1.0, _TRACK_FACE_PX / max(w, h, 1))
        cw, ch = round((x1 - x0) * f), round((y1 - y0) * f)
        if cw < 80 or ch < 80:  # smaller than the detector's window
            return []
        crop = gray[y0:y1, x0:x1]
        crop = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA) if f < 1.0 \
            else np.ascontiguousarray(crop)
        return [self._dlib.rectangle(round(r.left() / f) + x0, round(r.top() / f) + y0,
                                     round(r.right() / f) + x0, round(r.bottom() / f) + y0)
                for r in self._detector(crop, 0)]

    def _on_small_copy(self, gray: NDArray[Any]) -> list[Any]:
        """Faces found on a ``reacquire_width`` copy, in ``gray``'s pixels."""
        width = gray.shape[1]
        if width <= self._reacquire_width:
            return []
        f = self._reacquire_width / width
        tiny = cv2.resize(gray, (self._reacquire_width, round(gray.shape[0] * f)),
                          interpolation=cv2.INTER_AREA)
        return [self._dlib.rectangle(round(r.left() / f), round(r.top() / f),
                                     round(r.right() / f), round(r.bottom() / f))
                for r in self._detector(tiny, 0)]
