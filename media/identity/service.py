"""The identity service the workflow calls (R-12, R-13): one object, engines built on first use.

Every method is a plain synchronous function (CPU-bound; run it in a taskiq worker) with an
``a``-prefixed async twin that runs it in a thread. Inputs are bytes or BGR arrays, outputs are
the pydantic results of ``media.identity.results``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from datetime import date
from typing import Literal

from media.identity.antispoof import PassiveAntiSpoofing, create_anti_spoofing
from media.identity.config import IdentityConfig
from media.identity.face import FaceMatcher, create_face_matcher, match_faces
from media.identity.face.card import straightened_portrait
from media.identity.idcard import read_card_side, validate_card
from media.identity.imaging import Frame, as_frame, encode_jpeg
from media.identity.landmarks import Dlib68Landmarker
from media.identity.liveness import (
    LivenessRun,
    check_liveness,
    frames_from_video,
    new_challenge_plan,
)
from media.identity.ocr import IdCardOcr, create_id_card_ocr
from media.identity.presence import PresenceMonitor
from media.identity.results import (
    CardSideRead,
    ChallengePlan,
    ExpectedHolder,
    FaceMatchResult,
    IdCardVerification,
    LivenessResult,
)


class IdentityService:
    """Holds the engines (loaded lazily, once, thread-safely) and exposes the checks."""

    def __init__(self, config: IdentityConfig | None = None) -> None:
        self.config = config or IdentityConfig()
        self._lock = threading.Lock()
        self._ocr: IdCardOcr | None = None
        self._matcher: FaceMatcher | None = None
        self._landmarker: Dlib68Landmarker | None = None
        self._anti_spoofing: PassiveAntiSpoofing | None = None
        self._anti_spoofing_loaded = False

    # ------------------------------------------------------------------ engines
    @property
    def ocr(self) -> IdCardOcr:
        with self._lock:
            if self._ocr is None:
                self._ocr = create_id_card_ocr(self.config)
            return self._ocr

    @property
    def matcher(self) -> FaceMatcher:
        with self._lock:
            if self._matcher is None:
                self._matcher = create_face_matcher(self.config)
            return self._matcher

    @property
    def landmarker(self) -> Dlib68Landmarker:
        with self._lock:
            if self._landmarker is None:
                live = self.config.liveness
                self._landmarker = Dlib68Landmarker(
                    live.analysis_width_px, live.track_rescan_every, live.track_reacquire_width_px
                )
            return self._landmarker

    @property
    def anti_spoofing(self) -> PassiveAntiSpoofing | None:
        with self._lock:
            if not self._anti_spoofing_loaded:
                self._anti_spoofing = create_anti_spoofing(
                    self.config.anti_spoof, self.config.cache_dir, self.config.face.detector_backend
                )
                self._anti_spoofing_loaded = True
            return self._anti_spoofing

    def warm_up(self) -> None:
        """Load every engine now (worker start-up), instead of on the first customer."""
        _ = self.ocr, self.matcher, self.landmarker, self.anti_spoofing

    @property
    def loaded(self) -> bool:
        """Whether every engine is loaded (what `warm_up` does), without loading any."""
        with self._lock:
            return (self._ocr is not None and self._matcher is not None
                    and self._landmarker is not None and self._anti_spoofing_loaded)

    # ------------------------------------------------------------------ ID card
    def read_card_side(self, image: bytes | Frame, side: Literal["front", "back"]) -> CardSideRead:
        read = read_card_side(self.ocr, image, side, self.config.card_quality)
        if side == "front" and read.portrait_jpeg is not None:
            read = self._straighten_portrait(as_frame(image), read)
        return read

    def _straighten_portrait(self, photo: Frame, read: CardSideRead) -> CardSideRead:
        """The portrait cut from the card warped to its canonical shape (its corners found in
        the photo), when a face is found in it; else the OCR's own crop (R-12)."""
        portrait = straightened_portrait(photo, read.rotation)
        if portrait is None or not self.matcher.detect(portrait):
            return read
        return read.model_copy(
            update={"portrait_jpeg": encode_jpeg(portrait, 95), "portrait_straightened": True}
        )

    def verify_card(
        self,
        front: CardSideRead,
        back: CardSideRead | None,
        expected: ExpectedHolder | None,
        today: date | None = None,
    ) -> IdCardVerification:
        return validate_card(front, back, expected, today or date.today())

    def verify_card_images(
        self,
        front: bytes | Frame,
        back: bytes | Frame | None,
        expected: ExpectedHolder | None,
        today: date | None = None,
    ) -> tuple[IdCardVerification, CardSideRead, CardSideRead | None]:
        """Read both sides and validate; the side reads carry the portrait crop and evidence."""
        front_read = self.read_card_side(front, "front")
        back_read = self.read_card_side(back, "back") if back is not None else None
        return self.verify_card(front_read, back_read, expected, today), front_read, back_read

    # ------------------------------------------------------------------ faces
    def match_face(self, reference: bytes | Frame, probe: bytes | Frame) -> FaceMatchResult:
        """ID portrait (``CardSideRead.portrait_jpeg``) against a live frame."""
        return match_faces(self.matcher, reference, probe, self.config.face.threshold)

    # ------------------------------------------------------------------ liveness
    def new_challenge_plan(self) -> ChallengePlan:
        return new_challenge_plan(self.config.liveness)

    def start_liveness(
        self, plan: ChallengePlan, portrait: bytes | Frame | None = None
    ) -> LivenessRun:
        """A run to feed frame by frame from the call's video track; with the verified card
        ``portrait``, its best frame must also match it, with the engine and threshold of
        `match_face` (the identity step's)."""
        return LivenessRun(
            plan=plan,
            landmarker=self.landmarker,
            config=self.config.liveness,
            matcher=self.matcher,
            anti_spoofing=self.anti_spoofing,
            anti_spoof_config=self.config.anti_spoof,
            portrait=None if portrait is None else as_frame(portrait),
            portrait_threshold=self.config.face.threshold,
        )

    def check_liveness(
        self,
        frames: bytes | Iterable[tuple[float, Frame]],
        plan: ChallengePlan,
    ) -> LivenessResult:
        """Frames already collected (``TimedFrame`` or ``(t, frame)``), or an uploaded clip."""
        timed: Iterable[tuple[float, Frame]] = (
            frames_from_video(frames) if isinstance(frames, bytes) else frames
        )
        return check_liveness(
            timed,
            plan,
            self.landmarker,
            self.config.liveness,
            matcher=self.matcher,
            anti_spoofing=self.anti_spoofing,
            anti_spoof_config=self.config.anti_spoof,
        )

    # ------------------------------------------------------------------ presence
    def presence_monitor(self, reference: bytes | Frame, start_t: float = 0.0) -> PresenceMonitor:
        """R-13 monitor for one call; ``reference`` is the verified live face (liveness frame)."""
        return PresenceMonitor.from_reference_image(
            self.matcher, as_frame(reference), self.config.presence, start_t
        )

    # ------------------------------------------------------------------ async twins
    async def aread_card_side(
        self, image: bytes | Frame, side: Literal["front", "back"]
    ) -> CardSideRead:
        return await asyncio.to_thread(self.read_card_side, image, side)

    async def averify_card_images(
        self,
        front: bytes | Frame,
        back: bytes | Frame | None,
        expected: ExpectedHolder | None,
        today: date | None = None,
    ) -> tuple[IdCardVerification, CardSideRead, CardSideRead | None]:
        return await asyncio.to_thread(self.verify_card_images, front, back, expected, today)

    async def amatch_face(self, reference: bytes | Frame, probe: bytes | Frame) -> FaceMatchResult:
        return await asyncio.to_thread(self.match_face, reference, probe)

    async def acheck_liveness(
        self,
        frames: bytes | Iterable[tuple[float, Frame]],
        plan: ChallengePlan,
    ) -> LivenessResult:
        return await asyncio.to_thread(self.check_liveness, frames, plan)
