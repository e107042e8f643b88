"""Face comparison engines behind one ``FaceMatcher`` protocol (R-12, R-13).

Two engines on the same dlib ResNet (128-d), weights from the ``face_recognition_models``
package, no TensorFlow, no download:

- ``dlib-chip`` (default, ``face/dlib_chip.py``): dlib's own pipeline, 5-point alignment onto
  150×150 chips, euclidean distance;
- ``deepface-dlib`` (``face/deepface_dlib.py``): deepface's ``Dlib`` model, cosine distance.

Each engine names its metric and computes its own distance; the pass threshold is
configuration, in that metric (``FaceConfig.resolved_threshold``). The ID portrait is
straightened from the card's corners before it is compared (``face/card.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from media.identity.config import IdentityConfig
from media.identity.imaging import Frame, ImageDecodeError, as_frame
from media.identity.results import EngineInfo, FaceMatchResult

REASONS: dict[str, str] = {
    "not_an_image": "无法读取图片，请上传 JPG 或 PNG 格式的照片",
    "no_face_reference": "未能从身份证上识别出人像，请重新拍摄清晰完整的身份证人像面",
    "no_face_probe": "未检测到人脸，请正对摄像头、保持光线充足后重试",
    "multiple_faces_probe": "画面中出现多张人脸，请确保仅投保人本人出镜",
    "face_mismatch": "人脸与身份证照片不一致，请由投保人本人进行验证",
}


@dataclass(frozen=True, slots=True)
class FaceBox:
    x: int
    y: int
    w: int
    h: int
    confidence: float

    @property
    def area(self) -> int:
        return self.w * self.h


@dataclass(frozen=True, slots=True)
class FaceEmbedding:
    """One detected face and its embedding (coordinates in the caller's image)."""

    box: FaceBox
    vector: NDArray[np.float64]


def cosine_distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@runtime_checkable
class FaceMatcher(Protocol):
    """Detects and embeds faces; thread-safe (implementations serialise internally)."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def threshold(self) -> float: ...

    @property
    def metric(self) -> Literal["cosine", "euclidean"]: ...

    def distance(self, a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
        """Distance between two of this engine's embeddings (0 = identical)."""
        ...

    def detect(self, image: Frame) -> list[FaceBox]: ...

    def embed(self, image: Frame, main_face_only: bool = False) -> list[FaceEmbedding]:
        """Every face found, largest first; only the largest with ``main_face_only`` (which
        lets an engine skip the search for small faces)."""
        ...


def match_faces(
    matcher: FaceMatcher,
    reference: bytes | Frame,
    probe: bytes | Frame,
    threshold: float | None = None,
) -> FaceMatchResult:
    """Is the person in ``probe`` (live camera) the one in ``reference`` (ID portrait)? (R-12)"""
    started = time.perf_counter()
    limit = matcher.threshold if threshold is None else threshold

    def result(passed: bool, code: str | None = None, /, **kw: object) -> FaceMatchResult:
        return FaceMatchResult(
            passed=passed,
            reason_code=code,
            reason=REASONS[code] if code else None,
            threshold=limit,
            metric=matcher.metric,
            engine=matcher.info,
            elapsed_s=round(time.perf_counter() - started, 4),
            **kw,  # type: ignore[arg-type]
        )

    try:
        ref_img, probe_img = as_frame(reference), as_frame(probe)
    except ImageDecodeError:
        return result(False, "not_an_image")
    ref_faces = matcher.embed(ref_img, main_face_only=True)
    if not ref_faces:
        return result(False, "no_face_reference")
    probe_faces = matcher.embed(probe_img)
    counts = {"faces_in_reference": len(ref_faces), "faces_in_probe": len(probe_faces)}
    if not probe_faces:
        return result(False, "no_face_probe", **counts)
    if len(probe_faces) > 1:
        return result(False, "multiple_faces_probe", **counts)
    distance = matcher.distance(ref_faces[0].vector, probe_faces[0].vector)
    # Similarity in [0, 1]: 1 - cosine distance, or 1 - d/2 for unit-scale euclidean descriptors.
    similarity = 1 - distance if matcher.metric == "cosine" else max(0.0, 1 - distance / 2)
    scores = {"distance": round(distance, 5), "similarity": round(similarity, 5)}
    if distance > limit:
        return result(False, "face_mismatch", **counts, **scores)
    return result(True, **counts, **scores)


def create_face_matcher(config: IdentityConfig) -> FaceMatcher:
    if config.face.engine == "deepface-dlib":
        from media.identity.face.deepface_dlib import DeepFaceDlibMatcher

        return DeepFaceDlibMatcher(config.face, config.cache_dir, config.anti_spoof.weights_dir)
    from media.identity.face.dlib_chip import DlibChipMatcher

    return DlibChipMatcher(config.face)
