"""What the customer's page may ask of the call besides answering: hear the current step again
(再听一遍, R-23/R-24) and report its camera and microphone (R-30).

再听一遍: allowed only for the current TTS step of a running, unpaused script whose answer has
not been given (answering moves on or pauses, so the current step is by definition unanswered),
at most `MAX_REPLAYS_PER_STEP` times per step. It closes the step's answer again and puts
`step_replay_requested` on the timeline; the call bridge plays the step from its start on that
event. The fail-closed rule stays whole: the answer reopens only when a clip started *after* the
request played in full. A clip started before it (cut by the replay, or finishing in the same
instant) no longer counts (`replay_superseded`, read by `workflow.media_events.clip_finished`).

Devices: the page reports when the browser refused the camera or microphone (or none exists)
and when both are live again: `customer_device_denied` / `customer_device_ready` on the
timeline, which the agent's console shows live. The script cannot start without the customer's
media anyway: `workflow.call.call_readiness` needs the customer's audio and video connected and
recorded by the hub, which a page without a camera or microphone never is."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient

from models.sessions import RecordingSession, SessionEvent, SessionState
from workflow import live_liveness
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict
from workflow.event_types import EventType
from workflow.principals import CustomerPrincipal
from workflow.states import CALL_STATES, PRE_CALL_STATES
from workflow.steps import at_current

MAX_REPLAYS_PER_STEP = 5
REPLAY_REQUESTED = EventType.STEP_REPLAY_REQUESTED


async def replay_step(deps: WorkflowDeps, principal: CustomerPrincipal,
                      step_id: str) -> RecordingSession:
    """再听一遍: the current step's speech is played again from its start."""
    async with locked(deps, principal.session_id, None) as unit:
        session = unit.session
        if session.state != SessionState.DISCLOSING or session.current_step >= len(session.steps):
            raise Conflict("not_disclosing", "现在没有正在播报的内容")
        live_liveness.refuse_while_held(session, customer=True)
        if session.paused:
            raise Conflict("session_paused", "请等待销售人员解释说明")
        step = at_current(session)
        if step.id != step_id:
            raise Conflict("step_mismatch", "页面上的话术步骤已变化，请刷新后再试",
                           current_step_id=step.id)
        if step.speaker != "tts" or not step.audio:
            raise Conflict("replay_not_available", "本项由销售人员宣读，如需再听请直接告诉销售人员")
        earlier = await SessionEvent.filter(
            session_id=session.id, type=REPLAY_REQUESTED).using_db(unit.conn).values("data")
        count = sum(1 for e in earlier if e["data"].get("step_id") == step_id
                    and e["data"].get("index") == session.current_step)
        if count >= MAX_REPLAYS_PER_STEP:
            raise Conflict("replay_limit", f"本项已重复播放 {count} 次，如仍有疑问请点击“不清楚”"
                           "或直接询问销售人员")
        # the answer waits for the replay to be heard in full.
        session.answer_open_step = ""
        await unit.event(principal.actor, REPLAY_REQUESTED,
                         {"step_id": step_id, "index": session.current_step,
                          "count": count + 1})
        result: RecordingSession = unit.session
    return result


def clip_seq(clip_id: str) -> int | None:
    """The timeline position a clip was started at (`<step id>@<event seq>`)."""
    _, _, seq = clip_id.rpartition("@")
    return int(seq) if seq.isdigit() else None


async def replay_superseded(conn: BaseDBAsyncClient, session_id: UUID, clip_id: str) -> bool:
    """True when the customer asked to hear the step again after this clip was started: its
    playing to the end no longer opens the answer (the replay's clip must)."""
    seq = clip_seq(clip_id)
    if seq is None:
        return False
    return await SessionEvent.filter(session_id=session_id, type=REPLAY_REQUESTED,
                                     seq__gt=seq).using_db(conn).exists()


DEVICE_STATES = ("ok", "unused", "denied", "missing", "busy", "error")


async def report_devices(deps: WorkflowDeps, principal: CustomerPrincipal, camera: str,
                         microphone: str, stage: str, error: str) -> dict[str, Any]:
    """The page's camera and microphone: refused (or missing, busy) → `customer_device_denied`;
    both live → `customer_device_ready`. Only while the devices matter (before and in the
    call), and only when it changes what the agent knows."""
    async with locked(deps, principal.session_id, None) as unit:
        session = unit.session
        if session.state not in PRE_CALL_STATES | CALL_STATES | {SessionState.INTERRUPTED}:
            raise Conflict("devices_not_needed", "当前无需使用摄像头和麦克风")
        ready = camera == "ok" and microphone in ("ok", "unused")
        kind = (EventType.CUSTOMER_DEVICE_READY if ready
                else EventType.CUSTOMER_DEVICE_DENIED)
        last = await SessionEvent.filter(
            session_id=session.id,
            type__in=[EventType.CUSTOMER_DEVICE_DENIED, EventType.CUSTOMER_DEVICE_READY]
        ).using_db(unit.conn).order_by("-seq").first()
        data = {"camera": camera, "microphone": microphone, "stage": stage,
                "error": error[:100]}
        if ready and (last is None or last.type == kind):
            return {"recorded": False, "event": kind}  # nothing was wrong, or already said
        if last is not None and last.type == kind and last.data == data:
            return {"recorded": False, "event": kind}
        await unit.event(principal.actor, kind, data)
    return {"recorded": True, "event": kind}
