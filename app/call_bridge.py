"""Wiring the call hub (media/call) to the sessions: signalling goes through the API, hub
events go to workflow.media_events, and each step's speech is played into the call when the
session's timeline says a step has started (R-23, R-24). While the customer is connected, the
hub samples the customer's video about once a second for the presence monitor, whose marks go
on the timeline (R-13, `PresenceWatcher`). Before the script, the customer's liveness is checked
on the call's own frames when the policy requires it (R-12, `app.live_liveness`). One hub per
process; a session's two parties meet in the process that holds its room (embedded default: the
only one)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from aiohttp import web

from api.keys import CALL_HUB, CONFIG, DATABASE, DEPS, IDENTITY, REDIS, ROOMS
from app.live_liveness import LiveLivenessWatcher
from app.spoken_answers import SpokenAnswerWatcher
from infra.call_rooms import Rooms, call_admission
from infra.cluster import Cluster, beat, default_node
from infra.database import activate, deactivate
from media.call import CallHub, CallHubConfig, UnknownSession
from media.call.events import ClipFinished, PartyConnected, PartyLost
from media.call.hub import RoomClosed
from media.call.listen import AudioListener
from media.identity.config import IdentityConfig
from media.identity.presence_host import PresenceHost, PresenceHostError
from media.recording import SegmentWritten
from media.recording.spool import Spool
from media.voice.asr import AsrConfig
from media.voice.vad import VoiceActivityDetector, load_vad, voiced_ms
from models.sessions import RecordingSession, SessionEvent
from qa.timeline import (
    PRESENCE_MARK,
    PRESENCE_STARTED,
    PRESENCE_UNAVAILABLE,
    record_media_event,
)
from workflow import media_events
from workflow.core import WorkflowDeps
from workflow.events import ALL_SESSIONS, RESUBSCRIBED, subscribe
from workflow.script_speech import SpeechSettings

if TYPE_CHECKING:  # the identity engines load in the presence process, not with the web app
    from media.identity.results import PresenceMark

log = logging.getLogger(__name__)
# Timeline events after which the current step's speech is (re)played.
PLAY_ON = frozenset({"script_started", "step_started", "script_resumed", "call_resumed",
                     "presence_restored", "step_replay_requested"})
# Presence marks that end a breach, and the breach each ends.
BREACH_ENDS = {"customer_returned": "customer_left", "second_face_gone": "second_face_appeared",
               "face_restored": "face_changed"}
# States a session reaches without the API closing its call room (the expiry sweep): the room,
# its recorder and presence state are freed when the follower sees them.
CLOSE_ON = frozenset({"expired"})
# Timeline events after which the agent's voice is listened to (or no longer) for the current
# step.
FOLLOW_VOICE_ON = PLAY_ON | frozenset({"script_paused", "interrupted", "answer_opened",
                                       "script_finished", "aborted", "completed"})


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
        # Rooms whose reading is held until the customer is back alone in view.
        self.held: set[str] = set()

    def host(self) -> PresenceHost:
        """The child process that runs the face analysis (also the live liveness judge)."""
        return self._presence_host()

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
        except media_events.NoPresenceReference as reason:
            # Fails closed: the timeline says so and QA raises a critical finding.
            log.warning("%s: customer presence not checked during the call (R-13): %s",
                        session_id, reason)
            await self._unavailable(session_id, "没有经核验的客户本人人脸，通话中无法核验本人在场",
                                    str(reason))
            return
        except Exception as error:
            log.exception("%s: customer presence not checked during the call (R-13)",
                          session_id)
            await self._unavailable(session_id, "在场核验引擎不可用，通话中未能核验本人在场",
                                    f"{type(error).__name__}: {error}")
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
            await record_media_event(self._deps, UUID(session_id), PRESENCE_STARTED,
                                     {"attempt": reference.attempt})

    async def _unavailable(self, session_id: str, reason: str, detail: str) -> None:
        await record_media_event(self._deps, UUID(session_id), PRESENCE_UNAVAILABLE,
                                 {"reason": reason, "detail": detail[:200]})

    async def room_closed(self, session_id: str) -> None:
        self.held.discard(session_id)
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
        breaches: set[str] = set()

        async def write(marks: list[PresenceMark]) -> None:
            for mark in marks:
                await record_media_event(self._deps, session_id, PRESENCE_MARK, mark.model_dump(
                    include={"type", "at_s", "message", "faces", "distance"}))
                before = bool(breaches)
                if mark.type in BREACH_ENDS:
                    breaches.discard(BREACH_ENDS[mark.type])
                else:
                    breaches.add(mark.type)
                if breaches and not before:
                    await self._hold(session_id, mark)
                elif before and not breaches:
                    await self._release(session_id)

        return write

    async def _hold(self, session_id: UUID, mark: PresenceMark) -> None:
        """A breach began (the customer left, a second face, another face): the reading stops
        and the step's answer closes until the customer is back alone (R-13); the console
        shows the alert from the timeline."""
        self.held.add(str(session_id))
        await media_events.presence_hold(self._deps, session_id, mark.type, mark.message)
        with contextlib.suppress(UnknownSession):
            await self._hub().stop_clip(str(session_id))

    async def _release(self, session_id: UUID) -> None:
        self.held.discard(str(session_id))
        await media_events.presence_release(self._deps, session_id)


class AgentVoiceWatcher:
    """R-24 for a step the agent reads in person: while it is the current step, the hub decodes
    the agent's voice and the time heard speaking (voice activity detection) is reported to the
    workflow, which opens the step's answer once it is enough (`media_events.agent_voice`).
    One listener per room at a time; a step change closes it."""

    def __init__(self, hub: Callable[[], CallHub], deps: WorkflowDeps,
                 vad: Callable[[], VoiceActivityDetector], database: Any) -> None:
        self._hub = hub
        self._deps = deps
        self._vad = vad
        self._database = database
        self._listening: dict[str, tuple[str, AudioListener[int]]] = {}

    async def follow(self, session_id: UUID) -> None:
        """The current step (re)started: listen to the agent if the agent reads it."""
        key = str(session_id)
        session = await RecordingSession.get_or_none(id=session_id)
        step = media_events.reading_step(session) if session is not None else None
        current = self._listening.get(key)
        if current is not None:
            if step is not None and current[0] == step["id"]:
                return
            await self.stop(key)
        if step is None or step.get("speaker") != "agent":
            return
        heard = 0

        def measure(_: float, samples: Any) -> int:
            return voiced_ms(self._vad(), samples)

        async def report(ms: int) -> None:
            nonlocal heard
            heard += ms
            if ms and await media_events.agent_voice(self._deps, session_id, step["id"], heard):
                await self.stop(key)

        try:
            listener = self._hub().listen_audio(key, "agent", measure,
                                                on_result=_in_database(self._database, report))
        except UnknownSession:
            return  # nobody joined yet on this node
        self._listening[key] = (step["id"], listener)

    async def stop(self, session_id: str) -> None:
        current = self._listening.pop(session_id, None)
        if current is not None:
            await self._hub().stop_listening(session_id, current[1])

    async def forget(self, session_id: str) -> None:
        """The room closed (and closed its listeners)."""
        self._listening.pop(session_id, None)


@dataclass(frozen=True)
class Bridge:
    hub: CallHub
    presence: PresenceWatcher
    voice: AgentVoiceWatcher
    spoken: SpokenAnswerWatcher
    rooms: Rooms
    live: LiveLivenessWatcher


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
    presence = PresenceWatcher(lambda: hub, deps, app[IDENTITY], database)
    vad = _shared_vad()
    voice = AgentVoiceWatcher(lambda: hub, deps, vad, database)
    spoken = SpokenAnswerWatcher(lambda: hub, deps, vad, AsrConfig(), database,
                                 config.settings.spoken_answer_buttons_after_seconds)
    # R-12 in the call: judged in the presence host's child (dlib off the hub's GIL).
    live = LiveLivenessWatcher(lambda: hub, deps, app[IDENTITY], presence.host,
                               functools.partial(_in_database, database),
                               retry_seconds=config.settings.live_liveness_retry_seconds)

    async def on_connected(e: PartyConnected) -> None:
        # The customer (re)joined: the current step is read (again) from its start, so a step
        # that started before the customer's media was up is still heard in full.
        await media_events.party_connected(deps, UUID(e.session_id), e.role,
                                           recording=hub.config.record)
        await voice.follow(UUID(e.session_id))
        await spoken.follow(UUID(e.session_id))
        if e.role == "customer":
            try:
                await play_current_step(hub, deps, speech, UUID(e.session_id), presence.held)
            finally:
                await presence.customer_connected(e.session_id)
        await live.parties_changed(e.session_id)  # both in: the live liveness run

    async def on_room_closed(e: RoomClosed) -> None:
        await live.room_closed(e.session_id)
        await voice.forget(e.session_id)
        spoken.forget(e.session_id)
        spool.forget(e.session_id)
        await rooms.room_closed(e.session_id)
        await presence.room_closed(e.session_id)

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
    return Bridge(hub, presence, voice, spoken, rooms, live)


def _shared_vad() -> Callable[[], VoiceActivityDetector]:
    """The voice activity detector, loaded on first use (Silero's ONNX model)."""
    loaded: list[VoiceActivityDetector] = []

    def get() -> VoiceActivityDetector:
        if not loaded:
            loaded.append(load_vad("silero"))
        return loaded[0]

    return get


async def play_current_step(
    hub: CallHub, deps: WorkflowDeps, speech: SpeechSettings, session_id: UUID,
    held: set[str] | frozenset[str] = frozenset(),
) -> None:
    if not hub.has_room(str(session_id)):
        return  # nobody has joined the call on this node
    if str(session_id) in held:
        return  # the customer is not alone in view: played once they are
    session = await RecordingSession.get_or_none(id=session_id)
    clip = await media_events.clip_for(session, speech) if session else None
    if clip is None:
        return
    try:
        await hub.play(str(session_id), clip[0], clip[1])
    except UnknownSession:  # nobody has joined the call yet
        return
    await media_events.speech_started(deps, session_id, clip[0])


async def _follow_steps(app: web.Application, bridge: Bridge, speech: SpeechSettings) -> None:
    """Plays each step's speech, closes rooms and follows voices as the session's events are
    published, and catches up from the timeline after a Redis outage (what was published
    meanwhile is lost: without the catch-up a blip would stop the script's speech and leave a
    room of an expired session open)."""
    seen: dict[UUID, int] = {}  # the last event seq handled per session
    token = activate(app[DATABASE])
    try:
        async for message in subscribe(app[REDIS], patterns=(ALL_SESSIONS,)):
            if message is RESUBSCRIBED:
                try:
                    await _catch_up(app, bridge, speech, seen)
                except Exception:
                    log.exception("could not catch up with the events missed")
                continue
            event = json.loads(message["data"])
            session_id = UUID(message["channel"].decode().split(":", 1)[1])
            if isinstance(event.get("seq"), int):
                seen[session_id] = max(seen.get(session_id, 0), event["seq"])
            await _follow(app, bridge, speech, session_id, event)
    finally:
        deactivate(token)


async def _follow(app: web.Application, bridge: Bridge, speech: SpeechSettings,
                  session_id: UUID, event: dict[str, Any]) -> None:
    try:
        if event.get("to_state") in CLOSE_ON:
            # Moved on by a sweep (possibly in another process): free the room.
            await bridge.hub.close(str(session_id))
        elif event.get("type") in PLAY_ON:
            await play_current_step(bridge.hub, app[DEPS], speech, session_id,
                                    bridge.presence.held)
        if event.get("type") in FOLLOW_VOICE_ON:
            await bridge.voice.follow(session_id)
            await bridge.spoken.follow(session_id)
    except Exception:
        log.exception("could not follow %s of %s", event.get("type"), session_id)


async def _catch_up(app: web.Application, bridge: Bridge, speech: SpeechSettings,
                    seen: dict[UUID, int]) -> None:
    """After a lost subscription: the events of this node's rooms written meanwhile, read from
    the timeline and followed as one (closing wins; the current step is played once)."""
    for room in bridge.hub.room_ids():
        session_id = UUID(room)
        missed = await SessionEvent.filter(
            session_id=session_id, seq__gt=seen.get(session_id, 0)).order_by("seq").values(
            "seq", "type", "to_state")
        if not missed:
            continue
        seen[session_id] = missed[-1]["seq"]
        closing = [e for e in missed if e["to_state"] in CLOSE_ON]
        playing = [e for e in missed if e["type"] in PLAY_ON or e["type"] in FOLLOW_VOICE_ON]
        log.info("session %s: %d events missed while Redis was away; following them", room,
                 len(missed))
        for event in (closing or playing)[-1:]:
            await _follow(app, bridge, speech, session_id, event)


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
        tasks = [asyncio.create_task(_follow_steps(app, bridge, speech)),
                 asyncio.create_task(beat(cluster, s.node_ttl_seconds / 3, stop)),
                 asyncio.create_task(_in_context(app, cluster.serve_commands(
                     bridge.rooms.on_command))),
                 asyncio.create_task(_in_context(app, bridge.rooms.watch(
                     s.node_ttl_seconds / 2)))]
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            # Bounded: a task whose cancellation was swallowed must not hold the shutdown.
            _, stuck = await asyncio.wait(tasks, timeout=10)
            for task in stuck:
                log.error("call background task %s did not stop within 10 s", task.get_name())
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
