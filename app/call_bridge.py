"""Wiring the call hub (media/call) to the sessions: signalling goes through the API, hub
events go to workflow.media_events, and each step's speech is played into the call when the
session's timeline says a step has started (R-23, R-24). While the customer is connected, the
hub samples the customer's video about once a second for the presence monitor, whose marks go
on the timeline (R-13, `PresenceWatcher`). One hub per process; a session's two parties meet in
the process that holds its room (embedded default: the only one)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from aiohttp import web

from api.keys import CALL_HUB, CONFIG, DATABASE, DEPS, IDENTITY, REDIS
from app.database import activate, deactivate
from media.call import CallHub, CallHubConfig, UnknownSession
from media.call.events import ClipFinished, PartyConnected, PartyLost
from media.call.hub import RoomClosed
from media.identity.config import IdentityConfig
from media.identity.presence_host import PresenceHost, PresenceHostError
from media.recording import SegmentWritten
from models.sessions import RecordingSession
from qa.timeline import PRESENCE_MARK, record_media_event
from scripts_library.speech import SpeechSettings
from workflow import media_events
from workflow.core import WorkflowDeps

if TYPE_CHECKING:  # the identity engines load in the presence process, not with the web app
    from media.identity.results import PresenceMark

log = logging.getLogger(__name__)
# Timeline events after which the current step's speech is (re)played.
PLAY_ON = frozenset({"script_started", "step_started", "script_resumed", "call_resumed"})
# States a session reaches without the API closing its call room (the expiry sweep): the room,
# its recorder and presence state are freed when the follower sees them.
CLOSE_ON = frozenset({"expired"})


def _in_database(database: Any, handler: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """Hub callbacks run in the hub's own tasks: give them the app's database context."""

    async def run(event: Any) -> None:
        token = activate(database)
        try:
            await handler(event)
        except Exception:
            log.exception("handling %s failed", type(event).__name__)
        finally:
            deactivate(token)

    return run


class PresenceWatcher:
    """R-13 during the call: one presence monitor per room, fed by the hub's video sampler.

    When the customer's media first connects, the reference is loaded: the live face of the
    passed identity check (`media_events.presence_reference`). Without one (identity reported
    without the engines' evidence, engines unavailable, no face in it) this is logged once for
    the room and nothing is sampled. Otherwise the hub samples the customer's video (key frames
    only, ~`PresenceConfig.sample_fps`, following rejoins) and each mark is written to the
    timeline as ``presence_mark`` ``{type, at_s, message, faces, distance}``, ``at_s`` in
    seconds from ``recording_started_at`` — what `qa.timeline` reads for the R-13 checks. When
    the room closes the monitor's report is logged: QA derives the share in view from the
    marks, so it is not stored.

    The monitors run in a child process (`PresenceHost`, built from the identity engines'
    configuration): face analysis holds the GIL and would stall the hub's event loop.
    """

    def __init__(self, hub: Callable[[], CallHub], deps: WorkflowDeps,
                 engines: Callable[[], Any], database: Any) -> None:
        self._hub = hub
        self._deps = deps
        self._engines = engines
        self._database = database
        self._host: PresenceHost | None = None
        # Rooms already handled: their origin when watched, None when being set up or when
        # there is no reference (logged once).
        self._rooms: dict[str, float | None] = {}

    def _presence_host(self) -> PresenceHost:
        if self._host is None:
            config = getattr(self._engines(), "config", None)
            if not isinstance(config, IdentityConfig):
                raise media_events.NoPresenceReference("the identity engines cannot do presence")
            self._host = PresenceHost(config)
        return self._host

    async def customer_connected(self, session_id: str) -> None:
        if session_id in self._rooms:
            return  # watching already (the hub follows a rejoin), or decided not to
        self._rooms[session_id] = None
        try:
            reference = await media_events.presence_reference(self._deps, UUID(session_id))
            host = self._presence_host()
            sample_fps = await asyncio.to_thread(
                host.open, session_id, reference.image, max(time.time() - reference.origin, 0)
            )
        except (media_events.NoPresenceReference, PresenceHostError) as reason:
            log.warning("%s: customer presence not checked during the call (R-13): %s",
                        session_id, reason)
            return
        except Exception:
            log.exception("%s: customer presence not checked during the call (R-13)",
                          session_id)
            return
        try:
            self._hub().watch_video(
                # Runs in the hub's sampling thread (one sample at a time per room) and waits
                # for the child process.
                session_id, "customer", functools.partial(host.add_frame, session_id),
                sample_fps=sample_fps, origin=reference.origin,
                on_result=_in_database(self._database, self._writer(UUID(session_id))),
            )
        except UnknownSession:  # the room closed meanwhile
            self._rooms.pop(session_id, None)
            await asyncio.to_thread(host.drop, session_id)
            return
        if session_id in self._rooms:
            self._rooms[session_id] = reference.origin

    async def room_closed(self, session_id: str) -> None:
        origin = self._rooms.pop(session_id, None)
        if origin is None or self._host is None:
            return
        try:
            report = await asyncio.to_thread(self._host.finish, session_id,
                                             time.time() - origin)
        except PresenceHostError as error:
            log.error("%s: no presence report: %s", session_id, error)
            return
        log.info("%s: presence %s (%s), in view %.0f%% of %d samples, %d marks", session_id,
                 "passed" if report.passed else "failed", report.reason_code or "ok",
                 report.in_view_share * 100, report.samples, len(report.marks))

    def shutdown(self) -> None:
        if self._host is not None:
            self._host.shutdown()

    def _writer(self, session_id: UUID) -> Callable[[list[PresenceMark]], Awaitable[None]]:
        async def write(marks: list[PresenceMark]) -> None:
            for mark in marks:
                await record_media_event(self._deps, session_id, PRESENCE_MARK, mark.model_dump(
                    include={"type", "at_s", "message", "faces", "distance"}))

        return write


def build_hub(app: web.Application, speech: SpeechSettings) -> tuple[CallHub, PresenceWatcher]:
    config = app[CONFIG]
    deps: WorkflowDeps = app[DEPS]

    async def on_segment(e: SegmentWritten) -> None:
        await media_events.segment_written(
            deps, UUID(e.session_id), e.kind, e.segment, e.path, e.sha256, e.size_bytes,
            e.duration_ms, e.started_at, e.ended_at)

    async def on_clip(e: ClipFinished) -> None:
        await media_events.clip_finished(deps, UUID(e.session_id), e.clip_id, e.played_ms,
                                         e.duration_ms, e.complete)

    async def on_lost(e: PartyLost) -> None:
        await media_events.party_lost(deps, UUID(e.session_id), e.role, e.reason)

    database = app[DATABASE]
    presence = PresenceWatcher(lambda: hub, deps, app[IDENTITY], database)

    async def on_connected(e: PartyConnected) -> None:
        # The customer (re)joined: the current step is read (again) from its start, so a step
        # that started before the customer's media was up is still heard in full.
        if e.role == "customer":
            try:
                await play_current_step(hub, deps, speech, UUID(e.session_id))
            finally:
                await presence.customer_connected(e.session_id)

    async def on_room_closed(e: RoomClosed) -> None:
        await presence.room_closed(e.session_id)

    s = config.settings
    hub = CallHub(
        CallHubConfig(storage_root=deps.storage.root, segment_seconds=s.call_segment_seconds,
                      keepalive_timeout=s.call_keepalive_timeout_seconds,
                      include_loopback=s.call_include_loopback),
        on_segment=_in_database(database, on_segment),
        on_clip_finished=_in_database(database, on_clip),
        on_party_lost=_in_database(database, on_lost),
        on_party_connected=_in_database(database, on_connected),
        on_room_closed=_in_database(database, on_room_closed),
    )
    return hub, presence


async def play_current_step(
    hub: CallHub, deps: WorkflowDeps, speech: SpeechSettings, session_id: UUID
) -> None:
    session = await RecordingSession.get_or_none(id=session_id)
    clip = media_events.clip_for(session, speech) if session else None
    if clip is None:
        return
    try:
        await hub.play(str(session_id), clip[0], clip[1])
    except UnknownSession:  # nobody has joined the call yet
        return
    await media_events.speech_started(deps, session_id, clip[0])


async def _follow_steps(app: web.Application, hub: CallHub, speech: SpeechSettings) -> None:
    pubsub = app[REDIS].pubsub()
    await pubsub.psubscribe("session-events:*")
    token = activate(app[DATABASE])
    try:
        async for message in pubsub.listen():
            if message.get("type") != "pmessage":
                continue
            event = json.loads(message["data"])
            session_id = UUID(message["channel"].decode().split(":", 1)[1])
            try:
                if event.get("to_state") in CLOSE_ON:
                    # Moved on by a sweep (possibly in another process): free the room.
                    await hub.close(str(session_id))
                elif event.get("type") in PLAY_ON:
                    await play_current_step(hub, app[DEPS], speech, session_id)
            except Exception:
                log.exception("could not follow %s of %s", event.get("type"), session_id)
    finally:
        deactivate(token)
        await pubsub.aclose()


def call_context(speech: SpeechSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        hub, presence = build_hub(app, speech)
        app[CALL_HUB] = hub
        follower = asyncio.create_task(_follow_steps(app, hub, speech))
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await hub.shutdown()
            await asyncio.to_thread(presence.shutdown)

    return context
