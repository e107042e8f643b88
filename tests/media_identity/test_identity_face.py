"""R-12: face comparison between the ID portrait and the live face, on real photos.

The labelled pairs are those of bench/identity.py (testing/labelled_faces.py): photos
from installed packages, phone-selfie framings under capture conditions, and ID portraits read
from synthetic cards; the threshold is the operating point chosen from its ROC (docs/identity.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date

import numpy as np
import pytest

from media.identity import IdentityConfig, IdentityService, idcard
from media.identity.config import FaceConfig
from media.identity.face.card import find_card_quad
from media.identity.face.dlib_chip import DlibChipMatcher
from media.identity.imaging import Frame, as_frame, encode_jpeg
from testing import identity_material as synth
from testing import labelled_faces as labelled


@pytest.mark.parametrize("live", ["obama2.jpg", "obama3.jpg"])
def test_r12_same_person_is_accepted_end_to_end_from_the_card(
    service: IdentityService,
    card_with_portrait: Callable[[str], tuple[synth.CardIdentity, Frame]],
    photo: Callable[[str], Frame],
    live: str,
) -> None:
    """Card printed with one photo, live face from a different photo of the same person."""
    _, card = card_with_portrait("obama.jpg")
    shot = synth.photograph(card, synth.Degradation(rotate_deg=6, noise_sigma=5, jpeg_quality=50))
    front = service.read_card_side(encode_jpeg(shot), "front")
    assert front.ok and front.portrait_jpeg is not None
    result = service.match_face(front.portrait_jpeg, photo(live))
    assert result.passed, result
    assert result.distance is not None and result.distance <= result.threshold
    assert result.engine.name == "dlib-chip" and result.metric == "euclidean"


@pytest.mark.parametrize("live", ["biden.jpg", "astronaut.png"])
def test_r12_different_person_is_rejected(
    service: IdentityService,
    card_with_portrait: Callable[[str], tuple[synth.CardIdentity, Frame]],
    photo: Callable[[str], Frame],
    live: str,
) -> None:
    _, card = card_with_portrait("obama.jpg")
    front = service.read_card_side(card, "front")
    assert front.portrait_jpeg is not None
    result = service.match_face(front.portrait_jpeg, photo(live))
    assert not result.passed and result.reason_code == "face_mismatch"
    assert result.distance is not None and result.distance > result.threshold
    assert result.reason is not None and "不一致" in result.reason


def test_r12_live_image_without_a_face_or_with_several_is_rejected(
    service: IdentityService,
    card_with_portrait: Callable[[str], tuple[synth.CardIdentity, Frame]],
    photo: Callable[[str], Frame],
    today: date,
) -> None:
    _, card = card_with_portrait("obama.jpg")
    portrait = service.read_card_side(card, "front").portrait_jpeg
    assert portrait is not None
    empty = synth.draw_back(synth.random_identity(random.Random(1), today=today))
    no_face = service.match_face(portrait, empty)
    assert no_face.reason_code == "no_face_probe" and not no_face.passed
    crowd = service.match_face(portrait, photo("t1.jpg"))
    assert crowd.reason_code == "multiple_faces_probe" and crowd.faces_in_probe == 6
    no_portrait = synth.draw_front(synth.random_identity(random.Random(2), today=today))
    blank_card = service.match_face(no_portrait, photo("obama2.jpg"))
    assert blank_card.reason_code == "no_face_reference"


# ---------------------------------------------------------------- the operating point


@pytest.fixture(scope="session")
def sources(service: IdentityService) -> dict[str, labelled.SourceFace]:
    faces = labelled.source_faces(
        lambda im: [(b.x, b.y, b.w, b.h) for b in service.matcher.detect(im)]
    )
    return {f.key: f for f in faces}


@pytest.fixture(scope="session")
def card_portrait(
    service: IdentityService, sources: dict[str, labelled.SourceFace], today: date
) -> Callable[[str, str], bytes]:
    cache: dict[tuple[str, str], bytes] = {}

    def get(key: str, condition: str) -> bytes:
        if (key, condition) not in cache:
            shot = labelled.card_photo(sources[key], condition, today)
            read = service.read_card_side(encode_jpeg(shot, 90), "front")
            assert read.ok and read.portrait_jpeg is not None, read.reason_code
            cache[key, condition] = read.portrait_jpeg
        return cache[key, condition]

    return get


@pytest.mark.parametrize("condition", labelled.SELFIE_CONDITIONS)
@pytest.mark.parametrize("live", ["obama2.jpg", "obama3.jpg"])
def test_r12_genuine_card_vs_other_photo_passes_at_the_operating_point(
    service: IdentityService,
    sources: dict[str, labelled.SourceFace],
    card_portrait: Callable[[str, str], bytes],
    live: str,
    condition: str,
) -> None:
    """A card printed from one photo, the live face from another photo of the same person under
    each capture condition of the labelled set (dim and noisy, tilted and blurred, small, ...)."""
    probe = labelled.selfie(sources[live], condition, seed=1)
    result = service.match_face(card_portrait("obama.jpg", "card_tilted"), probe)
    assert result.passed, result
    assert result.threshold == service.matcher.threshold == service.config.face.resolved_threshold()


@pytest.mark.parametrize(
    "other",
    ["biden.jpg", "astronaut.png", "Tom_Hanks_54745.png", *(f"t1.jpg#{k}" for k in range(6))],
)
def test_r12_different_people_are_refused_at_the_operating_point(
    service: IdentityService,
    sources: dict[str, labelled.SourceFace],
    card_portrait: Callable[[str, str], bytes],
    other: str,
) -> None:
    """Obama's card against every other person of the set, and their cards against his photos."""
    for condition in ("plain", "dim_noisy"):
        probe = labelled.selfie(sources[other], condition)
        result = service.match_face(card_portrait("obama.jpg", "card_tilted"), probe)
        assert not result.passed and result.reason_code == "face_mismatch", result
    for live in ("obama2.jpg", "obama3.jpg"):
        result = service.match_face(card_portrait(other, "card_tilted"), sources[live].photo)
        assert not result.passed and result.reason_code == "face_mismatch", result


def test_r12_card_photographed_at_a_steep_angle_matches_its_owner(
    service: IdentityService,
    sources: dict[str, labelled.SourceFace],
    today: date,
) -> None:
    """The card turned 48° away (and 12° back, 4° in the image): the portrait is straightened
    from the card's corners before the match; the owner's other photos match it, others not."""
    shot = labelled.card_photo(sources["obama.jpg"], "card_steep", today)
    quad = find_card_quad(shot)
    assert quad is not None
    left, right = np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])
    assert min(left, right) < 0.85 * max(left, right)  # the far edge really is foreshortened
    read = service.read_card_side(encode_jpeg(shot, 90), "front")
    assert read.ok and read.portrait_jpeg is not None and read.portrait_straightened
    portrait = as_frame(read.portrait_jpeg)
    assert portrait.shape[:2] == (360, 285)  # the canonical card's portrait area, 10 px/mm
    for name in ("obama2.jpg", "obama3.jpg"):
        result = service.match_face(read.portrait_jpeg, labelled.selfie(sources[name], "plain"))
        assert result.passed, result
    refused = service.match_face(read.portrait_jpeg, labelled.selfie(sources["biden.jpg"], "plain"))
    assert refused.reason_code == "face_mismatch"
    # The OCR's own crop of the same photo, unstraightened, is further from the owner.
    raw = idcard.read_card_side(service.ocr, shot, "front", service.config.card_quality)
    assert raw.portrait_jpeg is not None
    live = labelled.selfie(sources["obama2.jpg"], "plain")
    before = service.match_face(raw.portrait_jpeg, live)
    after = service.match_face(read.portrait_jpeg, live)
    assert after.distance is not None and (
        before.distance is None or after.distance < before.distance
    ), (before, after)


def test_r12_the_chip_is_dlibs_aligned_150px_chip(
    service: IdentityService, photo: Callable[[str], Frame]
) -> None:
    """5-point alignment as dlib does it: a face tilted 20° in the image gives the same chip
    geometry, hence nearly the same descriptor as the upright face."""
    matcher = service.matcher
    assert isinstance(matcher, DlibChipMatcher)
    img = photo("obama2.jpg")
    chip = matcher.chip(img)
    assert chip is not None and chip.shape == (150, 150, 3)
    tilted = cv2_rotate(img, 20)
    a, b = matcher.embed(img)[0].vector, matcher.embed(tilted)[0].vector
    assert a.shape == (128,) and matcher.distance(a, b) < 0.15


def cv2_rotate(img: Frame, degrees: float) -> Frame:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_r12_deepface_engine_stays_selectable(
    card_with_portrait: Callable[[str], tuple[synth.CardIdentity, Frame]],
    photo: Callable[[str], Frame],
    service: IdentityService,
) -> None:
    """``face.engine="deepface-dlib"`` still runs deepface's Dlib model, cosine, 0.075."""
    config = IdentityConfig(face=FaceConfig(engine="deepface-dlib"))
    deep = IdentityService(config)
    _, card = card_with_portrait("obama.jpg")
    front = service.read_card_side(card, "front")
    assert front.portrait_jpeg is not None
    same = deep.match_face(front.portrait_jpeg, photo("obama2.jpg"))
    other = deep.match_face(front.portrait_jpeg, photo("biden.jpg"))
    assert same.engine.name == "deepface-dlib" and same.metric == "cosine"
    assert same.threshold == 0.075 and same.passed and not other.passed
