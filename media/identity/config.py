"""Configuration of the identity engines (R-12, R-13): engine choice, thresholds, folders.

Everything a deployment may tune lives here, so the workflow never branches on an engine name.
Defaults work offline on a fresh machine; every threshold is documented in docs/identity.md with
the numbers it was calibrated on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from media.identity.results import Challenge


def default_cache_dir() -> Path:
    """Where model folders and copied weights go: ``$SHUANGLU_CACHE_DIR`` or the XDG cache."""
    env = os.environ.get("SHUANGLU_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shuanglu"


class OcrConfig(BaseModel):
    """ID-card OCR engine."""

    engine: Literal["paddleocr", "rapidocr"] = "paddleocr"
    # Official Paddle model folders (inference.json/.pdiparams or inference.onnx + inference.yml).
    # When both are set paddleocr uses them instead of the folders built from the rapidocr wheel.
    paddle_det_model_dir: Path | None = None
    paddle_rec_model_dir: Path | None = None
    paddle_det_model_name: str = "PP-OCRv6_small_det"
    paddle_rec_model_name: str = "PP-OCRv6_small_rec"
    # paddlex inference engine; "paddle" needs paddlepaddle installed (official folders only).
    paddle_inference_engine: Literal["onnxruntime", "paddle", "paddle_static"] = "onnxruntime"
    # paddleocr keeps recognised lines down to score 0; below this they are noise.
    min_line_score: float = Field(default=0.5, ge=0.0, le=1.0)
    # CPU threads per OCR call: the jobs scale out by process, one core each.
    threads: int = Field(default=1, ge=1)


class CardQualityConfig(BaseModel):
    """Rejecting photos the OCR cannot be trusted on (blurred, cropped, too small)."""

    min_short_side_px: int = 360
    # Median per-line var(Laplacian)/var(pixels) at 32 px line height (docs/identity.md):
    # sharp cards 0.47–1.7 (tilted, noisy, JPEG q25 included), Gaussian blur σ 1.5 px ≤ 0.17.
    min_sharpness: float = 0.2
    # Mean recognition score of the key fields below which the photo is treated as unreadable.
    min_field_score: float = 0.80


# Default pass threshold per face engine, in that engine's own metric (docs/identity.md, "Face
# match threshold"): dlib-chip = euclidean distance of 5-point-aligned dlib descriptors, chosen
# from the ROC of bench/identity.py; deepface-dlib = cosine distance of deepface's Dlib model.
FACE_THRESHOLDS: dict[str, float] = {"dlib-chip": 0.54, "deepface-dlib": 0.075}


class FaceConfig(BaseModel):
    """Face comparison: ID portrait against the live face."""

    # dlib-chip: dlib's own pipeline (aligned chips, euclidean); deepface-dlib: deepface's Dlib.
    engine: Literal["dlib-chip", "deepface-dlib"] = "dlib-chip"
    # Detector of the deepface engine (dlib-chip always uses dlib's HOG detector).
    detector_backend: Literal["dlib", "opencv"] = "dlib"
    # In the engine's metric; None = FACE_THRESHOLDS[engine] (calibrated in docs/identity.md).
    threshold: float | None = Field(default=None, gt=0.0, lt=2.0)
    # Frames larger than this (longest side) are scaled down before detection: dlib's HOG detector
    # upsamples once, so a 12-megapixel phone photo would take seconds for no gain.
    max_side_px: int = 800
    # dlib-chip: HOG detections scoring below this are not faces (faces in the package photos
    # score 0.58–2.4; a badge on astronaut.png's suit 0.12).
    min_detection_score: float = 0.25

    def resolved_threshold(self) -> float:
        return FACE_THRESHOLDS[self.engine] if self.threshold is None else self.threshold


class AntiSpoofConfig(BaseModel):
    """Passive anti-spoofing (MiniFASNet through deepface) and the policy when it is absent."""

    # Folder holding 2.7_80x80_MiniFASNetV2.onnx and 4_0_0_80x80_MiniFASNetV1SE.onnx; the
    # deployment sets it with SHUANGLU_ANTI_SPOOF_WEIGHTS_DIR, read by infra.config.load_config
    # (production refuses to start when it is set and the files are missing; when unset the
    # evidence pack says none runs).
    weights_dir: Path | None = None
    # What to do without weights: rely on the active challenges (and say so), or fail closed.
    policy_without_weights: Literal["rely_on_active", "fail_closed"] = "rely_on_active"
    # deepface's score is the mean of the two models' softmax for the winning label.
    min_real_score: float = Field(default=0.5, ge=0.0, le=1.0)
    frames_to_check: int = Field(default=3, ge=1)


class LivenessConfig(BaseModel):
    """Active liveness: random challenges checked on landmarks (dlib 68-point)."""

    # The actions a plan is drawn from. All four in production; the dev and test profiles
    # draw from the blink alone (infra/config.py `liveness_challenges`), because the only faces
    # those machines have are synthesized from still photos, whose turns and open mouths the
    # flat-photo checks below rightly refuse (docs/identity.md).
    challenges: tuple[Challenge, ...] = tuple(Challenge)
    min_challenges: int = Field(default=2, ge=1, le=4)
    max_challenges: int = Field(default=3, ge=1, le=4)
    time_limit_s: float = Field(default=6.0, gt=0.0, description="per challenge")
    # Frames are analysed at this width; 68 landmarks need ~100 px faces, not more.
    analysis_width_px: int = 480
    # Face tracking within a run (media/identity/landmarks.py): a full-frame scan every this
    # many frames, the face looked for near its last place in between; 1 = a full scan on every
    # frame (no tracking). Found again on a copy this wide when the track is lost.
    track_rescan_every: int = Field(default=5, ge=1)
    track_reacquire_width_px: int = Field(default=320, ge=160)
    # Eye aspect ratio: closed when below min(absolute, relative * open baseline).
    blink_closed_ear: float = 0.19
    blink_relative: float = 0.72
    # Inner-mouth aspect ratio: open when above max(absolute, baseline + delta).
    mouth_open_mar: float = 0.45
    mouth_open_delta: float = 0.15
    # Yaw proxy in [-1, 1] (nose position between the jaw contour); a turn must move it this far.
    turn_delta: float = 0.18
    # What a flat photo cannot show (docs/identity.md "Liveness against photo attacks"):
    # a turn frame counts only when the nose moved this far (over the inter-ocular distance)
    # beyond the homography of the face contour and eye corners (bench/liveness_attacks.py:
    # flat prints of near-frontal faces turned 25-60°: <= 0.065; real heads, frontal photo to
    # turned photo of one person: 0.104 and 0.160). The reference must be near-frontal: on a
    # print of an already turned face (yaw proxy -0.44) dlib's shape prior invents up to 0.09.
    turn_parallax_min: float = 0.08
    turn_reference_max_yaw: float = 0.35
    # and the nose tip's pixels (followed from the frontal frame) left the line through the
    # nasion's and the upper lip's by this much (over the inter-ocular distance): any sheet bent
    # about vertical lines and turned keeps that column straight (the offline generator's
    # cylinder, 164 frames: <= 0.021); real heads, frontal photo to turned photo of one person:
    # 0.076 and 0.121 (bench/liveness_attacks.py, issue 15).
    turn_relief_min: float = 0.035
    # ... on a frame whose three template matches all correlate at least this well (a lost
    # track says nothing: a flat print turned 50° once matched at 0.33; the real pairs, photos
    # of different days: 0.84 and 0.58).
    turn_relief_match_min: float = 0.4
    # a closed eye must show a lash line this deep (skin patches: <= 0.03) and its patch must
    # differ from the open eye's (1 - correlation) by this much;
    blink_lash_min: float = 0.10
    blink_change_min: float = 0.15
    # an open mouth's interior must show structure (smoothed std over the lips' level; dark
    # fills and the synthetic jaw drop <= 0.06, a real open mouth 0.63) and be partly darker
    # than the lips.
    mouth_structure_min: float = 0.15
    mouth_dark_share_min: float = 0.15
    # and the dark core itself (eroded away from its edge) must not be a uniform fill: its
    # 10-90 % range over the lips' level (the generator's fill, also under misplaced lip
    # landmarks, 84 frames: <= 0.023; the real open mouth: 0.35).
    mouth_core_spread_min: float = 0.08
    # Camera frames are not mirrored (the H5 page mirrors only its own preview); set True if the
    # client sends mirrored frames, otherwise left and right swap.
    mirrored: bool = False
    # A face may be lost this long (seconds) before the run is failed.
    max_face_gap_s: float = 1.5
    # Same-person check between keyframes of the run, in the face engine's metric;
    # None = the face engine's pass threshold (FaceConfig).
    same_face_threshold: float | None = None
    same_face_every_s: float = 1.5


class PresenceConfig(BaseModel):
    """Presence during the call (R-13)."""

    sample_fps: float = Field(default=1.0, gt=0.0)
    min_in_view_share: float = Field(default=0.8, ge=0.0, le=1.0)
    # Consecutive samples before a change is marked, so one bad frame does not make a mark.
    confirm_samples: int = Field(default=2, ge=1)
    # Seconds two samples may be apart (the call hub falling behind, a lost connection):
    # a longer stretch without a sample is unknown, marked ``sampling_lost``/``_resumed``, and
    # breaks the run of consecutive samples a change needs.
    max_gap_s: float = Field(default=5.0, gt=0.0)
    # The face is compared with the reference when it changed (count, place, size, look) and
    # at least every n-th sample (embedding costs ~15x detecting on the small copy).
    identity_every_n_samples: int = Field(default=5, ge=1)
    # Faces are counted on a copy whose longest side is at most this: 480 keeps faces down to
    # about 55 px of a 640×480 frame (a second person behind the customer); 320 would cost
    # 0.14 instead of 0.24 CPU-s per sample but miss faces under ~80 px.
    detect_max_side_px: int = Field(default=480, ge=160)
    # Below this thumbnail correlation the face "looks different" and is checked at once.
    same_look_correlation: float = Field(default=0.8, ge=0.0, le=1.0)
    # In the face engine's metric; None = the face engine's pass threshold (FaceConfig).
    face_threshold: float | None = None


class IdentityConfig(BaseModel):
    """All identity settings: the identity section of the application's configuration
    (`infra.config.Config.identity`, built once by `load_config`); constructed alone (tests,
    benches) it holds the engines' defaults."""

    cache_dir: Path = Field(default_factory=default_cache_dir)
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    card_quality: CardQualityConfig = Field(default_factory=CardQualityConfig)
    face: FaceConfig = Field(default_factory=FaceConfig)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
    anti_spoof: AntiSpoofConfig = Field(default_factory=AntiSpoofConfig)
    presence: PresenceConfig = Field(default_factory=PresenceConfig)
