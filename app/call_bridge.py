"""Wiring the call hub (media/call) to the sessions: signalling goes through the API, hub
events go to workflow.media_events, and the session's published events go to the call's
followers (`workflow.call_followers`: each step's speech played into the call, the agent's voice
and the customer's spoken answer listened to, the customer's presence watched, R-13, R-23,
R-24). Before the script, the customer's liveness is checked on the call's own frames when the
policy requires it (R-12, `app.live_liveness`). This module only builds and connects them: the
hub, the database context of the hub's callbacks, Redis, the node's cluster membership. One hub
per process; a session's two parties meet in the process that holds its room (embedded default:
the only one)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiohttp import web

from api.keys import CALL_HUB, CONFIG, DATABASE, DEPS, IDENTITY, REDIS, ROOMS
from app.live_liveness import LiveLivenessWatcher
from app.spoken_answers import SpokenAnswerWatcher
from infra.call_rooms import Rooms, call_admission
from infra.cluster import Cluster, beat, default_node
from infra.database import activate, deactivate
from infra.tasks import cancel_and_wait
from media.call import CallHub, CallHubConfig
from media.call.events import ClipFinished, PartyConnected, PartyLost
from media.call.hub import RoomClosed
from media.recording import SegmentWritten
from media.recording.spool import Spool
from media.voice.asr import AsrConfig
from media.voice.vad import VoiceActivityDetector, load_vad
from workflow import media_events
from workflow.call_followers import AgentVoiceWatcher, PresenceWatcher, StepFollower
from workflow.core import WorkflowDeps
from workflow.script_speech import SpeechSettings

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Bridge:
    hub: CallHub
    presence: PresenceWatcher
    voice: AgentVoiceWatcher
    spoken: SpokenAnswerWatcher
    rooms: Rooms
    live: LiveLivenessWatcher
    steps: StepFollower


def build_hub(app: web.Application, speech: SpeechSettings, cluster: Cluster) -> Bridge:
    config = app[CONFIG]
    deps: WorkflowDeps = app[DEPS]

    # Segments are written into this node's spool and registered once stored (storage/).
    spool = Spool(config.spool_dir, cluster.node.node_id, deps.storage)

    async def on_segment(e: SegmentWritten) -> None:
        try:
            e = await spool.store_segment(e)
        except Exception:
            log.exception("segment %s of %s could not be stored; it stays in %s", e.path,
                          e.session_id, spool.root)
            return
        await media_events.segment_written(
            deps, UUID(e.session_id), e.kind, e.segment, e.path, e.sha256, e.size_bytes,
            e.duration_ms, e.started_at, e.ended_at)

    async def on_clip(e: ClipFinished) -> None:
        await media_events.clip_finished(deps, UUID(e.session_id), e.clip_id, e.played_ms,
                                         e.duration_ms, e.complete)

    async def on_lost(e: PartyLost) -> None:
        await media_events.party_lost(deps, UUID(e.session_id), e.role, e.reason)

    database = app[DATABASE]
    in_database = functools.partial(_in_database, database)
    presence = PresenceWatcher(lambda: hub, deps, app[IDENTITY], in_database)
    vad = _shared_vad()
    voice = AgentVoiceWatcher(lambda: hub, deps, vad, in_database)
    spoken = SpokenAnswerWatcher(lambda: hub, deps, vad, AsrConfig(), database,
                                 config.settings.spoken_answer_buttons_after_seconds)
    # R-12 in the call: judged in the presence host's child (dlib off the hub's GIL).
    # Its matched call frame becomes the presence reference (issue 15).
    live = LiveLivenessWatcher(lambda: hub, deps, app[IDENTITY], presence.host,
                               in_database,
                               retry_seconds=config.settings.live_liveness_retry_seconds,
                               on_live_face=presence.live_face_matched)

    async def on_connected(e: PartyConnected) -> None:
        await media_events.party_connected(deps, UUID(e.session_id), e.role,
                                           recording=hub.config.record)
        await steps.party_connected(UUID(e.session_id), e.role)
        await live.parties_changed(e.session_id)  # both in: the live liveness run

    async def on_room_closed(e: RoomClosed) -> None:
        await live.room_closed(e.session_id)
        await voice.forget(e.session_id)
        spoken.forget(e.session_id)
        spool.forget(e.session_id)
        await rooms.room_closed(e.session_id)
        await presence.room_closed(e.session_id)
        await steps.room_closed(UUID(e.session_id))

    s = config.settings
    hub = CallHub(
        CallHubConfig(storage_root=spool.root, segment_seconds=s.call_segment_seconds,
                      keepalive_timeout=s.call_keepalive_timeout_seconds,
                      include_loopback=s.call_include_loopback,
                      admission=call_admission(s)),
        on_segment=_in_database(database, on_segment),
        on_clip_finished=_in_database(database, on_clip),
        on_party_lost=_in_database(database, on_lost),
        on_party_connected=_in_database(database, on_connected),
        on_room_closed=_in_database(database, on_room_closed),
    )
    rooms = Rooms(hub, cluster, deps, spool)
    steps = StepFollower(hub, deps, speech, presence, (voice, spoken, live))
    return Bridge(hub, presence, voice, spoken, rooms, live, steps)


def _shared_vad() -> Callable[[], VoiceActivityDetector]:
    """The voice activity detector, loaded on first use (Silero's ONNX model)."""
    loaded: list[VoiceActivityDetector] = []

    def get() -> VoiceActivityDetector:
        if not loaded:
            loaded.append(load_vad("silero"))
        return loaded[0]

    return get


def call_context(speech: SpeechSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        s = app[CONFIG].settings
        cluster = Cluster(app[REDIS], default_node(s.host, s.port, s.node_id, s.node_url),
                          ttl_seconds=s.node_ttl_seconds)
        await cluster.heartbeat()
        bridge = build_hub(app, speech, cluster)
        hub, presence = bridge.hub, bridge.presence
        app[CALL_HUB] = hub
        app[ROOMS] = bridge.rooms
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_in_context(app, bridge.steps.run(app[REDIS]))),
                 asyncio.create_task(beat(cluster, s.node_ttl_seconds / 3, stop)),
                 asyncio.create_task(_in_context(app, cluster.serve_commands(
                     bridge.rooms.on_command))),
                 asyncio.create_task(_in_context(app, bridge.rooms.watch(
                     s.node_ttl_seconds / 2)))]
        try:
            yield
        finally:
            stop.set()
            # Bounded: a task whose cancellation was swallowed must not hold the shutdown.
            await asyncio.gather(*(cancel_and_wait(task, f"call task {task.get_name()}")
                                   for task in tasks))
            await bridge.live.shutdown()
            await hub.shutdown()  # closes (and releases) every room of this node
            await cluster.leave()
            await cluster.close()
            await asyncio.to_thread(presence.shutdown)
            await asyncio.to_thread(bridge.spoken.shutdown)

    return context


async def _in_context(app: web.Application, work: Awaitable[None]) -> None:
    """Background work of the call that reads the database (in the app's Tortoise context)."""
    token = activate(app[DATABASE])
    try:
        await work
    finally:
        deactivate(token)
