"""Presence of the customer during the call (R-13): timeline marks and time in view.

The call hub hands frames of the customer's video (any rate; kept at ``sample_fps``) with their
time in the recording. Each sample counts faces and compares them with the customer's reference
embedding (taken at identity verification). A change must last ``confirm_samples`` samples before
it is marked, so one missed detection does not put a breach on the timeline.

Fail closed on missing samples (issue 16): when the call hub falls behind (or the picture
stops) and two samples are more than ``max_gap_s`` apart, the rest of that stretch is unknown —
neither in view nor away. It is marked ``sampling_lost`` (when the window ran out) and
``sampling_resumed`` (at the next sample), a change is confirmed only by samples without such a
stretch between them, and the report counts it as ``unsampled_s``: ``low_presence`` only when
the customer would be out of view too long even if in view all the unknown time, else
``not_sampled`` when the unknown time decides it.

Cost: the face detector (HOG on a copy of at most ``detect_max_side_px``, ~0.045 CPU-s) does
not run on every sample. Between detections each face found is followed by its grey template
(normalised correlation within half a face of its last place, on a 240 px grey copy), and the
rest of the picture is compared with the picture of the last detection (a 120 px blurred copy,
aligned for camera shake by phase correlation; around the head the head's own movement is
taken out too). The detector runs again when a face is no longer found by its template, when
anything outside the faces changed (a face may have come), and at least every
``DETECT_EVERY_N_SAMPLES`` samples. In every clip measured (tests, bench) faces came and went
on the same sample as when the detector ran on every sample. A followed sample costs ~2 ms.

The face embedding (~0.075 CPU-s on the region around a single face, ~0.14 on the whole
frame) runs only when it can tell something new: on the first face, when the number of faces
changed, when the face moved, resized or looks different from the last checked one (a 24×24
grey thumbnail of the face where it is now, at the checked size: a face swapped in place,
which tracking alone would follow, is caught here), and at least every
``identity_every_n_samples`` samples. Measured with ``bench/presence.py`` (docs/identity.md):
0.021 CPU-s per sample on a steady call, 0.085 when the detector ran on every sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.config import PresenceConfig
from media.identity.face import FaceBox, FaceEmbedding, FaceMatcher
from media.identity.imaging import Frame, limit_size
from media.identity.results import PresenceMark, PresenceMarkType, PresenceReport

MESSAGES: dict[PresenceMarkType, str] = {
    "customer_left": "客户离开画面",
    "customer_returned": "客户回到画面",
    "second_face_appeared": "画面中出现第二张人脸",
    "second_face_gone": "第二张人脸已离开画面",
    "face_changed": "画面中的人脸与核验身份的客户不一致",
    "face_restored": "核验身份的客户重新出现在画面中",
    "sampling_lost": "客户画面未能按时采样，此后客户是否在场无法判断",
    "sampling_resumed": "客户画面恢复采样",
}
REASONS: dict[str, str] = {
    "low_presence": "通话中客户未始终处于画面内，请保持面部在画面中",
    "second_face": "通话中画面出现他人，请确保仅投保人本人出镜",
    "face_changed": "通话中出镜人员与身份核验人员不一致",
    "no_samples": "未收到客户视频画面",
    "not_sampled": "通话中部分时段未能采样客户画面，无法判断客户是否始终在场",
}

# Counting faces between detections (see the module docstring). Tracking copy: grey, longest
# side TRACK_SIDE_PX (a 640 px frame: 0.375; a face of ~200 px is ~75 px there).
TRACK_SIDE_PX = 240
# A face's template must match this well (normalised correlation) within half a face of its
# last place, or the detector runs again.
TRACK_MIN_CORRELATION = 0.6
SEARCH_MARGIN = 0.5
# Motion outside the followed heads (box grown by HEAD_MARGIN each side), in the motion copy
# (half the tracking copy, blurred): pixels that changed by more than MOTION_LEVEL grey levels
# since the last detection; more than MOTION_MAX_PX of them and the detector runs again. A face
# as small as the detector finds (~55 px of a 640 px frame) covers ~100 pixels there.
MOTION_LEVEL = 20
MOTION_MAX_PX = 30
HEAD_MARGIN = 0.5
# The detector runs at least this often, whatever tracking says.
DETECT_EVERY_N_SAMPLES = 10
# The identity check embeds the region around a single face, this much of the face around it.
CROP_MARGIN = 0.6


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
class _Track:
    """A face followed between detections: its box (frame pixels) and its grey template (in the
    tracking copy's pixels) as the last detection saw it."""

    box: tuple[float, float, float, float]  # x, y, w, h in the frame, now
    template: NDArray[np.uint8]
    detected: tuple[float, float, float, float]  # the box when it was detected

    @property
    def shift(self) -> tuple[float, float]:
        return self.box[0] - self.detected[0], self.box[1] - self.detected[1]


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
        # What the face looked like at the last identity check: (faces, box in frame pixels,
        # 24×24 thumbnail from the tracking copy).
        self._checked: tuple[int, FaceBox, NDArray[np.float32]] | None = None
        self._since_check = 0
        # Between detections: the faces followed and the motion copy of the last detection.
        self._tracks: list[_Track] = []
        self._motion_ref: NDArray[np.uint8] | None = None
        self._since_detect = 0
        self.identity_checks = 0  # face embeddings
        self.detections = 0  # samples on which the face detector ran
        self.last_motion_px = 0  # changed pixels outside the faces (motion copy), last sample

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

    def replace_reference(self, image: Frame) -> None:
        """A better reference face (the live call's frame matched against the card portrait,
        issue 15): the samples, breaches and their debounce go on; the next sample checks the
        identity against the new reference. ValueError when it holds no face."""
        faces = self.matcher.embed(image)
        if not faces:
            raise ValueError("no face in the reference image")
        self.reference = faces[0].vector
        self._checked = None

    @property
    def marks(self) -> list[PresenceMark]:
        return list(self._marks)

    def add_frame(self, t: float, image: Frame) -> list[PresenceMark]:
        """Sample the frame if it is due; returns the marks this sample produced."""
        if self._last_t is not None and t - self._last_t < 1.0 / self.config.sample_fps - 1e-6:
            return []
        self._last_t = t
        lost = self._gap_before(t)
        grey, scale = _tracking_copy(image)
        boxes = self._follow(grey, scale)
        if boxes is None:
            boxes = self._detect(image, grey, scale)
        faces, distance = len(boxes), None
        self._since_check += 1
        if boxes and self._identity_due(faces, boxes[0], grey, scale):
            embedded, whole = self._embed(image, boxes)
            self.identity_checks += 1
            self._checked = (faces, boxes[0], _thumbnail(grey, boxes[0], scale))
            self._since_check = 0
            if whole:  # the full-size pass may find a face the small copy was too coarse for
                faces = max(faces, len(embedded))
            distance = self._best_distance(embedded)
            if distance is not None:
                self._last_match = distance <= (
                    self.config.face_threshold or self.matcher.threshold
                )
        matches = faces > 0 and self._last_match
        self._samples.append(_Sample(t, faces, matches, distance))

        new: list[PresenceMark] = []
        if lost is not None:
            new += [lost, self._mark("sampling_resumed", t, faces)]
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

    def _gap_before(self, t: float) -> PresenceMark | None:
        """A ``sampling_lost`` mark when nothing was sampled for longer than ``max_gap_s``
        before ``t`` (since the last sample, or the monitor's start), at the moment that
        window ran out: what happened from then until ``t`` is unknown, so a change seen
        before it and again after it is not confirmed by "consecutive" samples (the runs start
        again). Before the first sample nothing was seen: marked from the start."""
        last = self._samples[-1] if self._samples else None
        since = last.t if last is not None else self.start_t
        if t - since <= self.config.max_gap_s:
            return None
        for flag in (self._away, self._crowded, self._changed):
            flag.streak = 0
        if last is None:  # nothing seen since the start
            return self._mark("sampling_lost", since, 0)
        return self._mark("sampling_lost", since + self.config.max_gap_s, last.faces)

    # -- counting faces: detect, then follow -------------------------------------------------

    def _detect(self, image: Frame, grey: NDArray[np.uint8], scale: float) -> list[FaceBox]:
        """Run the face detector on a copy of at most ``detect_max_side_px``; boxes in frame
        pixels, largest first. Starts following what it found."""
        small, small_scale = limit_size(image, self.config.detect_max_side_px)
        found = sorted(self.matcher.detect(small), key=lambda b: b.area, reverse=True)
        self.detections += 1
        self._since_detect = 0
        boxes = [_scaled(b, 1 / small_scale) for b in found]
        self._tracks = [
            _Track((b.x, b.y, b.w, b.h), _cut(grey, (b.x, b.y, b.w, b.h), scale),
                   (b.x, b.y, b.w, b.h))
            for b in boxes
        ]
        self._tracks = [tr for tr in self._tracks if tr.template.size]
        self._motion_ref = _motion_copy(grey)
        return boxes

    def _follow(self, grey: NDArray[np.uint8], scale: float) -> list[FaceBox] | None:
        """The faces of the last detection where they are now, or None when the detector must
        run: nothing detected yet, ``DETECT_EVERY_N_SAMPLES`` since the last detection, a face
        no longer found by its template, or something changed elsewhere in the picture (a face
        may have come)."""
        self._since_detect += 1
        ref = self._motion_ref
        if ref is None or self._since_detect >= DETECT_EVERY_N_SAMPLES:
            return None
        boxes: list[FaceBox] = []
        moved: list[_Track] = []
        for track in self._tracks:
            found = _match(grey, track, scale)
            if found is None:
                return None  # lost: left, covered, turned away, or someone else
            moved.append(_Track(found, track.template, track.detected))
            boxes.append(_box(found))
        motion = _motion_copy(grey)
        if motion.shape != ref.shape:
            return None
        self.last_motion_px = _changed_pixels(ref, motion, moved, scale)
        if self.last_motion_px > MOTION_MAX_PX:
            return None
        self._tracks = moved
        return boxes

    def _embed(self, image: Frame, boxes: list[FaceBox]) -> tuple[list[FaceEmbedding], bool]:
        """Embeddings to compare, and whether they come from the whole frame. One face: only
        the region around it (the detector searches a crop, not the frame: ~0.07 instead of
        ~0.14 CPU-s); several faces, or none found in the crop: the whole frame."""
        if len(boxes) == 1:
            b = boxes[0]
            h, w = image.shape[:2]
            x0, y0 = max(0, int(b.x - CROP_MARGIN * b.w)), max(0, int(b.y - CROP_MARGIN * b.h))
            x1 = min(w, int(b.x + b.w + CROP_MARGIN * b.w))
            y1 = min(h, int(b.y + b.h + CROP_MARGIN * b.h))
            if x1 - x0 > 8 and y1 - y0 > 8:
                crop = np.ascontiguousarray(image[y0:y1, x0:x1])
                embedded = self.matcher.embed(crop, main_face_only=True)
                if embedded:
                    return embedded, False
        return self.matcher.embed(image), True

    def _identity_due(
        self, faces: int, box: FaceBox, grey: NDArray[np.uint8], scale: float
    ) -> bool:
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
        # Normalised correlation of 24×24 grey thumbnails of the face, at the checked face's
        # size around where the face is now (the detector's box sizes jump between pyramid
        # scales): the same face under camera shake stays above 0.95; another face there (a
        # face swapped in place, which tracking alone would follow) drops to ~0.2–0.4.
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        here = FaceBox(round(cx - checked_box.w / 2), round(cy - checked_box.h / 2),
                       checked_box.w, checked_box.h, box.confidence)
        look = _thumbnail(grey, here, scale)
        return float(np.mean(look * checked_look)) < self.config.same_look_correlation

    def _best_distance(self, faces: list[FaceEmbedding]) -> float | None:
        if not faces:
            return None
        return min(self.matcher.distance(self.reference, f.vector) for f in faces)

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
        """The report for the whole call; ``end_t`` is its end (default: last sample + period).

        Each sample stands for the time until the next one (or the end), but for no more than
        ``max_gap_s``: the rest of a longer stretch is unknown (``unsampled_s``; at the end it
        is marked ``sampling_lost`` here), and so is the time before the first sample.
        ``in_view_share`` is the share of the sampled time.
        Fail closed: ``low_presence`` only when the customer would be out of view too long
        even if they had been in view all the unknown time; ``not_sampled`` when the unknown
        time decides it either way."""
        period = 1.0 / self.config.sample_fps
        limit = self.config.max_gap_s
        if not self._samples:
            unsampled = 0.0
            if end_t is not None and end_t > self.start_t:
                unsampled = end_t - self.start_t
                if unsampled > limit:
                    self._marks.append(self._mark("sampling_lost", self.start_t, 0))
            return PresenceReport(
                passed=False,
                reason_code="no_samples",
                reason=REASONS["no_samples"],
                duration_s=round(max(0.0, (end_t or 0.0) - self.start_t), 3),
                in_view_share=0.0,
                min_in_view_share=self.config.min_in_view_share,
                samples=0,
                max_faces=0,
                marks=list(self._marks),
                engine=self.matcher.info,
                unsampled_s=round(unsampled, 3),
            )
        end = end_t if end_t is not None else self._samples[-1].t + period
        start = min(self.start_t, self._samples[0].t)
        duration = max(end - start, 1e-9)
        unsampled = self._samples[0].t - start
        in_view = 0.0
        for i, s in enumerate(self._samples):
            nxt = self._samples[i + 1].t if i + 1 < len(self._samples) else end
            span = max(0.0, nxt - s.t)
            if span > limit:
                unsampled += span - limit
                if i + 1 == len(self._samples):
                    self._marks.append(self._mark("sampling_lost", s.t + limit, s.faces))
            if s.in_view:
                in_view += min(span, limit)
        worst, best = in_view / duration, (in_view + unsampled) / duration
        kinds = {m.type for m in self._marks}
        code = None
        if "face_changed" in kinds:
            code = "face_changed"
        elif "second_face_appeared" in kinds:
            code = "second_face"
        elif best < self.config.min_in_view_share:
            code = "low_presence"
        elif worst < self.config.min_in_view_share:
            code = "not_sampled"
        return PresenceReport(
            passed=code is None,
            reason_code=code,
            reason=REASONS[code] if code else None,
            duration_s=round(duration, 3),
            in_view_share=round(in_view / max(duration - unsampled, 1e-9), 4),
            min_in_view_share=self.config.min_in_view_share,
            samples=len(self._samples),
            max_faces=max(s.faces for s in self._samples),
            marks=list(self._marks),
            engine=self.matcher.info,
            unsampled_s=round(unsampled, 3),
        )


def _tracking_copy(image: Frame) -> tuple[NDArray[np.uint8], float]:
    """The frame in grey, longest side ``TRACK_SIDE_PX``; and its scale from the frame."""
    h, w = image.shape[:2]
    scale = min(1.0, TRACK_SIDE_PX / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1.0 else image
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return np.ascontiguousarray(grey), scale


def _motion_copy(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Half the tracking copy, blurred: sensor noise and compression ringing smoothed away."""
    half = cv2.resize(grey, (max(1, grey.shape[1] // 2), max(1, grey.shape[0] // 2)),
                      interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(half, (5, 5), 0), np.uint8)


def _changed_pixels(
    ref: NDArray[np.uint8], now: NDArray[np.uint8], faces: list[_Track], scale: float
) -> int:
    """Pixels of the motion copy that changed by more than ``MOTION_LEVEL`` grey levels since
    the last detection, apart from the followed faces themselves. The picture as a whole may
    have shifted (camera shake, a hand-held phone): that shift (phase correlation) is taken out
    first. Around each face (its head: hair, ears, neck, ``HEAD_MARGIN`` of the box each side)
    a pixel counts only if it also changed once the head's own movement is taken out, so the
    customer moving the head does not count and a face next to it still does."""
    a, b = ref.astype(np.float32), now.astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    if abs(dx) > ref.shape[1] / 8 or abs(dy) > ref.shape[0] / 8:
        return ref.size  # a jump that large is a change of its own
    changed = _changed(a, b, dx, dy)
    s = scale / 2  # frame pixels to motion-copy pixels
    for track in faces:
        x, y, w, h = track.box
        sx, sy = track.shift
        head = _region(changed, x - HEAD_MARGIN * w, y - HEAD_MARGIN * h,
                       x + (1 + HEAD_MARGIN) * w, y + (1 + HEAD_MARGIN) * h, s)
        changed[head] &= _changed(a, b, sx * s, sy * s)[head]
        changed[_region(changed, x, y, x + w, y + h, s)] = False  # the face: talking, blinking
    edge = 2 + int(max(abs(dx), abs(dy)))  # the borders: what came into view with a shift
    changed[:edge], changed[-edge:] = False, False
    changed[:, :edge], changed[:, -edge:] = False, False
    return int(np.count_nonzero(changed))


def _changed(
    a: NDArray[np.float32], b: NDArray[np.float32], dx: float, dy: float
) -> NDArray[np.bool_]:
    """Where ``b`` differs from ``a`` moved by (dx, dy): outside the range of ``a``'s 3×3
    neighbourhood by more than ``MOTION_LEVEL``, so that high-contrast edges (a collar, a door
    frame) off by a pixel or less do not count, while a face on a plain wall does."""
    if abs(dx) > 0.25 or abs(dy) > 0.25:
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        a = np.asarray(cv2.warpAffine(a, m, (a.shape[1], a.shape[0]),
                                      borderMode=cv2.BORDER_REPLICATE), np.float32)
    kernel = np.ones((3, 3), np.uint8)
    out: NDArray[np.bool_] = (b > cv2.dilate(a, kernel) + MOTION_LEVEL) | (
        b < cv2.erode(a, kernel) - MOTION_LEVEL)
    return out


def _region(
    image: NDArray[np.bool_], x0: float, y0: float, x1: float, y1: float, s: float
) -> tuple[slice, slice]:
    h, w = image.shape[:2]
    return (slice(min(h, max(0, int(y0 * s))), min(h, max(0, int(y1 * s) + 1))),
            slice(min(w, max(0, int(x0 * s))), min(w, max(0, int(x1 * s) + 1))))


def _match(
    grey: NDArray[np.uint8], track: _Track, scale: float
) -> tuple[float, float, float, float] | None:
    """Where the track's template is now (searched within half a face around its last place),
    or None when the best match correlates less than ``TRACK_MIN_CORRELATION``."""
    x, y, w, h = track.box
    th, tw = track.template.shape[:2]
    sx0 = max(0, int((x - SEARCH_MARGIN * w) * scale))
    sy0 = max(0, int((y - SEARCH_MARGIN * h) * scale))
    sx1 = min(grey.shape[1], int((x + (1 + SEARCH_MARGIN) * w) * scale) + 1)
    sy1 = min(grey.shape[0], int((y + (1 + SEARCH_MARGIN) * h) * scale) + 1)
    window = grey[sy0:sy1, sx0:sx1]
    if window.shape[0] < th or window.shape[1] < tw or min(th, tw) < 6:
        return None
    scores = cv2.matchTemplate(window, track.template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    if best < TRACK_MIN_CORRELATION:
        return None
    return ((sx0 + bx) / scale, (sy0 + by) / scale, w, h)


def _cut(
    grey: NDArray[np.uint8], box: tuple[float, float, float, float], scale: float
) -> NDArray[np.uint8]:
    x, y, w, h = (v * scale for v in box)
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(grey.shape[1], round(x + w)), min(grey.shape[0], round(y + h))
    return np.ascontiguousarray(grey[y0:max(y0, y1), x0:max(x0, x1)])


def _box(box: tuple[float, float, float, float], confidence: float = 1.0) -> FaceBox:
    x, y, w, h = box
    return FaceBox(round(x), round(y), round(w), round(h), confidence)


def _scaled(b: FaceBox, factor: float) -> FaceBox:
    return FaceBox(round(b.x * factor), round(b.y * factor), round(b.w * factor),
                   round(b.h * factor), b.confidence)


def _thumbnail(grey: NDArray[np.uint8], box: FaceBox, scale: float) -> NDArray[np.float32]:
    """The face as a zero-mean, unit-variance 24×24 grey patch (``box`` in frame pixels,
    ``grey`` the tracking copy)."""
    h, w = grey.shape[:2]
    x0, y0 = max(round(box.x * scale), 0), max(round(box.y * scale), 0)
    x1, y1 = min(round((box.x + box.w) * scale), w), min(round((box.y + box.h) * scale), h)
    patch = grey[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    small = cv2.resize(patch, (24, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (small - small.mean()) / (small.std() + 1e-6)
