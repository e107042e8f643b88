"""R-12 end to end through the API: the customer uploads a (synthetic) ID card whose portrait is
a real face and a clip performing the random challenges; the engines run as the job would; the
session is verified, the evidence kept encrypted, and a mismatch costs an attempt."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from api.keys import JOBS
from media.identity import IdentityService
from media.identity.imaging import Frame, encode_jpeg
from media.identity.results import Challenge, ChallengePlan
from models.sessions import IdentityCheck, IdentityUpload, SessionEvent
from testing import identity_material as synth
from tests.harness import HERE, Harness, Walk
from workflow.evidence import EvidenceStore
from workflow.identity import CardReads, read_card_early, run_identity_check

pytestmark = pytest.mark.one_database


def _mp4(frames: list[tuple[float, Frame]], path: Path) -> bytes:
    height, width = frames[0][1].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (width, height))
    for _, frame in frames:
        writer.write(frame)
    writer.release()
    return path.read_bytes()


async def _session_for(harness: Harness, name: str, id_number: str) -> Walk:
    r = await harness.as_("agent01", "POST", "/orders", json={
        "application_no": f"APP-ID-{id_number[-6:]}", "product_code": "YA-ZSS-001",
        "customer": {"name": name, "id_number": id_number}, "premium": "5000",
        "payment_years": 10, "sum_insured": "100000"})
    assert r.status == 201, r.body
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": r.body["id"], "location": HERE})
    assert r.status == 201, r.body
    return await harness.walk_to("consented", walk=Walk(r.body["id"]))


async def _upload(harness: Harness, walk: Walk, kind: str, data: bytes, ctype: str) -> Any:
    return await harness.request("POST", f"/customer/identity/uploads/{kind}",
                                 token=walk.customer_token, data=data,
                                 headers={"Content-Type": ctype})


async def _attempt(
    harness: Harness, walk: Walk, service: IdentityService, card: synth.CardIdentity,
    portrait: Frame, live: Frame, landmarks: Callable[[Frame], NDArray[np.float64]],
    tmp_path: Path,
) -> None:
    info = (await harness.request("GET", "/customer/identity", token=walk.customer_token)).body
    codes = [c["code"] for c in info["challenges"]]
    # The test profile draws plans from the blink alone (SHUANGLU_LIVENESS_CHALLENGES): this
    # face is a still photo made to perform, and a still cannot turn or open its mouth past
    # the flat-photo checks (tests/media_identity/test_liveness_attacks.py).
    assert codes == ["blink"] and all(c["prompt"].startswith("请") for c in info["challenges"])
    front = encode_jpeg(synth.draw_front(card, portrait), 92)
    back = encode_jpeg(synth.draw_back(card), 92)
    clip = _mp4(synth.performing_clip(live, landmarks(live), codes, seed=3), tmp_path / "c.mp4")
    for kind, data, ctype in [("id_front", front, "image/jpeg"), ("id_back", back, "image/jpeg"),
                              ("liveness", clip, "video/mp4")]:
        r = await _upload(harness, walk, kind, data, ctype)
        assert r.status == 201, r.body
    r = await harness.request("POST", "/customer/identity/submit", token=walk.customer_token)
    assert r.status == 202, r.body
    again = await harness.request("POST", "/customer/identity/submit", token=walk.customer_token)
    assert again.status == 409 and again.body["code"] == "identity_pending"
    # What the job does (the tests run jobs inline; the embedded server runs them itself).
    plan = ChallengePlan(challenges=codes, time_limit_s=info["time_limit_s"])
    await run_identity_check(harness.deps, service, UUID(walk.session_id), info["attempt"], plan)


async def test_a_real_face_on_a_valid_card_performing_the_challenges_is_verified_R12(
    harness: Harness, service: IdentityService, photo: Callable[[str], Frame],
    face_box: Callable[[str], tuple[int, int, int, int]],
    selfie: Callable[[str], Frame], landmarks: Callable[[Frame], NDArray[np.float64]],
    tmp_path: Path,
) -> None:
    card = synth.random_identity(random.Random("flow"), today=date.today())
    walk = await _session_for(harness, card.name, card.id_number)
    portrait = synth.crop_portrait(photo("obama.jpg"), face_box("obama.jpg"))
    await _attempt(harness, walk, service, card, portrait, selfie("obama.jpg"), landmarks,
                   tmp_path)
    assert await harness.state(walk) == "identity_verified"
    check = await IdentityCheck.get(session_id=walk.session_id)
    assert check.passed and check.face["score"] < check.face["details"]["threshold"]
    # The face match's score and threshold are on the session's timeline.
    event = await SessionEvent.get(session_id=walk.session_id, type="identity_verified")
    assert event.data["face"]["score"] == check.face["score"]
    assert event.data["face"]["threshold"] == check.face["details"]["threshold"]
    assert event.data["face"]["metric"] == "euclidean"
    assert check.ocr["engine"].startswith("paddleocr") and check.liveness["passed"]
    # Evidence is kept, encrypted at rest, and decrypts to the cleaned image.
    upload = await IdentityUpload.get(session_id=walk.session_id, kind="id_front")
    raw = (harness.files / upload.path).read_bytes()
    assert not raw.startswith(b"\xff\xd8")
    evidence = EvidenceStore(harness.deps.storage, harness.deps.cipher)
    assert (await evidence.get(upload.path)).startswith(b"\xff\xd8")
    portrait_path = f"sessions/{walk.session_id}/identity/attempt-1/portrait.jpg.enc"
    assert (await evidence.get(portrait_path)).startswith(b"\xff\xd8")


async def test_a_card_of_someone_else_costs_an_attempt_R12(
    harness: Harness, service: IdentityService, photo: Callable[[str], Frame],
    face_box: Callable[[str], tuple[int, int, int, int]],
    selfie: Callable[[str], Frame], landmarks: Callable[[Frame], NDArray[np.float64]],
    tmp_path: Path,
) -> None:
    card = synth.random_identity(random.Random("someone"), today=date.today())
    walk = await _session_for(harness, "王五", card.id_number)  # the order names another person
    portrait = synth.crop_portrait(photo("obama.jpg"), face_box("obama.jpg"))
    await _attempt(harness, walk, service, card, portrait, selfie("obama.jpg"), landmarks,
                   tmp_path)
    assert await harness.state(walk) == "consented"
    info = (await harness.request("GET", "/customer/identity", token=walk.customer_token)).body
    assert info["attempts_left"] == 2 and info["attempt"] == 2
    assert info["last_check"]["passed"] is False and info["last_check"]["reasons"]
    assert "姓名" in info["last_check"]["reasons"][0]


class _CountingEngines:
    """The engines, counting how often the card is read."""

    def __init__(self, service: IdentityService) -> None:
        self.service = service
        self.card_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)

    async def averify_card_images(self, *args: Any, **kwargs: Any) -> Any:
        self.card_reads += 1
        return await self.service.averify_card_images(*args, **kwargs)


@pytest.mark.timeout(180)
async def test_the_card_is_read_while_the_clip_is_recorded_and_the_check_takes_that_read_R12(
    harness: Harness, service: IdentityService, photo: Callable[[str], Frame],
    face_box: Callable[[str], tuple[int, int, int, int]],
    selfie: Callable[[str], Frame], landmarks: Callable[[Frame], NDArray[np.float64]],
    tmp_path: Path,
) -> None:
    """Issue 17 (time to first speech): once both sides are uploaded the job
    identity_card_read is queued and reads the card; a side taken again is read again; the
    check after 提交核验 uses the read of the photos it checks and does not read again."""
    import json

    from infra.jobs import task_name

    card = synth.random_identity(random.Random("early"), today=date.today())
    walk = await _session_for(harness, card.name, card.id_number)
    sid = UUID(walk.session_id)
    portrait = synth.crop_portrait(photo("obama.jpg"), face_box("obama.jpg"))
    front = encode_jpeg(synth.draw_front(card, portrait), 92)
    engines, reads = _CountingEngines(service), CardReads()
    broker = harness.app[JOBS].broker

    async def queued() -> list[Any]:
        return [json.loads(f[b"data"]) for _, f in await harness.redis.xrange(broker.queue_name)]

    assert (await _upload(harness, walk, "id_front", front, "image/jpeg")).status == 201
    assert not [j for j in await queued() if j["task_name"] == task_name("identity_card_read")]
    back = encode_jpeg(synth.draw_back(card), 92)
    assert (await _upload(harness, walk, "id_back", back, "image/jpeg")).status == 201
    jobs = [j for j in await queued() if j["task_name"] == task_name("identity_card_read")]
    assert [j["kwargs"] for j in jobs] == [{"session_id": str(sid), "attempt": 1}], jobs
    # What the job does (the tests run jobs inline).
    assert await read_card_early(harness.deps, engines, reads, sid, 1)
    assert engines.card_reads == 1
    # The customer takes the front again: that photo is read again.
    retaken = encode_jpeg(synth.draw_front(card, portrait), 88)
    assert (await _upload(harness, walk, "id_front", retaken, "image/jpeg")).status == 201
    assert await read_card_early(harness.deps, engines, reads, sid, 1)
    assert engines.card_reads == 2
    info = (await harness.request("GET", "/customer/identity", token=walk.customer_token)).body
    clip = _mp4(synth.performing_clip(selfie("obama.jpg"), landmarks(selfie("obama.jpg")),
                                      ["blink"], seed=3), tmp_path / "c.mp4")
    assert (await _upload(harness, walk, "liveness", clip, "video/mp4")).status == 201
    assert (await harness.request("POST", "/customer/identity/submit",
                                  token=walk.customer_token)).status == 202
    plan = ChallengePlan(challenges=[Challenge.BLINK], time_limit_s=info["time_limit_s"])
    await run_identity_check(harness.deps, engines, sid, 1, plan, reads)
    assert engines.card_reads == 2  # the check took the early read of the retaken photo
    assert await harness.state(walk) == "identity_verified"
    check = await IdentityCheck.get(session_id=sid)
    assert check.ocr["passed"] and check.ocr["details"]["recapture"], check.ocr
    # Once decided, an early read finds nothing to do.
    assert not await read_card_early(harness.deps, engines, reads, sid, 1)


async def test_uploads_are_checked_and_cleaned_R52(harness: Harness) -> None:
    card = synth.random_identity(random.Random("uploads"), today=date.today())
    walk = await _session_for(harness, card.name, card.id_number)
    r = await _upload(harness, walk, "id_front", b"\xff\xd8\xff not really a jpeg", "image/jpeg")
    assert r.status == 422 and r.body["code"] == "image_unreadable"
    r = await _upload(harness, walk, "id_front", b"GIF89a....", "image/gif")
    assert r.status == 422 and r.body["code"] == "unsupported_media_type"
    r = await _upload(harness, walk, "liveness", b"not a video at all", "video/mp4")
    assert r.status == 422 and r.body["code"] == "video_unreadable"
    r = await _upload(harness, walk, "liveness", b"\x00" * (26 * 1024 * 1024), "video/mp4")
    assert r.status == 413
    r = await _upload(harness, walk, "passport", b"x", "image/jpeg")
    assert r.status == 404
    # A photo with EXIF (e.g. GPS) is stored without it.
    import io

    from PIL import Image

    # (A card's emblem side: a photo without a card is refused on upload, issue 15.)
    image = Image.fromarray(cv2.cvtColor(synth.draw_back(card), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    r = await _upload(harness, walk, "id_back", buffer.getvalue(), "image/jpeg")
    assert r.status == 201
    upload = await IdentityUpload.get(session_id=walk.session_id, kind="id_back")
    stored = await EvidenceStore(harness.deps.storage, harness.deps.cipher).get(upload.path)
    assert b"SecretCam" not in stored and b"Exif" not in stored
    r = await harness.request("POST", "/customer/identity/submit", token=walk.customer_token)
    assert r.status == 409 and r.body["code"] == "identity_uploads_missing"
