"""Recording identity results (R-12): OCR, face match and liveness, with an attempt limit.

The engines (media/identity) produce the results; this module only decides what they mean for
the session: all three passed → identity_verified; otherwise another attempt, until the limit
→ identity_failed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol
from uuid import UUID

from models.sales import Order
from models.sessions import IdentityCheck, IdentityUpload, RecordingSession, SessionState
from security.audit import Actor
from security.cpu import run_cpu
from workflow.core import WorkflowDeps, locked, require_state
from workflow.errors import Conflict, InvalidInput, NotFound
from workflow.event_types import EventType
from workflow.evidence import (
    IMAGE_TYPES,
    VIDEO_TYPES,
    CleanUpload,
    EvidenceStore,
    check_image_header,
    check_video,
    clean_image,
    clean_video,
)
from workflow.orders import decrypt_customer
from workflow.principals import CustomerPrincipal


@dataclass(frozen=True)
class ComponentResult:
    passed: bool
    engine: str = ""
    score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "engine": self.engine, "score": self.score,
                "details": self.details, "reason": self.reason}


@dataclass(frozen=True)
class AttemptOutcome:
    check: IdentityCheck
    state: SessionState
    attempts_left: int


async def record_attempt(
    deps: WorkflowDeps, actor: Actor, session_id: UUID,
    ocr: ComponentResult, face: ComponentResult, liveness: ComponentResult,
) -> AttemptOutcome:
    limit = deps.settings.identity_max_attempts
    async with locked(deps, session_id, "identity") as unit:
        session = unit.session
        session.identity_attempts += 1
        passed = ocr.passed and face.passed and liveness.passed
        reasons = [r.reason for r in (ocr, face, liveness) if not r.passed and r.reason]
        check = await IdentityCheck.create(
            session_id=session.id, attempt=session.identity_attempts, passed=passed,
            ocr=ocr.as_dict(), face=face.as_dict(), liveness=liveness.as_dict(),
            reasons=reasons, at=deps.clock(), using_db=unit.conn,
        )
        data = {"attempt": session.identity_attempts, "passed": passed, "reasons": reasons,
                # The face match's score and the threshold it was judged by.
                "face": {"passed": face.passed, "score": face.score,
                         "threshold": face.details.get("threshold"),
                         "metric": face.details.get("metric"), "engine": face.engine}}
        if passed:
            await unit.move(actor, SessionState.IDENTITY_VERIFIED,
                            EventType.IDENTITY_VERIFIED, data)
        elif session.identity_attempts >= limit:
            session.ended_at = deps.clock()
            session.end_reason = "identity verification failed"
            await unit.move(actor, SessionState.IDENTITY_FAILED, EventType.IDENTITY_FAILED, data)
        else:
            await unit.move(actor, SessionState.CONSENTED, EventType.IDENTITY_ATTEMPT_FAILED, data)
        state = session.state
        left = max(limit - session.identity_attempts, 0) if not passed else 0
    return AttemptOutcome(check, state, left)


# ---------------------------------------------------------------- uploads and the engine job

UPLOAD_KINDS = ("id_front", "id_back", "liveness")
CARD_SIDES = ("id_front", "id_back")


class IdentityEngines(Protocol):
    """What the job needs of media.identity.IdentityService (kept behind this interface so the
    workflow never imports the engines)."""

    def new_challenge_plan(self) -> Any: ...

    def warm_up(self) -> None:
        """Loads every engine now (blocking), instead of in the first job."""
        ...

    async def averify_card_images(
        self, front: bytes, back: bytes | None, expected: Any, today: date | None = None
    ) -> tuple[Any, Any, Any]: ...

    async def amatch_face(self, reference: bytes | Any, probe: bytes | Any) -> Any: ...

    async def acheck_liveness(self, frames: Any, plan: Any) -> Any: ...


async def check_upload_allowed(principal: CustomerPrincipal) -> RecordingSession:
    """The session takes identity uploads now (409 otherwise): checked before the body is
    read or anything decoded, so an upload in the wrong state costs nothing."""
    session = await RecordingSession.get_or_none(id=principal.session_id)
    if session is None:
        raise NotFound("session_not_found", "找不到该录制会话")
    require_state(session, "identity")
    return session


async def save_upload(
    deps: WorkflowDeps, principal: CustomerPrincipal, kind: str, content_type: str, data: bytes
) -> IdentityUpload:
    """One side of the ID card or the liveness clip of the coming attempt. Order: the state,
    then the cheap checks (size, type, the image header's pixel count), then the decoding
    and hashing in the CPU pool, then the write under the session's lock (state again)."""
    if kind not in UPLOAD_KINDS:
        raise NotFound("upload_kind_unknown", "上传类型无效")
    await check_upload_allowed(principal)
    checked: dict[str, Any] = {}
    if kind == "liveness":
        if content_type not in VIDEO_TYPES:
            raise InvalidInput("unsupported_media_type", "请上传 webm 或 mp4 格式的视频")
        check_video(data, content_type)
        clean = await run_cpu(clean_video, data, content_type)
    else:
        if content_type not in IMAGE_TYPES:
            raise InvalidInput("unsupported_media_type", "请上传 JPEG 或 PNG 格式的照片")
        check_image_header(data)
        clean = await run_cpu(clean_image, data)
        photo = await run_cpu(check_card_upload, clean, kind)
        if photo.code is not None:
            # Refused before anything is stored: the attempt count never moves (issue 15).
            raise InvalidInput(f"card_photo_{photo.code}", photo.message or "")
        checked = {"checks": photo.measures, "warnings": list(photo.warnings)}
    evidence = EvidenceStore(deps.storage, deps.cipher)
    async with locked(deps, principal.session_id, "identity") as unit:
        attempt = unit.session.identity_attempts + 1
        count = await IdentityUpload.filter(session_id=unit.session.id).using_db(unit.conn).count()
        path = (f"sessions/{unit.session.id}/identity/attempt-{attempt}/"
                f"{count + 1:03d}-{kind}.{clean.extension}.enc")
        stored = await evidence.put(path, clean.data)
        upload = await IdentityUpload.create(
            session_id=unit.session.id, attempt=attempt, kind=kind, path=path,
            sha256=clean.sha256, size_bytes=len(clean.data),
            using_db=unit.conn,
        )
        await unit.event(principal.actor, EventType.IDENTITY_UPLOAD,
                         {"kind": kind, "attempt": attempt, "stored_sha256": stored.sha256,
                          **checked})
    if kind in CARD_SIDES and set(CARD_SIDES) <= set(
            await latest_uploads(principal.session_id, upload.attempt)):
        # Both sides are in: the card is read now, while the customer records the liveness clip.
        await deps.jobs.enqueue("identity_card_read", session_id=str(principal.session_id),
                                attempt=upload.attempt)
    return upload


def check_card_upload(clean: CleanUpload, kind: str) -> Any:
    """The engines' cheap photo checks (`media.identity.idcard.check_card_photo`) on the
    cleaned, upright pixels: resolution, a card, sharpness, glare, a face on the portrait
    side, and the screen-recapture warning. Blocking (50–250 ms): run it with `run_cpu`."""
    import numpy as np

    from media.identity.idcard import check_card_photo

    bgr = np.ascontiguousarray(np.asarray(clean.image)[:, :, ::-1])
    return check_card_photo(bgr, "front" if kind == "id_front" else "back")


def card_recapture(front: bytes, back: bytes) -> dict[str, Any]:
    """Moiré measures of both card photos (blocking: `run_cpu`)."""
    from media.identity.idcard import recapture_of_photo

    return {"front": recapture_of_photo(front), "back": recapture_of_photo(back)}


async def latest_uploads(session_id: UUID, attempt: int) -> dict[str, IdentityUpload]:
    rows = await IdentityUpload.filter(session_id=session_id, attempt=attempt).order_by("id")
    return {row.kind: row for row in rows}


async def submit_attempt(deps: WorkflowDeps, principal: CustomerPrincipal) -> int:
    """Checks the attempt is complete and hands it to the engines (a background job)."""
    session = await RecordingSession.get(id=principal.session_id)
    require_state(session, "identity")
    attempt = session.identity_attempts + 1
    missing = [k for k in UPLOAD_KINDS if k not in await latest_uploads(session.id, attempt)]
    if missing:
        names = {"id_front": "身份证人像面", "id_back": "身份证国徽面", "liveness": "动作视频"}
        raise Conflict("identity_uploads_missing",
                       "请先上传：" + "、".join(names[k] for k in missing), missing=missing)
    await deps.jobs.enqueue("identity_check", session_id=str(session.id), attempt=attempt)
    return attempt


def _component(result: Any, *, score: float | None = None) -> ComponentResult:
    engine = getattr(result, "engine", None)
    label = f"{engine.name} {engine.version}" if engine is not None else ""
    return ComponentResult(
        passed=bool(result.passed), engine=label, score=score,
        details=result.model_dump(mode="json"), reason=result.reason or "",
    )


@dataclass(frozen=True)
class CardRead:
    """Both photos of the card read and checked against the order, with their moiré measures."""

    verification: Any  # media.identity.results.IdCardVerification
    front: Any  # media.identity.results.CardSideRead (with the portrait JPEG)
    recapture: dict[str, Any]


CardKey = tuple[str, int, str, str]  # session, attempt, SHA-256 of the front and the back


class CardReads:
    """The card of an attempt, read once (R-12): the job `identity_card_read` reads it as soon
    as both sides are uploaded, while the customer records the liveness clip, and the check
    after 提交核验 takes that read (or waits for it while it runs) instead of reading again
    (issue 17, time to first speech: the OCR is the check's longest part).

    Kept in the worker process's memory only, never in Redis: the portrait stays out of any
    store that is not encrypted. Keyed by the photos' SHA-256, so a photo taken again is read
    again. A check that runs in another worker process reads the card itself. At most `limit`
    reads are kept; the check drops the one it used."""

    def __init__(self, limit: int = 32) -> None:
        self._reads: OrderedDict[CardKey, asyncio.Future[CardRead]] = OrderedDict()
        self._limit = limit

    async def read(self, key: CardKey, reader: Callable[[], Awaitable[CardRead]]) -> CardRead:
        future = self._reads.get(key)
        if future is None:
            future = asyncio.ensure_future(reader())
            self._reads[key] = future
            while len(self._reads) > self._limit:
                self._reads.popitem(last=False)
        try:
            # Shielded: a waiter that is cancelled leaves the read running for the others.
            return await asyncio.shield(future)
        except Exception:
            if self._reads.get(key) is future:
                del self._reads[key]  # failed: the next asks again
            raise

    def forget(self, key: CardKey) -> None:
        self._reads.pop(key, None)

    def __contains__(self, key: CardKey) -> bool:
        return key in self._reads


def card_key(session_id: UUID, attempt: int, uploads: dict[str, IdentityUpload]) -> CardKey:
    return (str(session_id), attempt, uploads["id_front"].sha256, uploads["id_back"].sha256)


async def read_card(deps: WorkflowDeps, engines: IdentityEngines, session: RecordingSession,
                    uploads: dict[str, IdentityUpload]) -> CardRead:
    """OCR of both sides and validation against the order (GB 11643, validity, holder)."""
    from media.identity.results import ExpectedHolder

    evidence = EvidenceStore(deps.storage, deps.cipher)
    order = await Order.get(id=session.order_id).prefetch_related("customer")
    customer = decrypt_customer(deps, order.customer, order)
    expected = ExpectedHolder(name=customer.name, id_number=customer.id_number)
    front_jpeg = await evidence.get(uploads["id_front"].path)
    back_jpeg = await evidence.get(uploads["id_back"].path)
    verification, front, _ = await engines.averify_card_images(
        front_jpeg, back_jpeg, expected, deps.clock().date(),
    )
    recapture = await run_cpu(card_recapture, front_jpeg, back_jpeg)
    return CardRead(verification, front, recapture)


async def read_card_early(deps: WorkflowDeps, engines: IdentityEngines, reads: CardReads,
                          session_id: UUID, attempt: int) -> bool:
    """The job `identity_card_read`: reads the attempt's card into `reads` (False when the
    attempt is decided already or a side is missing: nothing to read)."""
    session = await RecordingSession.get(id=session_id)
    if session.state != SessionState.CONSENTED or session.identity_attempts + 1 != attempt:
        return False
    uploads = await latest_uploads(session_id, attempt)
    if not set(CARD_SIDES) <= set(uploads):
        return False
    await reads.read(card_key(session_id, attempt, uploads),
                     lambda: read_card(deps, engines, session, uploads))
    return True


async def run_identity_check(
    deps: WorkflowDeps, engines: IdentityEngines, session_id: UUID, attempt: int,
    plan: Any, reads: CardReads | None = None,
) -> AttemptOutcome | None:
    """The job: OCR and validation against the order (read early into `reads` when the
    card-read job got there first), liveness on the clip, face match of the ID portrait against
    the best live frame; the outcome goes through `record_attempt`."""
    from media.identity.imaging import encode_jpeg
    from media.identity.liveness import frames_from_video

    session = await RecordingSession.get(id=session_id)
    if session.state != SessionState.CONSENTED or session.identity_attempts + 1 != attempt:
        return None  # a retried or stale job: this attempt is already decided
    uploads = await latest_uploads(session_id, attempt)
    evidence = EvidenceStore(deps.storage, deps.cipher)
    key = card_key(session_id, attempt, uploads)
    # The card (read already, being read, or read now) and the liveness clip are checked at
    # the same time: both run in threads.
    card_read = asyncio.ensure_future(
        read_card(deps, engines, session, uploads) if reads is None
        else reads.read(key, lambda: read_card(deps, engines, session, uploads)))
    try:
        clip = await evidence.get(uploads["liveness"].path)
        suffix = ".webm" if uploads["liveness"].path.endswith(".webm.enc") else ".mp4"
        frames = await asyncio.to_thread(frames_from_video, clip, 15.0, suffix)
        liveness = await engines.acheck_liveness(frames, plan)
        card = await card_read
    finally:
        if not card_read.done():
            card_read.cancel()
        if reads is not None:
            reads.forget(key)
    verification, front, recapture = card.verification, card.front, card.recapture
    base = f"sessions/{session_id}/identity/attempt-{attempt}"
    if front.portrait_jpeg and liveness.best_frame_index is not None and frames:
        probe = frames[liveness.best_frame_index].image
        face = await engines.amatch_face(front.portrait_jpeg, probe)
        await evidence.put(f"{base}/portrait.jpg.enc", front.portrait_jpeg)
        await evidence.put(f"{base}/live-face.jpg.enc", encode_jpeg(probe, 92))
        face_result = _component(face, score=face.distance)
    else:
        face_result = ComponentResult(
            passed=False, engine="", reason="未能取得清晰的证件人像或正脸画面，请重新拍摄")
    ocr_result = _component(verification)
    # A photo of a screen (moiré) is a warning for QA, not a refusal (issue 15).
    ocr_result.details["recapture"] = recapture
    ocr_result.details["warnings"] = [
        f"screen_recapture_{side}" for side, m in recapture.items() if m["screen_recapture"]]
    return await record_attempt(
        deps, Actor.system("identity-engines"), session_id,
        ocr_result, face_result, _component(liveness),
    )
