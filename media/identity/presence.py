"""Presence of the customer during the call (R-13): timeline marks and time in view.

The call hub hands frames of the customer's video (any rate; kept at ``sample_fps``) with their
time in the recording. Each sample counts faces and compares them with the customer's reference
embedding (taken at identity verification). A change must last ``confirm_samples`` samples before
it is marked, so one missed detection does not put a breach on the timeline.

Cost: every sample counts faces with the detector on a small copy of the frame (~0.04 CPU-s);
the face embedding (~0.6 CPU-s) runs only when it can tell something new — on the first face,
when the number of faces changed, when the face moved, resized or looks different from the
last checked one (a tiny grey thumbnail is compared), and at least every
``identity_every_n_samples`` samples. Checking every sample cost ~0.8 CPU-s per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.config import PresenceConfig
from media.identity.face import FaceBox, FaceEmbedding, FaceMatcher, cosine_distance
from media.identity.imaging import Frame, limit_size
from media.identity.results import PresenceMark, PresenceMarkType, PresenceReport

MESSAGES: dict[PresenceMarkType, str] = {
    "customer_left": "客户离开画面",
    "customer_returned": "客户回到画面",
    "second_face_appeared": "画面中出现第二张人脸",
    "second_face_gone": "第二张人脸已离开画面",
    "face_changed": "画面中的人脸与核验身份的客户不一致",
    "face_restored": "核验身份的客户重新出现在画面中",
}
REASONS: dict[str, str] = {
    "low_presence": "通话中客户未始终处于画面内，请保持面部在画面中",
    "second_face": "通话中画面出现他人，请确保仅投保人本人出镜",
    "face_changed": "通话中出镜人员与身份核验人员不一致",
    "no_samples": "未收到客户视频画面",
}


@dataclass
class _Sample:
    t: float
    faces: int
    in_view: bool
    distance: float | None


@dataclass
class _Flag:
    """A debounced boolean: flips only after ``need`` consecutive samples say so."""

    need: int
    value: bool = False
    streak: int = 0
    first_t: float = 0.0

    def update(self, observed: bool, t: float) -> float | None:
        """The time the flip started when it flips now, else None."""
        if observed == self.value:
            self.streak = 0
            return None
        if self.streak == 0:
            self.first_t = t
        self.streak += 1
        if self.streak >= self.need:
            self.value, self.streak = observed, 0
            return self.first_t
        return None


@dataclass
class PresenceMonitor:
    matcher: FaceMatcher
    reference: NDArray[np.float64]
    config: PresenceConfig = field(default_factory=lambda: PresenceConfig())
    start_t: float = 0.0

    def __post_init__(self) -> None:
        need = self.config.confirm_samples
        self._away = _Flag(need)
        self._crowded = _Flag(need)
        self._changed = _Flag(need)
        self._samples: list[_Sample] = []
        self._marks: list[PresenceMark] = []
        self._last_t: float | None = None
        self._last_match: bool = True
        # What the face looked like at the last identity check (in the small copy's pixels).
        self._checked: tuple[int, FaceBox, NDArray[np.float32]] | None = None
        self._since_check = 0
        self.identity_checks = 0

    @classmethod
    def from_reference_image(
        cls,
        matcher: FaceMatcher,
        image: Frame,
        config: PresenceConfig | None = None,
        start_t: float = 0.0,
    ) -> PresenceMonitor:
        faces = matcher.embed(image)
        if not faces:
            raise ValueError("no face in the reference image")
        return cls(matcher, faces[0].vector, config or PresenceConfig(), start_t)

    @property
    def marks(self) -> list[PresenceMark]:
        return list(self._marks)

    def add_frame(self, t: float, image: Frame) -> list[PresenceMark]:
        """Sample the frame if it is due; returns the marks this sample produced."""
        if self._last_t is not None and t - self._last_t < 1.0 / self.config.sample_fps - 1e-6:
            return []
        self._last_t = t
        small, _ = limit_size(image, self.config.detect_max_side_px)
        boxes = sorted(self.matcher.detect(small), key=lambda b: b.area, reverse=True)
        faces, distance = len(boxes), None
        self._since_check += 1
        if boxes and self._identity_due(faces, boxes[0], small):
            embedded = self.matcher.embed(image)
            self.identity_checks += 1
            self._checked = (faces, boxes[0], _thumbnail(small, boxes[0]))
            self._since_check = 0
            # The full-size pass may find a face the small copy was too coarse for.
            faces = max(faces, len(embedded))
            distance = self._best_distance(embedded)
            if distance is not None:
                self._last_match = distance <= self.config.face_threshold
        matches = faces > 0 and self._last_match
        self._samples.append(_Sample(t, faces, matches, distance))

        new: list[PresenceMark] = []
        started = self._away.update(faces == 0, t)
        if started is not None:
            new.append(
                self._mark(
                    "customer_left" if self._away.value else "customer_returned", started, faces
                )
            )
        started = self._crowded.update(faces > 1, t)
        if started is not None:
            kind: PresenceMarkType = (
                "second_face_appeared" if self._crowded.value else "second_face_gone"
            )
            new.append(self._mark(kind, started, faces))
        if faces > 0:
            started = self._changed.update(not self._last_match, t)
            if started is not None:
                kind = "face_changed" if self._changed.value else "face_restored"
                new.append(self._mark(kind, started, faces, distance))
        self._marks.extend(new)
        return new

    def _identity_due(self, faces: int, box: FaceBox, small: Frame) -> bool:
        if self._checked is None or self._since_check >= self.config.identity_every_n_samples:
            return True
        checked_faces, checked_box, checked_look = self._checked
        if faces != checked_faces:
            return True
        size = max(checked_box.w, 1)
        moved = max(abs(box.x - checked_box.x), abs(box.y - checked_box.y)) / size
        resized = box.w / size
        if moved > 0.3 or not 0.75 < resized < 1.33:
            return True
        # Normalised correlation of 24×24 grey thumbnails of the checked face's place (the
        # detector's boxes jump between pyramid scales, so the old box is reused): the same
        # face under camera shake stays above 0.95; another face there drops to ~0.2–0.4.
        look = _thumbnail(small, checked_box)
        return float(np.mean(look * checked_look)) < self.config.same_look_correlation

    def _best_distance(self, faces: list[FaceEmbedding]) -> float | None:
        if not faces:
            return None
        return min(cosine_distance(self.reference, f.vector) for f in faces)

    def _mark(
        self, kind: PresenceMarkType, t: float, faces: int, distance: float | None = None
    ) -> PresenceMark:
        return PresenceMark(
            type=kind,
            at_s=round(t, 3),
            message=MESSAGES[kind],
            faces=faces,
            distance=None if distance is None else round(distance, 5),
        )

    def finish(self, end_t: float | None = None) -> PresenceReport:
        """The report for the whole call; ``end_t`` is its end (default: last sample + period)."""
        period = 1.0 / self.config.sample_fps
        if not self._samples:
            return PresenceReport(
                passed=False,
                reason_code="no_samples",
                reason=REASONS["no_samples"],
                duration_s=0.0,
                in_view_share=0.0,
                min_in_view_share=self.config.min_in_view_share,
                samples=0,
                max_faces=0,
                marks=[],
                engine=self.matcher.info,
            )
        end = end_t if end_t is not None else self._samples[-1].t + period
        start = min(self.start_t, self._samples[0].t)
        duration = max(end - start, 1e-9)
        in_view = 0.0
        for i, s in enumerate(self._samples):
            # Each sample stands for the time until the next one (or the end of the call).
            nxt = self._samples[i + 1].t if i + 1 < len(self._samples) else end
            if s.in_view:
                in_view += max(0.0, nxt - s.t)
        share = in_view / duration
        kinds = {m.type for m in self._marks}
        code = None
        if "face_changed" in kinds:
            code = "face_changed"
        elif "second_face_appeared" in kinds:
            code = "second_face"
        elif share < self.config.min_in_view_share:
            code = "low_presence"
        return PresenceReport(
            passed=code is None,
            reason_code=code,
            reason=REASONS[code] if code else None,
            duration_s=round(duration, 3),
            in_view_share=round(share, 4),
            min_in_view_share=self.config.min_in_view_share,
            samples=len(self._samples),
            max_faces=max(s.faces for s in self._samples),
            marks=list(self._marks),
            engine=self.matcher.info,
        )


def _thumbnail(image: Frame, box: FaceBox) -> NDArray[np.float32]:
    """The face as a zero-mean, unit-variance 24×24 grey patch."""
    h, w = image.shape[:2]
    x0, y0 = max(box.x, 0), max(box.y, 0)
    x1, y1 = min(box.x + box.w, w), min(box.y + box.h, h)
    patch = image[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch
    small = cv2.resize(grey, (24, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (small - small.mean()) / (small.std() + 1e-6)
