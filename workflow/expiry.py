"""Background sweeps: expiring stale sessions and interrupted calls past the resume window
(R-30), and sealing completed sessions (R-31)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from models.sessions import RecordingSession, SessionState
from security.audit import Actor
from workflow.core import WorkflowDeps, locked
from workflow.errors import WorkflowError
from workflow.sealing import seal
from workflow.states import STALE_CANDIDATES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    expired: list[UUID]
    sealed: list[UUID]


async def _expire(deps: WorkflowDeps, session_id: UUID, reason: str) -> bool:
    try:
        async with locked(deps, session_id, "expire") as unit:
            unit.session.ended_at = deps.clock()
            unit.session.end_reason = reason
            await unit.move(Actor.system("expiry"), SessionState.EXPIRED, "expired",
                            {"reason": reason})
        return True
    except WorkflowError:
        # It moved on between the query and the lock (e.g. the customer just acted).
        return False


async def sweep(deps: WorkflowDeps) -> SweepResult:
    now = deps.clock()
    expired: list[UUID] = []
    stale_before = now - timedelta(seconds=deps.settings.stale_session_seconds)
    stale: list[UUID] = await RecordingSession.filter(  # type: ignore[assignment]
        state__in=list(STALE_CANDIDATES), updated_at__lt=stale_before
    ).values_list("id", flat=True)
    for session_id in stale:
        if await _expire(deps, session_id, "stale: no progress"):
            expired.append(session_id)
    resume_before = now - timedelta(seconds=deps.settings.resume_window_seconds)
    lapsed: list[UUID] = await RecordingSession.filter(  # type: ignore[assignment]
        state=SessionState.INTERRUPTED, interrupted_at__lt=resume_before
    ).values_list("id", flat=True)
    for session_id in lapsed:
        if await _expire(deps, session_id, "resume window passed"):
            expired.append(session_id)
    sealed: list[UUID] = []
    completed: list[UUID] = await RecordingSession.filter(  # type: ignore[assignment]
        state=SessionState.COMPLETED
    ).values_list("id", flat=True)
    for session_id in completed:
        try:
            await seal(deps, session_id)
            sealed.append(session_id)
        except WorkflowError as exc:
            log.info("session %s not sealed: %s", session_id, exc)
    return SweepResult(expired, sealed)
