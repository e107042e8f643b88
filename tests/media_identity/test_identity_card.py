"""R-12: ID-card OCR and validation on synthetic cards, clean and photographed badly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import date

import cv2
import pytest

from media.identity import ExpectedHolder, IdentityConfig, IdentityService
from media.identity.config import OcrConfig
from media.identity.imaging import Frame, encode_jpeg
from testing import identity_material as synth

DEGRADATIONS = {
    "clean": synth.Degradation(),
    "tilted_8deg": synth.Degradation(rotate_deg=8, seed=1),
    "tilted_-12deg_noisy": synth.Degradation(rotate_deg=-12, noise_sigma=8, seed=2),
    "jpeg_q25": synth.Degradation(jpeg_quality=25, seed=3),
    "small_noisy_jpeg": synth.Degradation(rotate_deg=4, noise_sigma=6, jpeg_quality=35, scale=0.7),
    "upside_down": synth.Degradation(rotate_deg=180, seed=4),
    "on_its_side": synth.Degradation(rotate_deg=90, seed=5),
}


def _card(seed: int, today: date, **kw: bool) -> synth.CardIdentity:
    return synth.random_identity(random.Random(seed), today=today, **kw)


def _holder(card: synth.CardIdentity) -> ExpectedHolder:
    return ExpectedHolder(name=card.name, id_number=card.id_number)


@pytest.mark.parametrize("how", list(DEGRADATIONS), ids=list(DEGRADATIONS))
def test_r12_card_fields_read_exactly_on_clean_and_degraded_photos(
    service: IdentityService, today: date, how: str
) -> None:
    card = _card(sorted(DEGRADATIONS).index(how) + 100, today)
    front = synth.photograph(synth.draw_front(card), DEGRADATIONS[how])
    back = synth.photograph(synth.draw_back(card), DEGRADATIONS[how])
    result, front_read, back_read = service.verify_card_images(
        encode_jpeg(front, 95), encode_jpeg(back, 95), _holder(card), today
    )
    assert front_read.ok and back_read is not None and back_read.ok, (front_read, back_read)
    f, b = result.front, result.back
    assert f is not None and b is not None
    assert (f.name, f.sex, f.ethnicity, f.birth_date, f.address, f.id_number) == (
        card.name,
        card.sex,
        card.ethnicity,
        card.birth_date,
        card.address,
        card.id_number,
    )
    assert b.issuing_authority == card.issuing_authority
    assert b.valid_from == card.valid_from
    assert b.valid_until == card.valid_until and b.long_term == (card.valid_until is None)
    assert result.passed, result.checks
    assert result.age == today.year - card.birth_date.year - (
        (today.month, today.day) < (card.birth_date.month, card.birth_date.day)
    )
    assert front_read.portrait_jpeg is not None and front_read.portrait_box is not None
    assert result.engine.name == "paddleocr" and "PP-OCRv6" in result.engine.version


def test_r12_wrong_check_digit_is_rejected(service: IdentityService, today: date) -> None:
    card = _card(7, today, valid_check_digit=False)
    result, *_ = service.verify_card_images(
        synth.draw_front(card), synth.draw_back(card), _holder(card), today
    )
    assert result.front is not None and result.front.id_number == card.id_number
    assert not result.passed
    assert result.reason_code == "id_number_checksum"
    assert result.reason is not None and "校验" in result.reason


def test_r12_expired_card_is_rejected(service: IdentityService, today: date) -> None:
    card = _card(8, today, expired=True)
    assert card.valid_until is not None and card.valid_until < today
    result, *_ = service.verify_card_images(
        synth.draw_front(card), synth.draw_back(card), _holder(card), today
    )
    assert not result.passed
    assert result.reason_code == "card_not_expired"
    assert result.reason is not None and "有效期" in result.reason


def test_r12_name_or_number_not_matching_the_order_is_rejected(
    service: IdentityService, today: date
) -> None:
    card = _card(9, today)
    front = service.read_card_side(synth.draw_front(card), "front")
    back = service.read_card_side(synth.draw_back(card), "back")
    other = _card(10, today)
    by_name = service.verify_card(
        front, back, ExpectedHolder(name=other.name, id_number=card.id_number), today
    )
    assert not by_name.passed and by_name.reason_code == "name_matches_order"
    assert by_name.reason is not None and "姓名" in by_name.reason
    by_number = service.verify_card(
        front, back, ExpectedHolder(name=card.name, id_number=other.id_number), today
    )
    assert not by_number.passed and by_number.reason_code == "id_number_matches_order"
    # The customer typing a lower-case x in the order still matches.
    same = service.verify_card(
        front, back, ExpectedHolder(name=card.name, id_number=card.id_number.lower()), today
    )
    assert same.passed


def test_r12_missing_back_is_not_accepted(service: IdentityService, today: date) -> None:
    card = _card(11, today)
    result, *_ = service.verify_card_images(synth.draw_front(card), None, _holder(card), today)
    assert not result.passed and result.reason_code == "back_missing"


@pytest.mark.parametrize("sigma", [1.8, 3.0])
def test_r12_blurred_photo_is_rejected_with_a_reason(
    service: IdentityService, today: date, sigma: float
) -> None:
    card = _card(12, today)
    blurred = synth.photograph(synth.draw_front(card), synth.Degradation(blur_sigma=sigma))
    read = service.read_card_side(blurred, "front")
    assert not read.ok and read.reason_code == "blurred"
    assert read.reason is not None and "模糊" in read.reason


@pytest.mark.parametrize("cut", [0.1, 0.3])
def test_r12_cropped_photo_is_rejected_with_a_reason(
    service: IdentityService, today: date, cut: float
) -> None:
    card = _card(13, today)
    cropped = synth.photograph(synth.draw_front(card), synth.Degradation(crop_right=cut))
    read = service.read_card_side(cropped, "front")
    assert not read.ok and read.reason_code == "cropped"
    assert read.reason is not None and "完整" in read.reason


def test_r12_non_id_images_and_wrong_sides_are_rejected(
    service: IdentityService, today: date, photo: Callable[[str], Frame]
) -> None:
    face = service.read_card_side(photo("obama.jpg"), "front")
    assert not face.ok and face.reason_code == "not_id_card_front"
    assert face.reason is not None and "人像面" in face.reason
    card = _card(14, today)
    back_as_front = service.read_card_side(synth.draw_back(card), "front")
    assert back_as_front.reason_code == "wrong_side_front"
    front_as_back = service.read_card_side(synth.draw_front(card), "back")
    assert front_as_back.reason_code == "wrong_side_back"
    assert service.read_card_side(b"not an image", "front").reason_code == "not_an_image"
    tiny = cv2.resize(synth.draw_front(card), (300, 190))
    assert service.read_card_side(tiny, "front").reason_code == "low_resolution"


def test_r12_rapidocr_engine_reads_the_same_card(today: date) -> None:
    rapid = IdentityService(IdentityConfig(ocr=OcrConfig(engine="rapidocr")))
    card = _card(15, today)
    photo = synth.photograph(synth.draw_front(card), synth.Degradation(rotate_deg=5, seed=9))
    read = rapid.read_card_side(photo, "front")
    assert read.ok and read.front is not None
    assert read.front.id_number == card.id_number and read.front.name == card.name
    assert read.engine.name == "rapidocr"


def test_r12_async_twin_returns_the_same_result(service: IdentityService, today: date) -> None:
    card = _card(16, today)
    read = asyncio.run(service.aread_card_side(synth.draw_back(card), "back"))
    assert read.ok and read.back is not None
    assert read.back.issuing_authority == card.issuing_authority
    assert read.model_dump(mode="json")["kind"] == "id_card_side"  # storable as JSON
