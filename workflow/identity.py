"""Recording identity results (R-12): OCR, face match and liveness, with an attempt limit.

The engines (media/identity) produce the results; this module only decides what they mean for
the session: all three passed → identity_verified; otherwise another attempt, until the limit
→ identity_failed.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol
from uuid import UUID

from models.sales import Order
from models.sessions import IdentityCheck, IdentityUpload, RecordingSession, SessionState
from security.audit import Actor
from workflow.core import WorkflowDeps, locked, require_state
from workflow.errors import Conflict, InvalidInput, NotFound
from workflow.evidence import IMAGE_TYPES, VIDEO_TYPES, EvidenceStore, clean_image, clean_video
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
        data = {"attempt": session.identity_attempts, "passed": passed, "reasons": reasons}
        if passed:
            await unit.move(actor, SessionState.IDENTITY_VERIFIED, "identity_verified", data)
        elif session.identity_attempts >= limit:
            session.ended_at = deps.clock()
            session.end_reason = "identity verification failed"
            await unit.move(actor, SessionState.IDENTITY_FAILED, "identity_failed", data)
        else:
            await unit.move(actor, SessionState.CONSENTED, "identity_attempt_failed", data)
        state = session.state
        left = max(limit - session.identity_attempts, 0) if not passed else 0
    return AttemptOutcome(check, state, left)


# ---------------------------------------------------------------- uploads and the engine job

UPLOAD_KINDS = ("id_front", "id_back", "liveness")


class IdentityEngines(Protocol):
    """What the job needs of media.identity.IdentityService (kept behind this interface so the
    workflow never imports the engines)."""

    def new_challenge_plan(self) -> Any: ...

    async def averify_card_images(
        self, front: bytes, back: bytes | None, expected: Any, today: date | None = None
    ) -> tuple[Any, Any, Any]: ...

    async def amatch_face(self, reference: bytes | Any, probe: bytes | Any) -> Any: ...

    async def acheck_liveness(self, frames: Any, plan: Any) -> Any: ...


async def save_upload(
    deps: WorkflowDeps, principal: CustomerPrincipal, kind: str, content_type: str, data: bytes
) -> IdentityUpload:
    """One side of the ID card or the liveness clip of the coming attempt."""
    if kind not in UPLOAD_KINDS:
        raise NotFound("upload_kind_unknown", "上传类型无效")
    if kind == "liveness":
        if content_type not in VIDEO_TYPES:
            raise InvalidInput("unsupported_media_type", "请上传 webm 或 mp4 格式的视频")
        clean = clean_video(data, content_type)
    else:
        if content_type not in IMAGE_TYPES:
            raise InvalidInput("unsupported_media_type", "请上传 JPEG 或 PNG 格式的照片")
        clean = clean_image(data)
    evidence = EvidenceStore(deps.storage, deps.cipher)
    async with locked(deps, principal.session_id, "identity") as unit:
        attempt = unit.session.identity_attempts + 1
        count = await IdentityUpload.filter(session_id=unit.session.id).using_db(unit.conn).count()
        path = (f"sessions/{unit.session.id}/identity/attempt-{attempt}/"
                f"{count + 1:03d}-{kind}.{clean.extension}.enc")
        stored = evidence.put(path, clean.data)
        upload = await IdentityUpload.create(
            session_id=unit.session.id, attempt=attempt, kind=kind, path=path,
            sha256=hashlib.sha256(clean.data).hexdigest(), size_bytes=len(clean.data),
            using_db=unit.conn,
        )
        await unit.event(principal.actor, "identity_upload",
                         {"kind": kind, "attempt": attempt, "stored_sha256": stored.sha256})
    return upload


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


async def run_identity_check(
    deps: WorkflowDeps, engines: IdentityEngines, session_id: UUID, attempt: int,
    plan: Any,
) -> AttemptOutcome | None:
    """The job: OCR and validation against the order, liveness on the clip, face match of the
    ID portrait against the best live frame; the outcome goes through `record_attempt`."""
    from media.identity.imaging import encode_jpeg
    from media.identity.liveness import frames_from_video
    from media.identity.results import ExpectedHolder

    session = await RecordingSession.get(id=session_id)
    if session.state != SessionState.CONSENTED or session.identity_attempts + 1 != attempt:
        return None  # a retried or stale job: this attempt is already decided
    uploads = await latest_uploads(session_id, attempt)
    evidence = EvidenceStore(deps.storage, deps.cipher)
    order = await Order.get(id=session.order_id).prefetch_related("customer")
    customer = decrypt_customer(deps, order.customer, order)
    expected = ExpectedHolder(name=customer.name, id_number=customer.id_number)
    verification, front, _ = await engines.averify_card_images(
        evidence.get(uploads["id_front"].path), evidence.get(uploads["id_back"].path),
        expected, deps.clock().date(),
    )
    clip = evidence.get(uploads["liveness"].path)
    suffix = ".webm" if uploads["liveness"].path.endswith(".webm.enc") else ".mp4"
    frames = await asyncio.to_thread(frames_from_video, clip, 15.0, suffix)
    liveness = await engines.acheck_liveness(frames, plan)
    base = f"sessions/{session_id}/identity/attempt-{attempt}"
    if front.portrait_jpeg and liveness.best_frame_index is not None and frames:
        probe = frames[liveness.best_frame_index].image
        face = await engines.amatch_face(front.portrait_jpeg, probe)
        evidence.put(f"{base}/portrait.jpg.enc", front.portrait_jpeg)
        evidence.put(f"{base}/live-face.jpg.enc", encode_jpeg(probe, 92))
        face_result = _component(face, score=face.distance)
    else:
        face_result = ComponentResult(
            passed=False, engine="", reason="未能取得清晰的证件人像或正脸画面，请重新拍摄")
    return await record_attempt(
        deps, Actor.system("identity-engines"), session_id,
        _component(verification), face_result, _component(liveness),
    )
