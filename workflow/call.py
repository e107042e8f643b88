"""The call: starting it behind the gates, playing the script step by step with the customer's
acknowledgements (R-24), interruption and resume (R-30), signing (R-25), completion, abort."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from models.people import Agent
from models.sales import Product, ProductType
from models.sessions import (
    Acknowledgement,
    AnswerValue,
    Recording,
    RecordingSession,
    SessionState,
    Signature,
)
from security.audit import Actor
from workflow.consent_texts import RISK_SENTENCE
from workflow.core import Unit, WorkflowDeps, locked, require_state
from workflow.errors import Conflict, Forbidden, InvalidInput, NotFound
from workflow.gates import Location
from workflow.principals import CustomerPrincipal, StaffPrincipal
from workflow.sessions import run_gates

RISK_SENTENCE_PRODUCTS = frozenset(
    {ProductType.PARTICIPATING, ProductType.UNIVERSAL, ProductType.INVESTMENT_LINKED}
)
NO_ANSWER = "none"
# Steps answered on the signature pad, through `sign`, not with a button.
WRITTEN_ANSWERS = frozenset({"handwritten_copy", "signature"})


def _own(principal: StaffPrincipal, session: RecordingSession) -> None:
    """Only the session's own agent drives the call."""
    if principal.agent_id is None or session.agent_id != principal.agent_id:
        raise NotFound("session_not_found", "找不到该录制会话")


def _offset_ms(session: RecordingSession, at: datetime) -> int:
    if session.recording_started_at is None:
        return 0
    return int((at - session.recording_started_at).total_seconds() * 1000)


async def start_call(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, location: Location | None
) -> RecordingSession:
    """R-03 again at the start: the agent must still be licensed and on approved premises."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None:
        raise NotFound("session_not_found", "找不到该录制会话")
    _own(principal, session)
    require_state(session, "start_call")
    agent = await Agent.get(id=session.agent_id)
    product = await Product.get(id=session.product_id)
    premises = await run_gates(deps, principal, agent, product, location, "session.start_call",
                               str(session_id))
    async with locked(deps, session_id, "start_call") as unit:
        unit.session.recording_started_at = unit.session.recording_started_at or deps.clock()
        await unit.move(principal.actor, SessionState.IN_CALL, "call_started",
                        {"premises_id": premises.id})
        result: RecordingSession = unit.session
    return result


async def start_script(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID
) -> RecordingSession:
    async with locked(deps, session_id, "start_script") as unit:
        _own(principal, unit.session)
        if not unit.session.steps:
            raise Conflict("script_empty", "话术没有任何步骤")
        unit.session.current_step = 0
        await unit.move(principal.actor, SessionState.DISCLOSING, "script_started",
                        {"step_id": unit.session.steps[0]["id"], "index": 0})
        result: RecordingSession = unit.session
    return result


async def _advance(unit: Unit, actor: Actor, step: dict[str, Any]) -> None:
    session = unit.session
    session.current_step += 1
    if session.current_step >= len(session.steps):
        await unit.move(actor, SessionState.SIGNING, "script_finished",
                        {"last_step_id": step["id"]})
    else:
        nxt = session.steps[session.current_step]
        await unit.event(actor, "step_started", {"step_id": nxt["id"],
                                                 "index": session.current_step})


@dataclass(frozen=True)
class AckResult:
    acknowledgement: Acknowledgement
    session: RecordingSession
    duplicate: bool


async def acknowledge(
    deps: WorkflowDeps, principal: CustomerPrincipal, step_id: str, answer: AnswerValue,
    answer_kind: str, text: str, client_event_id: str,
) -> AckResult:
    """Stored durably (committed) before this returns, so the page is told only what is kept.

    A repeated `client_event_id` (a retry after a lost response) returns the stored answer.
    """
    async with locked(deps, principal.session_id, None) as unit:
        session = unit.session
        existing = await Acknowledgement.get_or_none(
            session_id=session.id, client_event_id=client_event_id, using_db=unit.conn
        )
        if existing is not None:
            return AckResult(existing, session, True)
        require_state(session, "acknowledge")
        if session.paused:
            raise Conflict("session_paused", "请等待销售人员解释说明后再继续确认")
        step = session.steps[session.current_step]
        if step["id"] != step_id:
            raise Conflict("step_mismatch", "页面上的话术步骤已变化，请刷新后再确认",
                           current_step_id=step["id"])
        if step.get("answer") == NO_ANSWER:
            raise Conflict("step_needs_no_answer", "该步骤无需客户确认")
        if step.get("answer") in WRITTEN_ANSWERS:
            raise Conflict("step_needs_writing", "该步骤需要在签名区抄录或签名")
        if session.speaking_step == step_id:
            raise Conflict("step_still_speaking", "请先听完本项内容再回答")
        now = deps.clock()
        ack = await Acknowledgement.create(
            session_id=session.id, step_id=step_id, step_index=session.current_step,
            answer_kind=answer_kind, answer=answer, text=text[:500], at=now,
            offset_ms=_offset_ms(session, now), client_event_id=client_event_id,
            using_db=unit.conn,
        )
        data = {"step_id": step_id, "index": session.current_step, "answer": answer.value,
                "answer_kind": answer_kind, "offset_ms": ack.offset_ms}
        await unit.event(principal.actor, "acknowledged", data)
        if answer == AnswerValue.AFFIRMATIVE:
            await _advance(unit, principal.actor, step)
        else:
            session.paused = True
            session.pause_reason = f"customer answered {answer.value} at step {step_id}"
            await unit.move(principal.actor, SessionState.DISCLOSING, "script_paused", data)
    return AckResult(ack, session, False)


async def advance(deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID,
                  step_id: str) -> RecordingSession:
    """The agent moves past a step that needs no answer (e.g. the agent shows the licence)."""
    async with locked(deps, session_id, "advance") as unit:
        _own(principal, unit.session)
        session = unit.session
        step = session.steps[session.current_step]
        if step["id"] != step_id:
            raise Conflict("step_mismatch", "当前话术步骤已变化，请刷新",
                           current_step_id=step["id"])
        if step.get("answer") != NO_ANSWER:
            raise Conflict("acknowledgement_required", "该步骤需要客户明确肯定答复后才能继续")
        if session.paused:
            raise Conflict("session_paused", "请先解释说明并继续")
        await _advance(unit, principal.actor, step)
        result: RecordingSession = unit.session
    return result


async def advance_after_speech(deps: WorkflowDeps, session_id: UUID, step_id: str) -> None:
    """A step that needs no answer (e.g. the closing words) moves on once played in full."""
    async with locked(deps, session_id, "advance") as unit:
        session = unit.session
        step = session.steps[session.current_step]
        if step["id"] == step_id and step.get("answer") == NO_ANSWER and not session.paused:
            await _advance(unit, Actor.system("media"), step)


async def resume_script(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, note: str
) -> RecordingSession:
    """After a negative answer the agent explains; the same step is then played again."""
    async with locked(deps, session_id, "resume_script") as unit:
        _own(principal, unit.session)
        if not unit.session.paused:
            raise Conflict("session_not_paused", "话术没有暂停，无需继续")
        unit.session.paused = False
        unit.session.pause_reason = ""
        step = unit.session.steps[unit.session.current_step]
        await unit.move(principal.actor, SessionState.DISCLOSING, "script_resumed",
                        {"step_id": step["id"], "index": unit.session.current_step,
                         "note": note[:500]})
        result: RecordingSession = unit.session
    return result


async def interrupt(
    deps: WorkflowDeps, actor: Actor, session_id: UUID, reason: str
) -> RecordingSession:
    async with locked(deps, session_id, "interrupt") as unit:
        session = unit.session
        session.resume_state = session.state
        session.interrupted_at = deps.clock()
        await unit.move(actor, SessionState.INTERRUPTED, "interrupted",
                        {"reason": reason[:200], "step_index": session.current_step})
        result: RecordingSession = unit.session
    return result


async def interrupt_by_agent(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, reason: str
) -> RecordingSession:
    """Only the session's own agent reports an interruption from the console."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None:
        raise NotFound("session_not_found", "找不到该录制会话")
    _own(principal, session)
    return await interrupt(deps, principal.actor, session_id, reason)


async def resume_call(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, location: Location | None
) -> RecordingSession:
    """断点续录 (R-30): within the window, back to the state it left; the interrupted step is
    played again from its start, and the gap stays visible in the timeline."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None:
        raise NotFound("session_not_found", "找不到该录制会话")
    _own(principal, session)
    require_state(session, "resume_call")
    agent = await Agent.get(id=session.agent_id)
    product = await Product.get(id=session.product_id)
    await run_gates(deps, principal, agent, product, location, "session.resume_call",
                    str(session_id))
    async with locked(deps, session_id, "resume_call") as unit:
        session = unit.session
        now = deps.clock()
        assert session.interrupted_at is not None and session.resume_state is not None
        window = timedelta(seconds=deps.settings.resume_window_seconds)
        if now - session.interrupted_at > window:
            raise Conflict("resume_window_passed", "中断时间已超过可续录时限，请重新发起录制")
        gap_ms = int((now - session.interrupted_at).total_seconds() * 1000)
        target = session.resume_state
        data: dict[str, Any] = {"gap_ms": gap_ms, "resumed_into": target.value}
        if target == SessionState.DISCLOSING:
            data["replay_step_id"] = session.steps[session.current_step]["id"]
            data["index"] = session.current_step
        session.resume_state = None
        session.interrupted_at = None
        await unit.move(principal.actor, target, "call_resumed", data)
        result: RecordingSession = unit.session
    return result


def _image_kind(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    return None


async def sign(
    deps: WorkflowDeps, principal: CustomerPrincipal, risk_sentence: str, image: bytes
) -> Signature:
    """R-25: the hand-copied risk sentence (exact, where the product needs it) and a signature."""
    kind = _image_kind(image)
    if kind is None:
        raise InvalidInput("signature_not_image", "签名图片格式不正确，请重新签名")
    if len(image) > deps.settings.max_signature_bytes:
        raise InvalidInput("signature_too_large", "签名图片过大，请重新签名")
    async with locked(deps, principal.session_id, None) as unit:
        session = unit.session
        step = _written_step(session)
        product = await Product.get(id=session.product_id, using_db=unit.conn)
        if step is not None:  # a script step says what must be copied (signature steps: none)
            expected = step.get("copy_text")
        else:  # the final signing state of a script without a copy step
            expected = (RISK_SENTENCE if product.product_type in RISK_SENTENCE_PRODUCTS
                        else None)
        if expected is not None and _normalised(risk_sentence) != _normalised(expected):
            raise InvalidInput("risk_sentence_mismatch",
                               "抄录的风险提示语句与要求不一致，请逐字抄录",
                               expected=expected)
        count = await Signature.filter(session_id=session.id).using_db(unit.conn).count()
        stored = deps.storage.put(f"sessions/{session.id}/signature-{count + 1}.{kind}", image)
        now = deps.clock()
        signature = await Signature.create(
            session_id=session.id, risk_sentence=risk_sentence[:500], image_path=stored.path,
            image_sha256=stored.sha256, at=now, offset_ms=_offset_ms(session, now),
            using_db=unit.conn,
        )
        await unit.event(principal.actor, "signed",
                         {"image_sha256": stored.sha256, "offset_ms": signature.offset_ms,
                          "step_id": step["id"] if step else None})
        if step is not None:
            # The written answer is the acknowledgement of its step.
            await Acknowledgement.create(
                session_id=session.id, step_id=step["id"], step_index=session.current_step,
                answer_kind="handwriting" if step["answer"] == "handwritten_copy"
                else "signature",
                answer=AnswerValue.AFFIRMATIVE, text=risk_sentence[:500], at=now,
                offset_ms=signature.offset_ms, client_event_id=f"signature-{signature.id}",
                using_db=unit.conn,
            )
            await _advance(unit, principal.actor, step)
    return signature


def _normalised(text: str) -> str:
    return "".join(text.split()).rstrip("。")


def _written_step(session: RecordingSession) -> dict[str, Any] | None:
    """The script step waiting for a hand-copy or signature; None in the final signing state.
    Raises the 409 when the session is in neither."""
    if session.state == SessionState.DISCLOSING and not session.paused:
        step = session.steps[session.current_step]
        if step.get("answer") in WRITTEN_ANSWERS:
            if session.speaking_step == step["id"]:
                raise Conflict("step_still_speaking", "请先听完本项内容再签名")
            return step
    require_state(session, "sign")
    return None


async def complete(deps: WorkflowDeps, principal: StaffPrincipal,
                   session_id: UUID) -> RecordingSession:
    async with locked(deps, session_id, "complete") as unit:
        _own(principal, unit.session)
        if not await Signature.filter(session_id=session_id).using_db(unit.conn).exists():
            raise Conflict("signature_missing", "客户尚未完成抄录和签名，不能完成录制")
        now = deps.clock()
        unit.session.completed_at = now
        unit.session.ended_at = now
        await unit.move(principal.actor, SessionState.COMPLETED, "completed")
        result: RecordingSession = unit.session
    return result


async def abort(deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID,
                reason: str) -> RecordingSession:
    async with locked(deps, session_id, "abort") as unit:
        if principal.agent_id is not None:
            _own(principal, unit.session)
        elif principal.branch_id != unit.session.branch_id:
            raise Forbidden("not_your_branch", "只能终止本机构网点的录制会话")
        unit.session.ended_at = deps.clock()
        unit.session.end_reason = reason[:200] or "aborted"
        await unit.move(principal.actor, SessionState.ABORTED, "aborted", {"reason": reason[:200]})
        result: RecordingSession = unit.session
    return result


@dataclass(frozen=True)
class NewRecording:
    kind: str
    segment: int
    path: str
    sha256: str
    size_bytes: int
    duration_ms: int
    started_at: datetime
    ended_at: datetime | None


async def register_recording(
    deps: WorkflowDeps, actor: Actor, session_id: UUID, data: NewRecording
) -> Recording:
    """A media worker reports a written segment. Only possible once the call has started, which
    needs consent (R-10): a declined session can never have a recording."""
    async with locked(deps, session_id, "record_media") as unit:
        if unit.session.consented_at is None or unit.session.recording_started_at is None:
            raise Conflict("recording_not_allowed", "客户尚未同意录制，不能保存任何录像")
        if await Recording.filter(session_id=session_id, kind=data.kind,
                                  segment=data.segment).using_db(unit.conn).exists():
            raise Conflict("segment_exists", "该录像分段已存在，不能覆盖")
        recording = await Recording.create(
            session_id=session_id, kind=data.kind, segment=data.segment, path=data.path,
            sha256=data.sha256, size_bytes=data.size_bytes, duration_ms=data.duration_ms,
            started_at=data.started_at, ended_at=data.ended_at, using_db=unit.conn,
        )
        await unit.event(actor, "recording_segment",
                         {"kind": data.kind, "segment": data.segment, "sha256": data.sha256})
    return recording
