"""Background sweeps: expiring stale sessions and interrupted calls past the resume window
(R-30), and sealing (R-31): completed sessions, sessions whose sealing was refused for missing
evidence (retried every sweep until the files are back), and aborted or expired sessions that
recorded anything (sealed as incomplete)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from models.archive import Tombstone
from models.sessions import Recording, RecordingSession, SessionState, Signature
from security.audit import Actor
from workflow.core import WorkflowDeps, locked
from workflow.errors import WorkflowError
from workflow.event_types import EventType
from workflow.sealing import seal
from workflow.states import ENDED_EARLY, STALE_CANDIDATES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    expired: list[UUID]
    sealed: list[UUID]  # completed sessions sealed (now qa_pending)
    # aborted or expired sessions sealed as incomplete (their state stays)
    sealed_incomplete: list[UUID] = field(default_factory=list)
    # sealing refused: a file missing, unreadable or not as registered (evidence_incomplete)
    refused: list[UUID] = field(default_factory=list)


async def _expire(deps: WorkflowDeps, session_id: UUID, reason: str) -> bool:
    try:
        async with locked(deps, session_id, "expire") as unit:
            unit.session.ended_at = deps.clock()
            unit.session.end_reason = reason
            await unit.move(Actor.system("expiry"), SessionState.EXPIRED, EventType.EXPIRED,
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
    result = SweepResult(expired, [])
    completed: list[UUID] = await RecordingSession.filter(  # type: ignore[assignment]
        state__in=[SessionState.COMPLETED, SessionState.EVIDENCE_INCOMPLETE]
    ).order_by("completed_at").values_list("id", flat=True)
    for session_id in [*completed, *await _ended_early_with_evidence()]:
        try:
            outcome = await seal(deps, session_id)
        except WorkflowError as exc:
            log.info("session %s not sealed: %s", session_id, exc)
            continue
        if not outcome.sealed:
            result.refused.append(session_id)
        elif outcome.complete:
            result.sealed.append(session_id)
        else:
            result.sealed_incomplete.append(session_id)
    return result


async def _ended_early_with_evidence() -> list[UUID]:
    """Aborted or expired, never sealed, and something was recorded. A session purged under
    the retention policy (its tombstone keeps the manifest) is not sealed again."""
    ended = list(ENDED_EARLY)
    started: list[UUID] = await RecordingSession.filter(  # type: ignore[assignment]
        state__in=ended, sealed_at__isnull=True, recording_started_at__isnull=False,
    ).values_list("id", flat=True)
    ids = set(started)
    for model in (Recording, Signature):
        rows: list[UUID] = await model.filter(  # type: ignore[attr-defined,assignment]
            session__state__in=ended, session__sealed_at__isnull=True,
        ).distinct().values_list("session_id", flat=True)
        ids.update(rows)
    if ids:
        purged: list[UUID] = await Tombstone.filter(  # type: ignore[assignment]
            session_id__in=list(ids)).values_list("session_id", flat=True)
        ids -= set(purged)
    return sorted(ids, key=str)
