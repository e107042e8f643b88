"""The call: starting it behind the gates, playing the script step by step with the customer's
acknowledgements (R-24), interruption and resume (R-30), completion, abort.

The server, not the page, decides when a step may be answered (fail closed, R-23/R-24): the
answer to a step opens only when the call hub reported its speech played in full to the
connected customer (`ClipFinished.complete`), or, for a step the agent reads, when the agent's
voice was heard for long enough during it (`workflow.media_events`). Until then every answer,
hand-copy, signature or "move on" for the step is refused with 409 `answer_not_open`. The script
starts only with both parties' media connected and recorded, and with every step's speech
rendered; `complete` refuses a recording with gaps that no interruption explains
(`workflow.coverage`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from models import lean
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
from scripts_library.render import SessionStep
from security import audit
from security.audit import Actor
from workflow import coverage, documents, live_liveness
from workflow.core import Unit, WorkflowDeps, locked, require_state
from workflow.errors import Conflict, Forbidden, NotFound
from workflow.event_types import EventType
from workflow.gates import Location
from workflow.principals import CustomerPrincipal, StaffPrincipal
from workflow.sessions import run_gates
from workflow.steps import at_current, steps_of

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


ROLE_LABELS_ZH = {"customer": "客户", "agent": "销售人员"}


def require_answer_open(session: RecordingSession, step: SessionStep) -> None:
    """R-23, R-24: the step's answer is accepted only after the server opened it (its speech
    reached the connected customer in full, or the agent was heard reading it)."""
    if session.answer_open_step == step.id:
        return
    if step.speaker == "agent":
        raise Conflict("answer_not_open", "销售人员尚未宣读完本项内容，请听完后再回答",
                       step_id=step.id)
    raise Conflict("answer_not_open", "请先听完本项内容再回答", step_id=step.id)


def call_readiness(session: RecordingSession, liveness: str | None = None) -> list[str]:
    """What keeps the script from starting (Chinese, empty when ready): both parties' media
    connected and recorded (R-30), every spoken step's speech rendered and pinned (R-23), and
    ``liveness``: why the live liveness check does not let it start yet (R-12,
    `workflow.live_liveness.readiness_problem`)."""
    problems = []
    absent = [ROLE_LABELS_ZH[role] for role in ("customer", "agent")
              if not (session.call_parties or {}).get(role, {}).get("recording")]
    if absent:
        problems.append(f"{'和'.join(absent)}的音视频尚未接通录制")
    unready = [s for s in steps_of(session) if s.speaker == "tts" and not s.audio]
    if unready:
        problems.append(f"还有 {len(unready)} 段话术语音正在生成")
    if liveness:
        problems.append(liveness)
    return problems


def _offset_ms(session: RecordingSession, at: datetime) -> int:
    if session.recording_started_at is None:
        return 0
    return (at - session.recording_started_at) // timedelta(milliseconds=1)


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
        await unit.move(principal.actor, SessionState.IN_CALL, EventType.CALL_STARTED,
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
        liveness = live_liveness.readiness_problem(
            await live_liveness.live_state(unit.session.id, unit.conn), deps.settings)
        problems = call_readiness(unit.session, liveness)
        if problems:
            raise Conflict("call_not_ready", "暂不能开始播报话术：" + "；".join(problems),
                           problems=problems)
        unit.session.current_step = 0
        unit.session.answer_open_step = ""
        # The policy in force, for QA (`qa.checks.check_live_liveness`, issue 15).
        await unit.move(principal.actor, SessionState.DISCLOSING, EventType.SCRIPT_STARTED,
                        {"step_id": steps_of(unit.session)[0].id, "index": 0,
                         "live_liveness_required": deps.settings.live_liveness_required})
        result: RecordingSession = unit.session
    return result


async def _advance(unit: Unit, actor: Actor, step: SessionStep) -> None:
    session = unit.session
    session.current_step += 1
    session.answer_open_step = ""
    session.spoken = {}
    if session.current_step >= len(session.steps):
        await unit.move(actor, SessionState.SIGNING, EventType.SCRIPT_FINISHED,
                        {"last_step_id": step.id})
        return
    nxt = at_current(session)
    # Issue 15: a spot check of liveness may hold the next step until it passed.
    if not await live_liveness.hold_for_spot_check(unit, session.current_step, nxt.id):
        await unit.event(actor, EventType.STEP_STARTED, {"step_id": nxt.id,
                                                         "index": session.current_step})


# The answer already stored for a retried `client_event_id` (unique per session).
_DUPLICATE_ANSWER_SQL = ("SELECT * FROM acknowledgement WHERE session_id = ? "
                         "AND client_event_id = ? LIMIT 1")


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
        # On every acknowledgement: the query written out (models/lean.py, issue 14).
        existing = await lean.fetch_one(
            Acknowledgement, _DUPLICATE_ANSWER_SQL,
            [lean.param(Acknowledgement, "session_id", session.id), client_event_id],
            unit.conn)
        if existing is not None:
            return AckResult(existing, session, True)
        require_state(session, "acknowledge")
        live_liveness.refuse_while_held(session, customer=True)
        if session.paused:
            raise Conflict("session_paused", "请等待销售人员解释说明后再继续确认")
        step = at_current(session)
        if step.id != step_id:
            raise Conflict("step_mismatch", "页面上的话术步骤已变化，请刷新后再确认",
                           current_step_id=step.id)
        if step.answer == NO_ANSWER:
            raise Conflict("step_needs_no_answer", "该步骤无需客户确认")
        if step.answer in WRITTEN_ANSWERS:
            raise Conflict("step_needs_writing", "该步骤需要在签名区抄录或签名")
        require_answer_open(session, step)
        now = deps.clock()
        if step.answer == "show_document" and answer == AnswerValue.AFFIRMATIVE:
            await documents.require_pages_shown(unit, principal.actor, step, now)
        ack = await store_answer(unit, principal.actor, step, answer, answer_kind, text,
                                 client_event_id, now)
    return AckResult(ack, session, False)


async def store_answer(unit: Unit, actor: Actor, step: SessionStep, answer: AnswerValue,
                       answer_kind: str, text: str, client_event_id: str, at: datetime,
                       speech: dict[str, Any] | None = None) -> Acknowledgement:
    """The answer to the current (open) step, in the caller's transaction: an affirmative one
    moves the script on; a negative or unclear one pauses it for the agent to explain, after
    which the step is played again (R-24). Button and spoken answers alike."""
    session = unit.session
    ack = await Acknowledgement.create(
        session_id=session.id, step_id=step.id, step_index=session.current_step,
        answer_kind=answer_kind, answer=answer, text=text[:500], at=at,
        offset_ms=_offset_ms(session, at), client_event_id=client_event_id, speech=speech,
        using_db=unit.conn,
    )
    data = {"step_id": step.id, "index": session.current_step, "answer": answer.value,
            "answer_kind": answer_kind, "offset_ms": ack.offset_ms}
    if speech is not None:
        data["transcript"] = str(speech.get("transcript", ""))[:200]
    await unit.event(actor, EventType.ACKNOWLEDGED, data)
    if answer == AnswerValue.AFFIRMATIVE:
        await _advance(unit, actor, step)
    else:
        session.paused = True
        session.answer_open_step = ""  # the step is played again after the explanation
        session.spoken = {}
        session.pause_reason = f"customer answered {answer.value} at step {step.id}"
        await unit.move(actor, SessionState.DISCLOSING, EventType.SCRIPT_PAUSED, data)
    return ack


async def advance(deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID,
                  step_id: str) -> RecordingSession:
    """The agent moves past a step that needs no answer (e.g. the agent shows the licence),
    once it was read in full (its speech played, or the agent heard reading it)."""
    async with locked(deps, session_id, "advance") as unit:
        _own(principal, unit.session)
        session = unit.session
        step = at_current(session)
        if step.id != step_id:
            raise Conflict("step_mismatch", "当前话术步骤已变化，请刷新",
                           current_step_id=step.id)
        live_liveness.refuse_while_held(session, customer=False)
        if step.answer != NO_ANSWER:
            raise Conflict("acknowledgement_required", "该步骤需要客户明确肯定答复后才能继续")
        if session.paused:
            raise Conflict("session_paused", "请先解释说明并继续")
        require_answer_open(session, step)
        await _advance(unit, principal.actor, step)
        result: RecordingSession = unit.session
    return result


async def advance_after_speech(deps: WorkflowDeps, session_id: UUID, step_id: str) -> None:
    """A step that needs no answer (e.g. the closing words) moves on once played in full."""
    async with locked(deps, session_id, "advance") as unit:
        session = unit.session
        step = at_current(session)
        if step.id == step_id and step.answer == NO_ANSWER and not session.paused:
            await _advance(unit, Actor.system("media"), step)


async def resume_script(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, note: str
) -> RecordingSession:
    """After a negative answer the agent explains; the same step is then played again."""
    async with locked(deps, session_id, "resume_script") as unit:
        _own(principal, unit.session)
        if not unit.session.paused:
            raise Conflict("session_not_paused", "话术没有暂停，无需继续")
        live_liveness.refuse_while_held(unit.session, customer=False)
        unit.session.paused = False
        unit.session.pause_reason = ""
        unit.session.answer_open_step = ""
        step = at_current(unit.session)
        await unit.move(principal.actor, SessionState.DISCLOSING, EventType.SCRIPT_RESUMED,
                        {"step_id": step.id, "index": unit.session.current_step,
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
        session.answer_open_step = ""  # the interrupted step is played again after resuming
        await unit.move(actor, SessionState.INTERRUPTED, EventType.INTERRUPTED,
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
        gap_ms = (now - session.interrupted_at) // timedelta(milliseconds=1)
        target = session.resume_state
        data: dict[str, Any] = {"gap_ms": gap_ms, "resumed_into": target.value}
        if target == SessionState.DISCLOSING:
            data["replay_step_id"] = at_current(session).id
            data["index"] = session.current_step
        session.resume_state = None
        session.interrupted_at = None
        await unit.move(principal.actor, target, EventType.CALL_RESUMED, data)
        result: RecordingSession = unit.session
    return result


def completion_problem(session: RecordingSession, signed: bool) -> Conflict | None:
    """Why the session cannot be completed yet, before the recording is looked at."""
    if session.state != SessionState.SIGNING:
        try:
            require_state(session, "complete")
        except Conflict as refusal:
            return refusal
    if not signed:
        return Conflict("signature_missing", "客户尚未完成抄录和签名，不能完成录制")
    return None


async def complete(deps: WorkflowDeps, principal: StaffPrincipal,
                   session_id: UUID) -> RecordingSession:
    """R-30: only a whole recording completes. The call room must have been closed first (so
    every segment is registered); a gap in any stream that no recorded interruption explains
    refuses the completion with what is missing, and the refusal is audited. Such a session
    can only be aborted: what exists is kept and sealed as incomplete."""
    async with locked(deps, session_id, "complete") as unit:
        _own(principal, unit.session)
        signed = await Signature.filter(session_id=session_id).using_db(unit.conn).exists()
        problem = completion_problem(unit.session, signed)
        if problem is not None:
            raise problem
        now = deps.clock()
        s = deps.settings
        gaps = await coverage.recording_gaps(unit.session, now, unit.conn,
                                             s.call_keepalive_timeout_seconds,
                                             s.recording_gap_tolerance_seconds)
        if not gaps:
            unit.session.completed_at = now
            unit.session.ended_at = now
            await unit.move(principal.actor, SessionState.COMPLETED, EventType.COMPLETED)
        result: RecordingSession = unit.session
    if gaps:
        details = [g.as_dict() for g in gaps]
        await audit.record_alone(principal.actor, "session.complete_refused",
                                 object_type="session", object_id=str(session_id),
                                 details={"reason": "recording_incomplete", "gaps": details})
        raise Conflict("recording_incomplete",
                       "录像不完整，不能完成录制：" + "；".join(g.describe() for g in gaps[:5])
                       + "。请终止本次录制后重新录制", gaps=details)
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
        await unit.move(principal.actor, SessionState.ABORTED, EventType.ABORTED,
                        {"reason": reason[:200]})
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
        await unit.event(actor, EventType.RECORDING_SEGMENT,
                         {"kind": data.kind, "segment": data.segment, "sha256": data.sha256})
    return recording
