"""Wiring the call hub (media/call) to the sessions: signalling goes through the API, hub
events go to workflow.media_events, and each step's speech is played into the call when the
session's timeline says a step has started (R-23, R-24). One hub per process; a session's two
parties meet in the process that holds its room (embedded default: the only one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web

from api.keys import CALL_HUB, CONFIG, DATABASE, DEPS, REDIS
from app.database import activate, deactivate
from media.call import CallHub, CallHubConfig, UnknownSession
from media.call.events import ClipFinished, PartyConnected, PartyLost
from media.recording import SegmentWritten
from models.sessions import RecordingSession
from scripts_library.speech import SpeechSettings
from workflow import media_events
from workflow.core import WorkflowDeps

log = logging.getLogger(__name__)
# Timeline events after which the current step's speech is (re)played.
PLAY_ON = frozenset({"script_started", "step_started", "script_resumed", "call_resumed"})


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


def build_hub(app: web.Application, speech: SpeechSettings) -> CallHub:
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

    async def on_connected(e: PartyConnected) -> None:
        # The customer (re)joined: the current step is read (again) from its start, so a step
        # that started before the customer's media was up is still heard in full.
        if e.role == "customer":
            await play_current_step(hub, deps, speech, UUID(e.session_id))

    database = app[DATABASE]
    s = config.settings
    hub = CallHub(
        CallHubConfig(storage_root=deps.storage.root, segment_seconds=s.call_segment_seconds,
                      keepalive_timeout=s.call_keepalive_timeout_seconds,
                      include_loopback=s.call_include_loopback),
        on_segment=_in_database(database, on_segment),
        on_clip_finished=_in_database(database, on_clip),
        on_party_lost=_in_database(database, on_lost),
        on_party_connected=_in_database(database, on_connected),
    )
    return hub


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
            if event.get("type") not in PLAY_ON:
                continue
            session_id = UUID(message["channel"].decode().split(":", 1)[1])
            try:
                await play_current_step(hub, app[DEPS], speech, session_id)
            except Exception:
                log.exception("could not play the step of %s", session_id)
    finally:
        deactivate(token)
        await pubsub.aclose()


def call_context(speech: SpeechSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        hub = build_hub(app, speech)
        app[CALL_HUB] = hub
        follower = asyncio.create_task(_follow_steps(app, hub, speech))
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await hub.shutdown()

    return context
