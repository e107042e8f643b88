"""Typed results of the identity engines (R-12, R-13), to store on the session's identity check.

Every result says which engine and version produced it, carries its scores, whether it passed, an
English ``reason_code`` for developers and a Chinese ``reason`` the customer can act on.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class EngineInfo(BaseModel):
    name: str
    version: str


class Check(BaseModel):
    """One validation rule applied to a card (stable ``code``; ``message`` for the customer)."""

    code: str
    passed: bool
    message: str = ""


class IdCardFront(BaseModel):
    """Fields read from the portrait side (人像面)."""

    name: str | None = None
    sex: str | None = None
    ethnicity: str | None = None
    birth_date: date | None = None
    address: str | None = None
    id_number: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)


class IdCardBack(BaseModel):
    """Fields read from the emblem side (国徽面)."""

    issuing_authority: str | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    long_term: bool = False
    scores: dict[str, float] = Field(default_factory=dict)


class CardSideRead(BaseModel):
    """OCR of one photo of one side of the card, with the quality verdict."""

    kind: Literal["id_card_side"] = "id_card_side"
    side: Literal["front", "back"]
    ok: bool
    reason_code: str | None = None
    reason: str | None = None
    front: IdCardFront | None = None
    back: IdCardBack | None = None
    sharpness: float = 0.0
    mean_score: float = 0.0
    rotation: int = 0
    portrait_box: tuple[int, int, int, int] | None = None
    # True when ``portrait_jpeg`` was cut from the card warped back to its canonical shape from
    # its corners (media/identity/face/card.py), False when it is the OCR's own crop.
    portrait_straightened: bool = False
    lines: list[str] = Field(default_factory=list)
    engine: EngineInfo
    elapsed_s: float = 0.0
    # The portrait cropped from the card (JPEG), evidence for the face match; kept out of JSON.
    portrait_jpeg: bytes | None = Field(default=None, exclude=True, repr=False)


class ExpectedHolder(BaseModel):
    """The policyholder as the order names them."""

    name: str
    id_number: str


class IdCardVerification(BaseModel):
    """Both sides read and validated against GB 11643, the card's validity and the order (R-12)."""

    kind: Literal["id_card_verification"] = "id_card_verification"
    passed: bool
    reason_code: str | None = None
    reason: str | None = None
    checks: list[Check]
    front: IdCardFront | None = None
    back: IdCardBack | None = None
    age: int | None = None
    engine: EngineInfo


class FaceMatchResult(BaseModel):
    """ID portrait against a live face; ``distance`` in the engine's ``metric`` (0 = identical)."""

    kind: Literal["face_match"] = "face_match"
    passed: bool
    reason_code: str | None = None
    reason: str | None = None
    distance: float | None = None
    similarity: float | None = None
    threshold: float
    metric: Literal["cosine", "euclidean"] = "cosine"
    faces_in_reference: int = 0
    faces_in_probe: int = 0
    engine: EngineInfo
    elapsed_s: float = 0.0


class Challenge(StrEnum):
    BLINK = "blink"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    OPEN_MOUTH = "open_mouth"

    @property
    def prompt(self) -> str:
        """What the H5 page tells the customer to do."""
        return _PROMPTS[self]


_PROMPTS = {
    Challenge.BLINK: "请眨眨眼",
    Challenge.TURN_LEFT: "请缓慢向左转头",
    Challenge.TURN_RIGHT: "请缓慢向右转头",
    Challenge.OPEN_MOUTH: "请张张嘴",
}


class ChallengePlan(BaseModel):
    """The random sequence given to the customer; stored so the check can be replayed."""

    kind: Literal["liveness_plan"] = "liveness_plan"
    challenges: list[Challenge]
    time_limit_s: float

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.challenges]


class ChallengeOutcome(BaseModel):
    challenge: Challenge
    passed: bool
    started_at_s: float | None = None
    completed_at_s: float | None = None
    time_limit_s: float
    # The most extreme metric seen in the window (EAR for blink, MAR for mouth, yaw shift to turn).
    peak: float | None = None
    # What a flat photo cannot show (media/identity/liveness_geometry.py), best value on the
    # frames whose landmarks met the action: nose parallax / inter-ocular distance (turns),
    # lash-line depth of the closed eye (blink), structure of the mouth interior (open mouth).
    appearance: float | None = None
    # Frames whose landmarks met the action but whose appearance check refused it.
    appearance_refused_frames: int = 0


class PassiveLivenessResult(BaseModel):
    status: Literal["passed", "failed", "not_run"]
    score: float | None = None
    policy: str
    note: str
    engine: EngineInfo | None = None


class LivenessResult(BaseModel):
    """Active challenges (and passive anti-spoofing when configured) on a run of frames."""

    kind: Literal["liveness"] = "liveness"
    passed: bool
    reason_code: str | None = None
    reason: str | None = None
    plan: ChallengePlan
    challenges: list[ChallengeOutcome]
    same_face: bool
    same_face_max_distance: float | None = None
    max_faces_seen: int = 0
    frames_analysed: int = 0
    # A frontal, eyes-open frame of the run: what the workflow compares with the ID portrait.
    best_frame_index: int | None = None
    passive: PassiveLivenessResult
    engine: EngineInfo
    elapsed_s: float = 0.0
    # The best frame of the run against the verified card portrait, when one was given (the
    # live call, issue 15: the call's own frames, not an uploaded clip, are matched).
    face_match: FaceMatchResult | None = None
    # That frame (JPEG) when it matched the portrait: the presence monitor's reference for the
    # rest of the call (issue 15). Personal data: never in a dump (the workflow stores it
    # encrypted).
    matched_frame_jpeg: bytes | None = Field(default=None, exclude=True, repr=False)


PresenceMarkType = Literal[
    "customer_left",
    "customer_returned",
    "second_face_appeared",
    "second_face_gone",
    "face_changed",
    "face_restored",
    # No sample for longer than PresenceConfig.max_gap_s (at the last sample before the
    # stretch), and sampled again: what happened between is unknown, neither presence nor
    # absence (R-13, fail closed).
    "sampling_lost",
    "sampling_resumed",
]


class PresenceMark(BaseModel):
    """A timeline mark of a presence breach (or its end) during the call (R-13)."""

    kind: Literal["presence_mark"] = "presence_mark"
    type: PresenceMarkType
    at_s: float
    message: str
    faces: int
    distance: float | None = None


class PresenceReport(BaseModel):
    kind: Literal["presence_report"] = "presence_report"
    passed: bool
    reason_code: str | None = None
    reason: str | None = None
    duration_s: float
    in_view_share: float
    min_in_view_share: float
    samples: int
    max_faces: int
    marks: list[PresenceMark]
    engine: EngineInfo
    # Seconds of the call no sample speaks for (stretches longer than max_gap_s): neither in
    # view nor out of it.
    unsampled_s: float = 0.0
