"""A labelled face-pair set from the photos that ship in public packages (R-12 calibration).

Sources (all in the archives `bin/setup dev` caches through ``testing.face_photos``; nothing
is downloaded here):

- face_recognition 1.3.0 sdist: obama.jpg, obama2.jpg, obama3.jpg (three photos of one person)
  and biden.jpg. Not used: 32bit.png (obama2.jpg again), obama_partial_face*.jpg (crops of
  obama.jpg);
- insightface 2.1 wheel: t1.jpg (six people) and Tom_Hanks_54745.png (a 112 px face crop);
  mask_*.jpg hold no face;
- scikit-image 0.26.0 wheel: astronaut.png (Eileen Collins).

That is 11 people, one of them with three independent photos. Each source face is turned into
captures (a phone selfie framing under five conditions) and into ID-card portraits (a synthetic
card printed with the face, photographed tilted, and photographed at a steep angle, then read
by the OCR as the workflow does). Genuine pairs are two captures of one person; "cross-photo"
genuine pairs come from two different photos (obama only), the rest from one photo under
different conditions. Impostor pairs are captures of two people.
"""

from __future__ import annotations

import itertools
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date

import cv2
import numpy as np

from media.identity.imaging import Frame
from testing import identity_material as synth
from testing.face_photos import IDENTITIES, SampleUnavailableError, default_testdata_dir
from testing.face_photos import load_sample as _load_sample

# Photos of the labelled set beyond the ones testing.face_photos names: read from the same
# cached archives (a missing archive is an error that says to run the setup).
_EXTRA_MEMBERS = {
    "Tom_Hanks_54745.png": ("insightface-2.1", "insightface/data/images/Tom_Hanks_54745.png"),
}
PEOPLE = {**IDENTITIES, "Tom_Hanks_54745.png": "hanks"}
SELFIE_CONDITIONS = ("plain", "dim_noisy", "tilted_blurred", "small_jpeg", "warm_sidelight")
CARD_CONDITIONS = ("card_tilted", "card_steep")


def load_photo(name: str) -> Frame:
    if name not in _EXTRA_MEMBERS:
        return _load_sample(name)
    prefix, member = _EXTRA_MEMBERS[name]
    found = sorted(default_testdata_dir().glob(f"{prefix}*.whl"))
    if not found:
        raise SampleUnavailableError(
            f"{prefix} is not in {default_testdata_dir()}: run `bin/setup dev` (its test-data step)"
        )
    with zipfile.ZipFile(found[0]) as zf:
        data = np.frombuffer(zf.read(member), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise SampleUnavailableError(f"cannot decode {name}")
    return img


@dataclass(frozen=True)
class SourceFace:
    key: str  # photo name, "#k" for the k-th face of a group photo
    person: str
    photo: Frame
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Capture:
    source: str
    person: str
    condition: str
    image: Frame  # BGR; for card conditions the portrait the OCR (and straightening) gave

    @property
    def is_card(self) -> bool:
        return self.condition.startswith("card")

    @property
    def key(self) -> str:
        return f"{self.source}:{self.condition}"


@dataclass(frozen=True)
class Pair:
    a: Capture
    b: Capture

    @property
    def genuine(self) -> bool:
        return self.a.person == self.b.person

    @property
    def cross_photo(self) -> bool:
        return self.genuine and self.a.source.split("#")[0] != self.b.source.split("#")[0]

    @property
    def card_vs_photo(self) -> bool:
        return self.a.is_card != self.b.is_card


def source_faces(detect: Callable[[Frame], list[tuple[int, int, int, int]]]) -> list[SourceFace]:
    """Every person's face in the package photos; ``detect`` gives boxes, largest first."""
    out = []
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png",
                 "Tom_Hanks_54745.png"):
        photo = load_photo(name)
        out.append(SourceFace(name, PEOPLE[name], photo, detect(photo)[0]))
    group = load_photo("t1.jpg")
    # Left to right, so the keys do not depend on the detector's order.
    for k, box in enumerate(sorted(detect(group), key=lambda b: b[0])):
        out.append(SourceFace(f"t1.jpg#{k}", f"t1-{k}", group, box))
    return out


# ---------------------------------------------------------------- capture conditions


def _gamma(img: Frame, gamma: float) -> Frame:
    lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def _jpeg(img: Frame, quality: int) -> Frame:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert out is not None
    return out


def _noise(img: Frame, sigma: float, rng: np.random.Generator) -> Frame:
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def selfie(face: SourceFace, condition: str, seed: int = 0) -> Frame:
    """A phone front-camera framing (480×640) of the face under one capture condition."""
    rng = np.random.default_rng(seed)
    img = synth.selfie_frame(face.photo, face.box)
    if condition == "plain":
        return img
    if condition == "dim_noisy":
        return _jpeg(_noise(_gamma(img, 1.8), 6, rng), 60)
    if condition == "tilted_blurred":
        m = cv2.getRotationMatrix2D((240, 300), 15, 1.0)
        img = cv2.warpAffine(img, m, (480, 640), borderMode=cv2.BORDER_REPLICATE)
        return cv2.GaussianBlur(img, (0, 0), 1.2)
    if condition == "small_jpeg":
        return _jpeg(cv2.resize(img, (240, 320), interpolation=cv2.INTER_AREA), 45)
    if condition == "warm_sidelight":
        ramp = np.linspace(0.55, 1.15, 480, dtype=np.float32)[None, :, None]
        cast = np.array([0.85, 1.0, 1.12], np.float32)  # BGR: less blue, more red
        return np.clip(img.astype(np.float32) * ramp * cast, 0, 255).astype(np.uint8)
    raise ValueError(condition)


def photograph_at_angle(
    card: Frame,
    yaw_deg: float,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    seed: int = 0,
    noise_sigma: float = 4.0,
    jpeg_quality: int = 85,
) -> Frame:
    """A phone photo of the card lying on a table, the camera turned ``yaw_deg`` about the card's
    vertical axis (and ``pitch_deg`` about its horizontal one): a pinhole projection, so the far
    side shrinks as it does in a real photo."""
    rng = np.random.default_rng(seed)
    h, w = card.shape[:2]
    m = int(0.25 * w)
    table = np.empty((h + 2 * m, w + 2 * m, 3), np.uint8)
    table[:] = (60, 74, 92)
    table = cv2.GaussianBlur(_noise(table, 8, rng), (7, 7), 0)
    table[m : m + h, m : m + w] = card
    th, tw = table.shape[:2]
    yaw, pitch, roll = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array(
        [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]
    )
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    rot = rz @ rx @ ry
    f = 1.1 * tw  # a phone's ~70° field of view across the table
    corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float64) - [tw / 2, th / 2]
    pts3 = np.hstack([corners, np.zeros((4, 1))]) @ rot.T + [0, 0, f]
    proj = f * pts3[:, :2] / pts3[:, 2:3]
    proj -= proj.min(axis=0)
    out_w, out_h = (int(v) + 1 for v in proj.max(axis=0))
    src = (corners + np.array([tw / 2, th / 2])).astype(np.float32)
    hom = cv2.getPerspectiveTransform(src, proj.astype(np.float32))
    photo = cv2.warpPerspective(table, hom, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return _jpeg(_noise(photo, noise_sigma, rng), jpeg_quality)


def card_photo(face: SourceFace, condition: str, today: date) -> Frame:
    """A synthetic card printed with the face, photographed under one card condition."""
    identity = synth.random_identity(random.Random(face.key), today=today)
    card = synth.draw_front(identity, synth.crop_portrait(face.photo, face.box))
    if condition == "card_tilted":
        how = synth.Degradation(rotate_deg=6, noise_sigma=5, jpeg_quality=50, seed=len(face.key))
        return synth.photograph(card, how)
    if condition == "card_steep":
        return photograph_at_angle(card, yaw_deg=48, pitch_deg=12, roll_deg=4, seed=len(face.key))
    raise ValueError(condition)


def captures(
    faces: list[SourceFace],
    portrait_of: Callable[[Frame], Frame | None],
    today: date,
    card_conditions: tuple[str, ...] = CARD_CONDITIONS,
) -> Iterator[Capture]:
    """Every capture of every face; ``portrait_of`` reads a card photo into its portrait (the
    workflow's path), None when the card was not read (that card is left out, and counted)."""
    for i, face in enumerate(faces):
        for condition in SELFIE_CONDITIONS:
            yield Capture(face.key, face.person, condition, selfie(face, condition, seed=i))
        for condition in card_conditions:
            portrait = portrait_of(card_photo(face, condition, today))
            if portrait is not None:
                yield Capture(face.key, face.person, condition, portrait)


def pairs(samples: list[Capture]) -> list[Pair]:
    """Every unordered pair of captures, except a card with the selfies of its own photo under
    the plain condition (the card was printed from that framing: too easy to count)."""
    out = []
    for a, b in itertools.combinations(samples, 2):
        if a.source == b.source and a.is_card != b.is_card and "plain" in (a.condition,
                                                                              b.condition):
            continue
        out.append(Pair(a, b))
    return out
