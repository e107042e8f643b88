"""Active liveness (活体检测, R-12): random challenges checked on a run of timed frames.

The server draws 2–3 distinct challenges (blink, turn left, turn right, open mouth) with a time
limit each; the customer performs them in order in front of the camera. Each frame's landmarks
give eye/mouth aspect ratios and a yaw proxy, compared with the customer's own neutral baseline.
Throughout the run exactly one face must be visible and it must stay the same person. A still
photo held up to the camera, or replayed as video, performs nothing and fails on the time limits.

Landmarks alone are fooled by a printed photo (issue 15): turned in front of the camera it moves
the yaw proxy, patches over its eyes lower the eye aspect ratio, a dark fill over its mouth
raises the mouth's. So a frame counts for an action only when it also shows what a flat photo
cannot (``media.identity.liveness_geometry``): for a turn, nose parallax beyond the homography of
the face contour and eye corners, and the nose tip's own pixels carried off the nasion-upper lip
line (which a photo bent round a cylinder keeps straight); for a blink, a closed eye with a lash
line whose patch differs from the open eye's; for an open mouth, a cavity with structure, also
inside its dark core. A challenge whose landmarks were met only on refused frames times out with
its own reason (``turn_flat``, ``blink_texture``, ``mouth_texture``). What these checks do not
stop (a stronger offline generator, a replayed recording of the real person) is in
docs/identity.md.
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from media.identity.antispoof import PassiveAntiSpoofing, judge_passive
from media.identity.config import AntiSpoofConfig, LivenessConfig
from media.identity.face import FaceMatcher, match_faces
from media.identity.imaging import Frame, encode_jpeg
from media.identity.landmarks import Dlib68Landmarker, FaceObservation, FaceTrack
from media.identity.liveness_geometry import (
    eye_change,
    eye_patches,
    eye_texture,
    mouth_interior,
    parallax,
    relief,
)
from media.identity.results import (
    Challenge,
    ChallengeOutcome,
    ChallengePlan,
    EngineInfo,
    FaceMatchResult,
    LivenessResult,
    PassiveLivenessResult,
)

REASONS: dict[str, str] = {
    "no_frames": "未收到视频画面，请允许使用摄像头后重试",
    "no_face": "未检测到人脸，请正对摄像头、保持光线充足后重试",
    "face_lost": "检测过程中人脸离开画面，请保持面部始终在取景框内后重试",
    "multiple_faces": "画面中出现多张人脸，请确保仅投保人本人出镜后重试",
    "face_changed": "检测过程中人脸发生变化，请由投保人本人完成全部动作",
    "passive_failed": "活体检测未通过，请勿使用照片、视频或屏幕翻拍，由本人正对摄像头重试",
    "not_frontal": "开始时未正对摄像头，无法判断转头动作，请先正对摄像头再按提示转头",
    "turn_flat": "未检测到真实的转头动作（画面疑似照片翻转），请本人面对摄像头重新转头",
    "blink_texture": "未检测到真实的眨眼（眼部疑似遮挡或照片），请本人面对摄像头重新眨眼",
    "mouth_texture": "未检测到真实的张嘴（口部疑似遮挡或照片），请本人面对摄像头重新张嘴",
    # The live call (issue 15): the best frame of the run against the verified card portrait.
    "card_face_mismatch": "通话画面中的人脸与身份证照片不一致，"
    "请由身份证上的本人正对摄像头完成检测",
    "card_face_unclear": "未能从通话画面中取得可与身份证照片比对的清晰正脸，请正对摄像头、"
    "保持光线充足并确保画面中只有您本人后重试",
}
# The challenge whose landmarks were met only on frames the appearance checks refused.
_APPEARANCE_REASON = {
    Challenge.BLINK: "blink_texture",
    Challenge.TURN_LEFT: "turn_flat",
    Challenge.TURN_RIGHT: "turn_flat",
    Challenge.OPEN_MOUTH: "mouth_texture",
}
_TIMEOUT_REASON = "未在规定时间内完成「{action}」动作，请按提示重新操作"
_ACTION_NAMES = {
    Challenge.BLINK: "眨眼",
    Challenge.TURN_LEFT: "向左转头",
    Challenge.TURN_RIGHT: "向右转头",
    Challenge.OPEN_MOUTH: "张嘴",
}


class TimedFrame(NamedTuple):
    """A video frame and its time in seconds from the start of the run."""

    t: float
    image: Frame


def new_challenge_plan(config: LivenessConfig, rng: random.Random | None = None) -> ChallengePlan:
    """A random sequence of distinct challenges; the default source is the OS's CSPRNG."""
    r = rng or secrets.SystemRandom()
    allowed = list(dict.fromkeys(config.challenges)) or list(Challenge)
    count = min(r.randint(config.min_challenges, config.max_challenges), len(allowed))
    return ChallengePlan(challenges=r.sample(allowed, count), time_limit_s=config.time_limit_s)


def frames_from_video(data: bytes, max_fps: float = 15.0, suffix: str = ".mp4") -> list[TimedFrame]:
    """Decode an uploaded clip (any container FFmpeg in OpenCV reads) into timed frames.

    OpenCV can only open files, hence the temporary file. Frames much closer than 1/max_fps to
    the previous kept one are skipped: landmark actions last 150 ms or more. The margin matters:
    browsers' WebM timestamps are whole milliseconds with jitter, so a 15 fps clip has frames
    66 ms apart, and a strict 1/15 s cut dropped every other one.
    """
    fd, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        cap = cv2.VideoCapture(path)
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        frames: list[TimedFrame] = []
        index, last = 0, -1e9
        while True:
            ok, img = cap.read()
            if not ok:
                break
            pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            t = pos if pos > 0 or index == 0 else (index / fps if fps else index / max_fps)
            if t - last >= 0.8 / max_fps:
                frames.append(TimedFrame(t, img))
                last = t
            index += 1
        cap.release()
        return frames
    finally:
        os.unlink(path)


@dataclass
class _ChallengeState:
    challenge: Challenge
    started_at: float | None = None
    completed_at: float | None = None
    peak: float | None = None
    seen_closed: bool = False
    hits: int = 0
    appearance: float | None = None
    refused: int = 0
    not_frontal: bool = False
    seen_neutral: bool = False  # a neutral frame was judged since the challenge began

    def saw(self, value: float) -> None:
        self.appearance = value if self.appearance is None else max(self.appearance, value)


@dataclass
class LivenessProgress:
    """What the page can show while frames stream in."""

    current: Challenge | None
    prompt: str | None
    completed: int
    finished: bool
    failed_reason: str | None = None


@dataclass
class LivenessRun:
    """A run of challenges fed frame by frame (from the call's track or a decoded clip)."""

    plan: ChallengePlan
    landmarker: Dlib68Landmarker
    config: LivenessConfig
    matcher: FaceMatcher | None = None
    anti_spoofing: PassiveAntiSpoofing | None = None
    anti_spoof_config: AntiSpoofConfig = field(default_factory=lambda: AntiSpoofConfig())
    # The verified card portrait (the live call): a run whose actions passed also needs its best
    # frame (frontal, eyes open, the largest face of the frames after the challenge began, which
    # the same-face check covers) to match it, with the identity step's engine and threshold
    # (``portrait_threshold``; None = the matcher's own, as ``IdentityService.match_face``).
    portrait: Frame | None = None
    portrait_threshold: float | None = None

    def __post_init__(self) -> None:
        self._states = [_ChallengeState(c) for c in self.plan.challenges]
        self._index = 0
        self._baseline: list[FaceObservation] = []
        self._ear0: float | None = None
        self._mar0: float | None = None
        self._yaw0: float | None = None
        self._first_face_t: float | None = None
        self._last_face_t: float | None = None
        self._frames = 0
        self._max_faces = 0
        self._failure: str | None = None
        self._failure_text: str | None = None
        self._reference: np.ndarray | None = None
        self._last_identity_t = -1e9
        self._max_distance: float | None = None
        self._best: tuple[float, int] | None = None
        self._best_image: Frame | None = None
        self._track = FaceTrack()  # the face's box from frame to frame (landmarks.py)
        self._keyframes: list[Frame] = []
        self._pts0: np.ndarray | None = None
        # One baseline frame (grey, full resolution) and its landmarks: the turn's relief is
        # followed from it; the one whose yaw proxy is nearest the baseline's median.
        self._frontal: tuple[float, np.ndarray, np.ndarray] | None = None
        self._open_eyes: list[np.ndarray] | None = None
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ feeding
    def prime(self, image: Frame) -> bool:
        """A frame from before the challenge was given (the live call): it may only set the
        neutral baseline, never count towards an action, so an action done before the server
        asked for it is not seen (it would at most spoil the baseline, after which the asked
        action cannot be measured from it). True when it showed exactly one face."""
        obs = self.landmarker.observe(image, self._track)
        self._max_faces = max(self._max_faces, obs.faces)
        if obs.faces != 1:
            return False
        self._update_baseline(obs, image)
        return True

    def add_frame(self, t: float, image: Frame) -> LivenessProgress:
        if self._failure is None and self._index < len(self._states):
            self._process(t, image)
        self._frames += 1
        return self.progress()

    def progress(self) -> LivenessProgress:
        current = self._states[self._index].challenge if self._index < len(self._states) else None
        return LivenessProgress(
            current=current,
            prompt=current.prompt if current else None,
            completed=self._index,
            finished=self._failure is not None or current is None,
            failed_reason=self._failure_text,
        )

    def _fail(self, code: str, text: str | None = None) -> None:
        self._failure = code
        self._failure_text = text or REASONS[code]

    def _process(self, t: float, image: Frame) -> None:
        obs = self.landmarker.observe(image, self._track)
        self._max_faces = max(self._max_faces, obs.faces)
        if obs.faces > 1:
            self._fail("multiple_faces")
            return
        if obs.faces == 0:
            if self._last_face_t is not None and t - self._last_face_t > self.config.max_face_gap_s:
                self._fail("face_lost")
            self._check_timeout(t)
            return
        if self._first_face_t is None:
            self._first_face_t = t
        self._last_face_t = t
        self._update_baseline(obs, image)
        state = self._states[self._index]
        if state.started_at is None:
            state.started_at = t
        self._check_identity(t, image, obs)
        if self._failure is not None:
            return
        if self._performed(state, obs, image):
            state.completed_at = t
            self._index += 1
            if self._index < len(self._states):
                self._states[self._index].started_at = t
            return
        self._check_timeout(t)

    def _check_timeout(self, t: float) -> None:
        if self._index >= len(self._states):
            return
        state = self._states[self._index]
        if state.started_at is not None and t - state.started_at > self.plan.time_limit_s:
            self._fail_challenge(state)

    def _fail_challenge(self, state: _ChallengeState) -> None:
        if state.not_frontal:
            self._fail("not_frontal")
        elif state.refused:
            self._fail(_APPEARANCE_REASON[state.challenge])
        else:
            self._fail(
                "challenge_timeout", _TIMEOUT_REASON.format(action=_ACTION_NAMES[state.challenge])
            )

    # ------------------------------------------------------------------ metrics
    def _update_baseline(self, obs: FaceObservation, image: Frame) -> None:
        # The first ~6 face frames, while the customer looks at the camera, define "neutral".
        if len(self._baseline) < 6:
            self._baseline.append(obs)
            self._ear0 = float(np.median([o.ear for o in self._baseline]))
            self._mar0 = float(np.median([o.mar for o in self._baseline]))
            self._yaw0 = float(np.median([o.yaw for o in self._baseline]))
            # Landmarks in the analysed frame: the homography makes their scale irrelevant.
            self._pts0 = np.median(
                np.array([o.landmarks for o in self._baseline], dtype=np.float64), axis=0
            )
            if self._open_eyes is None or abs((obs.ear or 0) - self._ear0) < 0.02:
                self._open_eyes = eye_patches(image, self._full_res(image, obs))
            off = abs((obs.yaw or 0.0) - self._yaw0)
            if self._frontal is None or off < abs(self._frontal[0] - self._yaw0):
                gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                self._frontal = (obs.yaw or 0.0, np.array(gray), self._full_res(image, obs))

    def _full_res(self, image: Frame, obs: FaceObservation) -> np.ndarray:
        """The observation's landmarks in ``image``'s own pixels (textures are read there)."""
        assert obs.landmarks is not None
        return obs.landmarks * (image.shape[1] / min(image.shape[1], self.config.analysis_width_px))

    def _at_rest_for(self, challenge: Challenge, obs: FaceObservation) -> bool:
        """The part of the face ``challenge`` moves is as in the baseline."""
        assert obs.ear is not None and obs.yaw is not None and obs.mar is not None
        assert self._ear0 is not None and self._yaw0 is not None and self._mar0 is not None
        if challenge is Challenge.BLINK:
            return obs.ear > 0.85 * self._ear0
        if challenge is Challenge.OPEN_MOUTH:
            return obs.mar < self._mar0 + 0.08
        return abs(obs.yaw - self._yaw0) < 0.08

    def _neutral(self, obs: FaceObservation) -> bool:
        """The whole face at rest: eyes, mouth and yaw as in the baseline."""
        return all(self._at_rest_for(c, obs)
                   for c in (Challenge.BLINK, Challenge.OPEN_MOUTH, Challenge.TURN_LEFT))

    def _performed(self, state: _ChallengeState, obs: FaceObservation, image: Frame) -> bool:
        cfg = self.config
        assert obs.ear is not None and obs.mar is not None and obs.yaw is not None
        assert self._ear0 is not None and self._mar0 is not None and self._yaw0 is not None
        c = state.challenge
        if not state.seen_neutral:
            # The action must begin after the challenge did: frames count only once one frame
            # was judged at rest *for this action* (a blink or turn already under way is not an
            # answer). Only the asked part of the face must be at rest: a customer who smiles
            # as a blink is asked still blinks (real video, testing/genuine_video.py: the
            # whole-face rule never saw a neutral frame again once the smile began).
            state.seen_neutral = self._at_rest_for(c, obs)
            return False
        if c is Challenge.BLINK:
            closed_below = min(cfg.blink_closed_ear, cfg.blink_relative * self._ear0)
            state.peak = obs.ear if state.peak is None else min(state.peak, obs.ear)
            if obs.ear < closed_below:
                if self._closed_eye_is_real(state, obs, image):
                    state.seen_closed = True
                return False
            # A blink is closing *and reopening*: a photo with closed eyes does not blink. The
            # reopened eye must look open again (its patch back near the open one).
            return (
                state.seen_closed
                and obs.ear > 0.85 * self._ear0
                and self._eye_change(obs, image) < cfg.blink_change_min
            )
        if c is Challenge.OPEN_MOUTH:
            state.peak = obs.mar if state.peak is None else max(state.peak, obs.mar)
            if obs.mar <= max(cfg.mouth_open_mar, self._mar0 + cfg.mouth_open_delta):
                return False
            inside = mouth_interior(image, self._full_res(image, obs))
            if inside is not None:
                state.saw(inside.structure)
            if (
                inside is None
                or inside.structure < cfg.mouth_structure_min
                or inside.dark_share < cfg.mouth_dark_share_min
                or inside.core_spread < cfg.mouth_core_spread_min
            ):
                state.refused += 1
                return False
            return True
        shift = obs.yaw - self._yaw0
        # Customer's left is image-right on an unmirrored camera: the nose moves to image-right.
        towards_left = shift if not cfg.mirrored else -shift
        wanted = towards_left if c is Challenge.TURN_LEFT else -towards_left
        state.peak = wanted if state.peak is None else max(state.peak, wanted)
        if wanted <= cfg.turn_delta:
            state.hits = 0
            return False
        # The yaw proxy moved; a real head also shows the nose's parallax, a turned print not.
        assert self._pts0 is not None and obs.landmarks is not None
        if abs(self._yaw0) > cfg.turn_reference_max_yaw:
            state.not_frontal = True  # no frontal reference to measure the parallax from
            state.refused += 1
            return False
        depth = parallax(self._pts0, obs.landmarks)
        if depth is not None:
            state.saw(depth.towards)
        if (
            depth is None
            or depth.towards < cfg.turn_parallax_min
            or not self._has_relief(obs, image, shift)
        ):
            state.refused += 1
            state.hits = 0
            return False
        state.hits += 1
        return state.hits >= 2  # two frames in a row: one jittery landmark fit is not a turn

    def _has_relief(self, obs: FaceObservation, image: Frame, shift: float) -> bool:
        """The nose tip's pixels left the nasion-upper lip line, the way the nose turned (a
        photo bent round a cylinder keeps that line straight; dlib's landmarks do not tell)."""
        assert self._frontal is not None
        _, frontal, frontal_pts = self._frontal
        seen = relief(
            frontal, frontal_pts, image, self._full_res(image, obs), float(np.sign(shift))
        )
        cfg = self.config
        return (
            seen is not None
            and seen.match >= cfg.turn_relief_match_min
            and seen.towards >= cfg.turn_relief_min
        )

    def _eye_change(self, obs: FaceObservation, image: Frame) -> float:
        assert self._open_eyes is not None
        return eye_change(self._open_eyes, image, self._full_res(image, obs))

    def _closed_eye_is_real(
        self, state: _ChallengeState, obs: FaceObservation, image: Frame
    ) -> bool:
        """The eye region changed from the open eye's and shows a lash line (not skin)."""
        cfg = self.config
        lash = eye_texture(image, self._full_res(image, obs)).lash
        state.saw(lash)
        if lash >= cfg.blink_lash_min and self._eye_change(obs, image) >= cfg.blink_change_min:
            return True
        state.refused += 1
        return False

    def _check_identity(self, t: float, image: Frame, obs: FaceObservation) -> None:
        if not self._neutral(obs):
            return
        assert obs.box is not None
        quality = float(obs.box[2] * obs.box[3])
        if self._best is None or quality > self._best[0] * 1.05:
            self._best = (quality, self._frames)
            self._best_image = image
        if t - self._last_identity_t < self.config.same_face_every_s:
            return
        self._last_identity_t = t
        if len(self._keyframes) < self.anti_spoof_config.frames_to_check:
            self._keyframes.append(image)
        if self.matcher is None:
            return
        # The largest face only (found without upsampling when large, as a selfie's is): a
        # second face is the landmarker's to count, on every frame (issue 15 item 3: ~4x less
        # detection than the full search).
        faces = self.matcher.embed(image, main_face_only=True)
        if not faces:
            return
        if self._reference is None:
            self._reference = faces[0].vector
            return
        distance = self.matcher.distance(self._reference, faces[0].vector)
        self._max_distance = max(self._max_distance or 0.0, distance)
        if distance > (self.config.same_face_threshold or self.matcher.threshold):
            self._fail("face_changed")

    # ------------------------------------------------------------------ result
    def finish(self) -> LivenessResult:
        if self._failure is None:
            if self._frames == 0:
                self._fail("no_frames")
            elif self._first_face_t is None:
                self._fail("no_face")
            elif self._index < len(self._states):
                self._fail_challenge(self._states[self._index])
        active_ok = self._failure is None
        if active_ok:
            passive = judge_passive(self.anti_spoofing, self._keyframes, self.anti_spoof_config)
        else:
            passive = PassiveLivenessResult(
                status="not_run",
                policy="model"
                if self.anti_spoofing
                else self.anti_spoof_config.policy_without_weights,
                note="动作活体未通过，未进行静默活体检测",
            )
        passed = active_ok and passive.status != "failed"
        reason_code, reason = self._failure, self._failure_text
        if active_ok and not passed:
            reason_code, reason = (
                "passive_failed",
                (REASONS["passive_failed"] if passive.policy == "model" else passive.note),
            )
        face_match = self._match_portrait() if passed else None
        if face_match is not None and not face_match.passed:
            passed = False
            reason_code = (
                "card_face_mismatch"
                if face_match.reason_code == "face_mismatch"
                else "card_face_unclear"
            )
            reason = REASONS[reason_code]
        outcomes = [
            ChallengeOutcome(
                challenge=s.challenge,
                passed=s.completed_at is not None,
                started_at_s=None if s.started_at is None else round(s.started_at, 3),
                completed_at_s=None if s.completed_at is None else round(s.completed_at, 3),
                time_limit_s=self.plan.time_limit_s,
                peak=None if s.peak is None else round(s.peak, 4),
                appearance=None if s.appearance is None else round(s.appearance, 4),
                appearance_refused_frames=s.refused,
            )
            for s in self._states
        ]
        engines = [self.landmarker.info.name] + ([self.matcher.info.name] if self.matcher else [])
        return LivenessResult(
            passed=passed,
            reason_code=reason_code,
            reason=reason,
            plan=self.plan,
            challenges=outcomes,
            same_face=self._failure != "face_changed" and self._max_faces <= 1,
            same_face_max_distance=None
            if self._max_distance is None
            else round(self._max_distance, 5),
            max_faces_seen=self._max_faces,
            frames_analysed=self._frames,
            best_frame_index=None if self._best is None else self._best[1],
            passive=passive,
            engine=EngineInfo(name="+".join(engines), version=self.landmarker.info.version),
            elapsed_s=round(time.perf_counter() - self._started, 4),
            face_match=face_match,
            matched_frame_jpeg=(
                encode_jpeg(self._best_image, 92)
                if passed and face_match is not None and self._best_image is not None
                else None
            ),
        )

    def _match_portrait(self) -> FaceMatchResult | None:
        """The best frame against the card portrait (None when no portrait was given)."""
        if self.portrait is None or self.matcher is None:
            return None
        if self._best_image is None:  # cannot happen after passed actions; fail closed
            return FaceMatchResult(
                passed=False,
                reason_code="no_face_probe",
                reason="未取得正脸画面",
                threshold=self.portrait_threshold or self.matcher.threshold,
                metric=self.matcher.metric,
                engine=self.matcher.info,
            )
        return match_faces(self.matcher, self.portrait, self._best_image, self.portrait_threshold)


def check_liveness(
    frames: Iterable[tuple[float, Frame]],
    plan: ChallengePlan,
    landmarker: Dlib68Landmarker,
    config: LivenessConfig,
    matcher: FaceMatcher | None = None,
    anti_spoofing: PassiveAntiSpoofing | None = None,
    anti_spoof_config: AntiSpoofConfig | None = None,
) -> LivenessResult:
    """Run the whole check on frames already collected (an uploaded clip, a recorded segment)."""
    run = LivenessRun(
        plan=plan,
        landmarker=landmarker,
        config=config,
        matcher=matcher,
        anti_spoofing=anti_spoofing,
        anti_spoof_config=anti_spoof_config or AntiSpoofConfig(),
    )
    for t, image in frames:
        if run.add_frame(t, image).finished:
            break
    return run.finish()
