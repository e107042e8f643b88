"""R-12 (issue 15): a card is read at any orientation, phone photos are turned upright by their
EXIF orientation, a photo the engines could not judge is refused on upload with what to do and
costs no attempt, and a photo of a card on a screen is flagged for QA."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from datetime import date

import cv2
import numpy as np
import pytest
from PIL import Image

from media.identity import IdentityService
from media.identity.idcard import UPLOAD_REASONS, check_card_photo
from media.identity.imaging import Frame, encode_jpeg, rotate_quarter
from models.sessions import IdentityUpload
from testing import identity_material as synth
from tests.harness import Harness
from workflow.evidence import clean_image

FRONT_FIELDS = ("name", "sex", "ethnicity", "birth_date", "address", "id_number")


def _card(seed: int, today: date) -> synth.CardIdentity:
    return synth.random_identity(random.Random(seed), today=today)


@pytest.fixture(scope="module")
def portrait(photo: Callable[[str], Frame],
             face_box: Callable[[str], tuple[int, int, int, int]]) -> Frame:
    return synth.crop_portrait(photo("obama.jpg"), face_box("obama.jpg"))


def _assert_fields(service: IdentityService, card: synth.CardIdentity, front: bytes,
                   back: bytes) -> tuple[int, int]:
    f_read = service.read_card_side(front, "front")
    b_read = service.read_card_side(back, "back")
    assert f_read.ok and b_read.ok, (f_read.reason_code, b_read.reason_code, f_read.lines)
    assert f_read.front is not None and b_read.back is not None
    assert {k: getattr(f_read.front, k) for k in FRONT_FIELDS} == {
        k: getattr(card, k) for k in FRONT_FIELDS}
    b = b_read.back
    assert (b.issuing_authority, b.valid_from, b.valid_until) == (
        card.issuing_authority, card.valid_from, card.valid_until)
    assert f_read.portrait_jpeg is not None
    return f_read.rotation, b_read.rotation


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_r12_every_field_is_read_at_every_quarter_turn(
    service: IdentityService, today: date, turn: int
) -> None:
    """``turn`` is counter-clockwise: 270 is the card turned 90° clockwise, the orientation
    that used to come back "unreadable" or without its address."""
    card = _card(1500 + turn, today)
    how = synth.Degradation(rotate_deg=4, noise_sigma=3, jpeg_quality=80, seed=turn)
    front = rotate_quarter(synth.photograph(synth.draw_front(card), how), turn)
    back = rotate_quarter(synth.photograph(synth.draw_back(card), how), turn)
    rotations = _assert_fields(service, card, encode_jpeg(front, 92), encode_jpeg(back, 92))
    assert rotations == ((360 - turn) % 360,) * 2


def _with_exif_orientation(upright: Frame, orientation: int) -> bytes:
    """A phone's JPEG: the sensor's pixels and the EXIF tag saying how to turn them upright
    (6: turn 90° clockwise to view, 8: turn 90° counter-clockwise)."""
    stored = rotate_quarter(upright, 90 if orientation == 6 else 270)
    rgb = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=92, exif=exif)
    return out.getvalue()


@pytest.mark.parametrize("orientation", [6, 8])
def test_r12_exif_orientation_is_applied_before_the_metadata_is_dropped_R52(
    service: IdentityService, today: date, orientation: int
) -> None:
    card = _card(1600 + orientation, today)
    how = synth.Degradation(seed=orientation)
    front = synth.photograph(synth.draw_front(card), how)
    back = synth.photograph(synth.draw_back(card), how)
    cleaned = [clean_image(_with_exif_orientation(side, orientation)) for side in (front, back)]
    for clean, side in zip(cleaned, (front, back), strict=True):
        assert b"Exif" not in clean.data
        with Image.open(io.BytesIO(clean.data)) as stored:
            assert stored.size == (side.shape[1], side.shape[0])  # upright, landscape
    # Stored upright: the OCR reads it without turning it.
    assert _assert_fields(service, card, cleaned[0].data, cleaned[1].data) == (0, 0)


def _screen_photo(card_photo: Frame, seed: int, pitch: int = 3, angle: float = 3.0,
                  shrink: float = 2.3) -> Frame:
    """The card shown on an RGB-stripe screen (each pixel three coloured columns, dark gaps
    between pixel rows) and photographed slightly turned at a lower resolution: the pixel
    grid aliases into moiré, as in a phone photo of a screen."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(card_photo, None, fx=pitch, fy=pitch,
                     interpolation=cv2.INTER_NEAREST).astype(np.float32)
    h, w = big.shape[:2]
    grid = np.full((h, w, 3), 0.15, np.float32)
    for column, channel in enumerate((2, 1, 0)):  # R, G, B columns (BGR channels)
        grid[:, column::3, channel] = 1.0
    grid[2::3] *= 0.35
    shown = big * grid * 1.6
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    turned = cv2.warpAffine(shown, turn, (w, h), borderMode=cv2.BORDER_REFLECT)
    shot = cv2.resize(turned, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_LINEAR)
    shot = cv2.GaussianBlur(shot, (0, 0), 0.5) + rng.normal(0, 3, shot.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(shot, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 88])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert ok and decoded is not None
    return decoded


SCREENS = [(3, 3.0, 2.3), (3, 0.5, 1.7), (4, 7.0, 3.1), (3, -2.0, 1.3)]


def test_r12_a_card_photographed_off_a_screen_is_flagged_not_refused(
    today: date, portrait: Frame
) -> None:
    card = _card(1700, today)
    photo = synth.photograph(synth.draw_front(card, portrait), synth.Degradation(seed=1))
    for n, (pitch, angle, shrink) in enumerate(SCREENS):
        check = check_card_photo(_screen_photo(photo, n, pitch, angle, shrink), "front")
        assert check.ok, (check.code, check.measures)  # a warning for QA, never a refusal
        assert check.warnings == ("screen_recapture",), check.measures


GENUINE = {
    "clean": synth.Degradation(),
    "tilt_9": synth.Degradation(rotate_deg=9),
    "tilt_-13_noise": synth.Degradation(rotate_deg=-13, noise_sigma=8),
    "jpeg_q25": synth.Degradation(jpeg_quality=25),
    "small_noisy_jpeg": synth.Degradation(rotate_deg=4, noise_sigma=6, jpeg_quality=35,
                                          scale=0.7),
    "blur_1px": synth.Degradation(blur_sigma=1.0),
    "on_its_side": synth.Degradation(rotate_deg=-90),
}


@pytest.mark.parametrize("how", list(GENUINE))
def test_r12_genuine_card_photos_pass_the_upload_checks_without_a_warning(
    today: date, portrait: Frame, how: str
) -> None:
    card = _card(1800 + list(GENUINE).index(how), today)
    degradation = synth.Degradation(**{**GENUINE[how].__dict__, "seed": 7})
    for side, drawn in (("front", synth.draw_front(card, portrait)),
                        ("back", synth.draw_back(card))):
        check = check_card_photo(encode_jpeg(synth.photograph(drawn, degradation), 92),
                                 side)  # type: ignore[arg-type]
        assert check.ok and not check.warnings, (side, check.code, check.measures)


def _gradient(width: int, height: int) -> Frame:
    row = np.linspace(0, 255, width, dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.tile(row, (height, 1))[:, :, None], 3, axis=2))


def _glare(photo: Frame) -> Frame:
    """A burnt-out reflection across the middle rows of the card."""
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    spot = np.exp(-(((xx - 0.4 * w) / (0.16 * w)) ** 2 + ((yy - 0.45 * h) / (0.12 * h)) ** 2))
    lit = photo.astype(np.float32) + 400 * spot[:, :, None]
    return np.clip(lit, 0, 255).astype(np.uint8)


def test_r12_photos_the_engines_could_not_judge_are_refused_with_what_to_do(
    today: date, portrait: Frame
) -> None:
    card = _card(1900, today)
    front = synth.draw_front(card, portrait)
    cases = {
        "blurred": synth.photograph(front, synth.Degradation(blur_sigma=2.0)),
        "low_resolution": synth.photograph(front, synth.Degradation(scale=0.3)),  # ~318×223
        "no_card": _gradient(1200, 900),
        "glare": _glare(synth.photograph(front, synth.Degradation())),
        "no_face": synth.photograph(synth.draw_front(card), synth.Degradation()),  # no portrait
    }
    for code, image in cases.items():
        check = check_card_photo(encode_jpeg(image, 92), "front")
        assert check.code == code, (code, check.code, check.measures)
        assert check.message == UPLOAD_REASONS[code]
    assert "清晰" in UPLOAD_REASONS["blurred"] and "重新拍摄" in UPLOAD_REASONS["blurred"]


@pytest.mark.one_database
async def test_r12_a_refused_upload_costs_no_attempt(
    harness: Harness, today: date, portrait: Frame
) -> None:
    walk = await harness.walk_to("consented")
    card = _card(2000, today)
    front = synth.draw_front(card, portrait)
    refused = {
        "card_photo_blurred": synth.photograph(front, synth.Degradation(blur_sigma=2.5)),
        "card_photo_low_resolution": synth.photograph(front, synth.Degradation(scale=0.3)),
        "card_photo_no_card": _gradient(1200, 900),
    }
    for code, image in refused.items():
        r = await harness.request("POST", "/customer/identity/uploads/id_front",
                                  token=walk.customer_token, data=encode_jpeg(image, 92),
                                  headers={"Content-Type": "image/jpeg"})
        assert r.status == 422 and r.body["code"] == code, r.body
        assert r.body["detail"] == UPLOAD_REASONS[code.removeprefix("card_photo_")]
    info = (await harness.request("GET", "/customer/identity", token=walk.customer_token)).body
    assert (info["attempt"], info["attempts_left"], info["uploads"]) == (1, 3, [])
    assert await IdentityUpload.filter(session_id=walk.session_id).count() == 0
    # The same card photographed properly is taken, its checks on the timeline.
    good = synth.photograph(front, synth.Degradation(rotate_deg=5, seed=2))
    r = await harness.request("POST", "/customer/identity/uploads/id_front",
                              token=walk.customer_token, data=encode_jpeg(good, 92),
                              headers={"Content-Type": "image/jpeg"})
    assert r.status == 201, r.body
    info = (await harness.request("GET", "/customer/identity", token=walk.customer_token)).body
    assert (info["attempt"], info["attempts_left"], info["uploads"]) == (1, 3, ["id_front"])
