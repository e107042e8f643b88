"""Passive anti-spoofing (静默活体): deepface's MiniFASNet when an operator provides the weights.

No MiniFASNet weights ship in any offline package, so the engine exists only when
``AntiSpoofConfig.weights_dir`` holds both ONNX files; otherwise the configured policy decides
(default: rely on the active challenges, and the result says so).
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from media.identity.config import AntiSpoofConfig
from media.identity.face.deepface_dlib import deepface_home
from media.identity.imaging import Frame, limit_size
from media.identity.results import EngineInfo, PassiveLivenessResult
from media.identity.weights import fasnet_weights_present, prepare_deepface_home

NOTE_NOT_CONFIGURED_ACTIVE = "未配置静默活体模型，按配置的策略仅依据动作活体检测结果判定"
NOTE_NOT_CONFIGURED_CLOSED = "未配置静默活体模型，按配置的策略不予通过"
NOTE_PASSED = "静默活体检测通过"
NOTE_FAILED = "静默活体检测未通过：疑似翻拍、屏幕或照片攻击"
NOTE_NO_FACE = "静默活体检测未检测到人脸"


class PassiveAntiSpoofing(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def score(self, frame: Frame) -> tuple[bool, float] | None:
        """(is_real, score) for the largest face, or None without a face."""
        ...


class DeepFaceFasnet:
    """MiniFASNet V2 + V1SE through ``deepface.extract_faces(anti_spoofing=True)``."""

    def __init__(self, weights_dir: Path, cache_dir: Path, detector_backend: str = "dlib") -> None:
        home = deepface_home(cache_dir)
        prepare_deepface_home(home, fasnet_dir=weights_dir)
        from deepface import DeepFace

        self._deepface: Any = DeepFace
        self._detector = detector_backend
        self._lock = threading.Lock()
        DeepFace.build_model(task="spoofing", model_name="Fasnet")
        self._info = EngineInfo(
            name="deepface-fasnet",
            version=f"deepface {importlib.metadata.version('deepface')}, MiniFASNetV2+V1SE (onnx)",
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def score(self, frame: Frame) -> tuple[bool, float] | None:
        small, _ = limit_size(frame, 800)
        with self._lock:
            try:
                faces = self._deepface.extract_faces(
                    small,
                    detector_backend=self._detector,
                    enforce_detection=True,
                    anti_spoofing=True,
                )
            except ValueError:
                return None
        if not faces:
            return None
        main = max(faces, key=lambda f: f["facial_area"]["w"] * f["facial_area"]["h"])
        return bool(main["is_real"]), float(main["antispoof_score"])


def create_anti_spoofing(
    config: AntiSpoofConfig, cache_dir: Path, detector_backend: str = "dlib"
) -> PassiveAntiSpoofing | None:
    if not fasnet_weights_present(config.weights_dir):
        return None
    assert config.weights_dir is not None
    return DeepFaceFasnet(config.weights_dir, cache_dir, detector_backend)


def judge_passive(
    engine: PassiveAntiSpoofing | None, frames: list[Frame], config: AntiSpoofConfig
) -> PassiveLivenessResult:
    """Run the passive check on a few frames, or apply the policy when there is no engine."""
    if engine is None:
        if config.policy_without_weights == "fail_closed":
            return PassiveLivenessResult(
                status="failed", policy="fail_closed", note=NOTE_NOT_CONFIGURED_CLOSED
            )
        return PassiveLivenessResult(
            status="not_run", policy="rely_on_active", note=NOTE_NOT_CONFIGURED_ACTIVE
        )
    verdicts = [v for v in (engine.score(f) for f in frames) if v is not None]
    if not verdicts:
        return PassiveLivenessResult(
            status="failed", policy="model", note=NOTE_NO_FACE, engine=engine.info
        )
    # A frame counts as real only when the model says real with enough confidence.
    real_scores = [s if real else 1.0 - s for real, s in verdicts]
    score = float(np.min(real_scores))
    ok = all(real and s >= config.min_real_score for real, s in verdicts)
    return PassiveLivenessResult(
        status="passed" if ok else "failed",
        score=round(score, 4),
        policy="model",
        note=NOTE_PASSED if ok else NOTE_FAILED,
        engine=engine.info,
    )
