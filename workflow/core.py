"""What every workflow operation shares: its dependencies, the row-locked session transaction,
and appending a timeline event (published on Redis once the transaction has committed)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from redis.exceptions import RedisError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from models import lean
from models.sessions import RecordingSession, SessionEvent, SessionState
from security import audit
from security.audit import Actor
from security.crypto import FieldCipher
from storage import ObjectStore
from workflow import event_types
from workflow.errors import Conflict, NotFound
from workflow.event_types import EventType
from workflow.events import EventPublisher
from workflow.states import ACTION_LABELS_ZH, STATE_LABELS_ZH, TRANSITIONS

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkflowSettings:
    invitation_ttl_seconds: int = 24 * 3600
    identity_max_attempts: int = 3
    resume_window_seconds: int = 30 * 60
    stale_session_seconds: int = 7 * 24 * 3600
    max_signature_bytes: int = 512 * 1024
    # A party is reported lost this long after its media stopped (the hub's keep-alive).
    call_keepalive_timeout_seconds: float = 10.0
    # The longest hole in a recorded stream that `complete` lets pass.
    recording_gap_tolerance_seconds: float = 3.0
    # Voice needed before an agent-read step may be answered: this share of the time the text
    # takes at `agent_chars_per_second`, at least `agent_voice_min_seconds`.
    agent_voice_share: float = 0.4
    agent_chars_per_second: float = 4.0
    agent_voice_min_seconds: float = 1.5
    public_url: str = "http://127.0.0.1:8080"
    # Liveness proven in the call before the script may start (workflow/live_liveness.py):
    # required in production; the runs a session may fail before it can never start.
    live_liveness_required: bool = False
    live_liveness_max_attempts: int = 3
    # Single challenges at random step boundaries during the script (issue 15), each holding
    # the next step until it passed (workflow/live_liveness.py).
    live_liveness_spot_checks: int = 0
    # Where the engines' model folders go (Config.cache_dir; None: the engine's default).
    model_cache_dir: Path | None = None


class JobQueue(Protocol):
    """Where the workflow hands slow work (speech rendering, identity engines)."""

    async def enqueue(self, name: str, **kwargs: Any) -> None: ...


@dataclass
class WorkflowDeps:
    settings: WorkflowSettings
    cipher: FieldCipher
    publisher: EventPublisher
    storage: ObjectStore  # evidence objects (storage/): local folder or S3
    seal_key: bytes
    jobs: JobQueue
    clock: Callable[[], datetime] = utcnow


@dataclass
class Unit:
    """One transaction on one session, with the events to publish after it commits."""

    conn: BaseDBAsyncClient
    session: RecordingSession
    deps: WorkflowDeps
    pending: list[dict[str, Any]] = field(default_factory=list)
    # The steps as read: a session's steps are replaced (the rendered speech), never changed in
    # place, so while they are the same list they need not be written again.
    steps_read: list[dict[str, Any]] | None = None

    async def event(
        self, actor: Actor, type_: EventType, data: dict[str, Any] | None = None,
        from_state: str = "", to_state: str = "",
    ) -> SessionEvent:
        """Appends one event; its data must fit the type's payload model (workflow/event_types.py)
        or `InvalidEvent` is raised and nothing is written."""
        data = data or {}
        event_types.check(type_, data)
        self.session.event_seq += 1
        event = SessionEvent(
            session_id=self.session.id, seq=self.session.event_seq, type=str(type_),
            from_state=from_state, to_state=to_state, actor_kind=actor.kind,
            actor_id=actor.id, ip=actor.ip, data=data, at=self.deps.clock(),
        )
        # One written-out INSERT (the ORM's create costs several times its CPU, issue 14); the
        # row's id is not read back: the timeline is ordered and addressed by `seq`.
        await lean.insert_all([event], self.conn)
        self.pending.append(event_payload(event))
        return event

    async def move(
        self, actor: Actor, to_state: SessionState, type_: EventType,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Changes state, appends the event and the audit entry, all in this transaction."""
        from_state = self.session.state
        self.session.state = to_state
        await self.event(actor, type_, data, from_state.value, to_state.value)
        await audit.record(
            self.conn, actor, f"session.{type_}", object_type="session",
            object_id=str(self.session.id),
            details={"from": from_state.value, "to": to_state.value, **(data or {})},
        )

    async def save(self) -> None:
        """The session's row; its steps (the largest column) only when they were replaced."""
        if self.steps_read is not None and self.session.steps is self.steps_read:
            await self.session.save(using_db=self.conn, update_fields=_all_but_steps())
        else:
            await self.session.save(using_db=self.conn)


@functools.cache
def _all_but_steps() -> tuple[str, ...]:
    meta = RecordingSession._meta
    return tuple(name for name in meta.fields_db_projection
                 if name != "steps" and not meta.fields_map[name].pk)


def event_payload(event: SessionEvent) -> dict[str, Any]:
    return {
        "seq": event.seq, "type": event.type, "from_state": event.from_state,
        "to_state": event.to_state, "actor_kind": event.actor_kind, "at": event.at.isoformat(),
        "data": event.data,
    }


def require_state(session: RecordingSession, action: str) -> None:
    """Raises the 409 for an action the session's state does not allow."""
    allowed, _ = TRANSITIONS[action]
    if session.state not in allowed:
        state = STATE_LABELS_ZH[session.state]
        raise Conflict(
            "illegal_transition",
            f"会话当前状态为“{state}”，不能执行“{ACTION_LABELS_ZH[action]}”",
            state=session.state.value, action=action,
            allowed_from=sorted(s.value for s in allowed),
        )


@asynccontextmanager
async def locked(deps: WorkflowDeps, session_id: UUID, action: str | None) -> AsyncIterator[Unit]:
    """A transaction holding the session's row lock (PostgreSQL serialises concurrent
    transitions on one session; SQLite serialises all transactions anyway)."""
    unit: Unit | None = None
    async with in_transaction() as conn:
        # Every transition starts here: the row is read without the ORM's query builder.
        session = await lean.by_pk(RecordingSession, session_id, conn, for_update=True)
        if session is None:
            raise NotFound("session_not_found", "找不到该录制会话")
        if action is not None:
            require_state(session, action)
        unit = Unit(conn, session, deps, steps_read=session.steps)
        yield unit
        await unit.save()
    if not unit.pending:
        return
    try:
        await deps.publisher.publish_all(session_id, unit.pending)
    except (ConnectionError, OSError, RedisError):
        # The events are committed in the database; live pages catch up by re-reading them.
        log.warning("could not publish events %s of session %s",
                    [payload["seq"] for payload in unit.pending], session_id)
