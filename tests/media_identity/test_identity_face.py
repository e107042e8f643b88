"""R-12: face comparison between the ID portrait and the live face, on real photos."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date

import pytest

from media.identity import IdentityService
from media.identity import synthetic as synth
from media.identity.imaging import Frame, encode_jpeg


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
    assert result.engine.name == "deepface-dlib"


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
