"""Active liveness (活体检测, R-12): random challenges checked on a run of timed frames.

The server draws 2–3 distinct challenges (blink, turn left, turn right, open mouth) with a time
limit each; the customer performs them in order in front of the camera. Each frame's landmarks
give eye/mouth aspect ratios and a yaw proxy, compared with the customer's own neutral baseline.
Throughout the run exactly one face must be visible and it must stay the same person. A still
photo held up to the camera, or replayed as video, performs nothing and fails on the time limits.
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
from media.identity.face import FaceMatcher, cosine_distance
from media.identity.imaging import Frame
from media.identity.landmarks import Dlib68Landmarker, FaceObservation
from media.identity.results import (
    Challenge,
    ChallengeOutcome,
    ChallengePlan,
    EngineInfo,
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
    count = r.randint(config.min_challenges, config.max_challenges)
    return ChallengePlan(
        challenges=r.sample(list(Challenge), count), time_limit_s=config.time_limit_s
    )


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
        self._keyframes: list[Frame] = []
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ feeding
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
        obs = self.landmarker.observe(image)
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
        self._update_baseline(obs)
        state = self._states[self._index]
        if state.started_at is None:
            state.started_at = t
        self._check_identity(t, image, obs)
        if self._failure is not None:
            return
        if self._performed(state, obs):
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
            self._fail(
                "challenge_timeout", _TIMEOUT_REASON.format(action=_ACTION_NAMES[state.challenge])
            )

    # ------------------------------------------------------------------ metrics
    def _update_baseline(self, obs: FaceObservation) -> None:
        # The first ~6 face frames, while the customer looks at the camera, define "neutral".
        if len(self._baseline) < 6:
            self._baseline.append(obs)
            self._ear0 = float(np.median([o.ear for o in self._baseline]))
            self._mar0 = float(np.median([o.mar for o in self._baseline]))
            self._yaw0 = float(np.median([o.yaw for o in self._baseline]))

    def _neutral(self, obs: FaceObservation) -> bool:
        assert obs.ear is not None and obs.yaw is not None and obs.mar is not None
        assert self._ear0 is not None and self._yaw0 is not None and self._mar0 is not None
        return (
            abs(obs.yaw - self._yaw0) < 0.08
            and obs.ear > 0.85 * self._ear0
            and obs.mar < self._mar0 + 0.08
        )

    def _performed(self, state: _ChallengeState, obs: FaceObservation) -> bool:
        cfg = self.config
        assert obs.ear is not None and obs.mar is not None and obs.yaw is not None
        assert self._ear0 is not None and self._mar0 is not None and self._yaw0 is not None
        c = state.challenge
        if c is Challenge.BLINK:
            closed_below = min(cfg.blink_closed_ear, cfg.blink_relative * self._ear0)
            state.peak = obs.ear if state.peak is None else min(state.peak, obs.ear)
            if obs.ear < closed_below:
                state.seen_closed = True
                return False
            # A blink is closing *and reopening*: a photo with closed eyes does not blink.
            return state.seen_closed and obs.ear > 0.85 * self._ear0
        if c is Challenge.OPEN_MOUTH:
            state.peak = obs.mar if state.peak is None else max(state.peak, obs.mar)
            return obs.mar > max(cfg.mouth_open_mar, self._mar0 + cfg.mouth_open_delta)
        shift = obs.yaw - self._yaw0
        # Customer's left is image-right on an unmirrored camera: the nose moves to image-right.
        towards_left = shift if not cfg.mirrored else -shift
        wanted = towards_left if c is Challenge.TURN_LEFT else -towards_left
        state.peak = wanted if state.peak is None else max(state.peak, wanted)
        state.hits = state.hits + 1 if wanted > cfg.turn_delta else 0
        return state.hits >= 2  # two frames in a row: one jittery landmark fit is not a turn

    def _check_identity(self, t: float, image: Frame, obs: FaceObservation) -> None:
        if not self._neutral(obs):
            return
        assert obs.box is not None
        quality = float(obs.box[2] * obs.box[3])
        if self._best is None or quality > self._best[0] * 1.05:
            self._best = (quality, self._frames)
        if t - self._last_identity_t < self.config.same_face_every_s:
            return
        self._last_identity_t = t
        if len(self._keyframes) < self.anti_spoof_config.frames_to_check:
            self._keyframes.append(image)
        if self.matcher is None:
            return
        faces = self.matcher.embed(image)
        if not faces:
            return
        if self._reference is None:
            self._reference = faces[0].vector
            return
        distance = cosine_distance(self._reference, faces[0].vector)
        self._max_distance = max(self._max_distance or 0.0, distance)
        if distance > self.config.same_face_threshold:
            self._fail("face_changed")

    # ------------------------------------------------------------------ result
    def finish(self) -> LivenessResult:
        if self._failure is None:
            if self._frames == 0:
                self._fail("no_frames")
            elif self._first_face_t is None:
                self._fail("no_face")
            elif self._index < len(self._states):
                state = self._states[self._index]
                self._fail(
                    "challenge_timeout",
                    _TIMEOUT_REASON.format(action=_ACTION_NAMES[state.challenge]),
                )
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
        outcomes = [
            ChallengeOutcome(
                challenge=s.challenge,
                passed=s.completed_at is not None,
                started_at_s=None if s.started_at is None else round(s.started_at, 3),
                completed_at_s=None if s.completed_at is None else round(s.completed_at, 3),
                time_limit_s=self.plan.time_limit_s,
                peak=None if s.peak is None else round(s.peak, 4),
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
        )


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
