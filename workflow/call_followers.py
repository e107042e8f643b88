"""What the call does as its session moves (R-13, R-23, R-24): each step's speech is played
into the call when the timeline says a step has started, the agent's voice is listened to for a
step the agent reads, the customer's presence is watched and its breaches hold the reading, and
a room whose session expired is closed. `app/call_bridge.py` wires these followers to the call
hub, the database context and Redis; the behaviour is here.

The followers act on the session's published events (`StepFollower`). They read the session
only for an event that can change what they do (a step starts, the script pauses, an answer
opens, the state moves), only for a session whose call room is on this node (the only
sessions whose events the node subscribes to), and once per such event for all of them
(`Snapshots`): a follower that read the session on every event of every session cost a quarter
of a web process's CPU under 30 concurrent sessions (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from redis.asyncio import Redis

from media.call import CallHub, UnknownSession
from media.call.listen import AudioListener
from media.identity.config import IdentityConfig
from media.identity.presence_host import PresenceHost, PresenceHostError
from media.voice.vad import VoiceActivityDetector, voiced_ms
from models import lean
from models.sessions import RecordingSession, SessionEvent
from workflow import media_events
from workflow.core import WorkflowDeps
from workflow.events import RESUBSCRIBED, ChannelSet, channel_for, subscribe_to
from workflow.media_events import (
    PRESENCE_MARK,
    PRESENCE_STARTED,
    PRESENCE_UNAVAILABLE,
    record_media_event,
)
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
# Presence marks of a stretch without samples (unknown, not a breach).
SAMPLING_MARKS = frozenset({"sampling_lost", "sampling_resumed"})
# States a session reaches without the API closing its call room (the expiry sweep): the room,
# its recorder and presence state are freed when the follower sees them.
CLOSE_ON = frozenset({"expired"})
# Timeline events after which the step listeners follow the session: the agent's voice and
# the customer's spoken answer are listened to (or no longer) for the current step; a
# spot check of liveness that holds the script is run (issue 15).
FOLLOW_VOICE_ON = PLAY_ON | frozenset({"script_paused", "interrupted", "answer_opened",
                                       "script_finished", "aborted", "completed",
                                       "live_liveness_spot_due"})

InDatabase = Callable[[Callable[..., Awaitable[None]]], Callable[..., Any]]


class Snapshots:
    """The sessions of this node's call rooms as last read, shared by the followers: a reading
    serves every event up to the `event_seq` it was read at, so an event that moves the script
    costs one read for all the followers, and the events before it none."""

    def __init__(self) -> None:
        self._read: dict[UUID, RecordingSession] = {}

    async def as_of(self, session_id: UUID, seq: int | None) -> RecordingSession | None:
        """The session as it was after its event `seq` or later (None: read it now)."""
        cached = self._read.get(session_id)
        if cached is not None and seq is not None and cached.event_seq >= seq:
            return cached
        session = await lean.by_pk(RecordingSession, session_id)
        if session is None:
            self._read.pop(session_id, None)
        else:
            self._read[session_id] = session
        return session

    def forget(self, session_id: UUID) -> None:
        self._read.pop(session_id, None)


class StepListener(Protocol):
    """A follower listening to the call for the current step (the agent's voice, the
    customer's spoken answer): told the session as it is after each event that moves it."""

    async def follow(self, session_id: UUID, session: RecordingSession | None) -> None: ...


class PresenceWatcher:
    """R-13 during the call: one presence monitor per room, fed by the hub's video sampler.

    When the customer's media first connects, the reference is loaded
    (`media_events.presence_reference`): the call frame the live liveness run matched against
    the card portrait when there is one, else the live face of the passed identity check (the
    uploaded clip's). When the live run passes later in the call, its matched frame replaces
    the clip's face in the running monitor (`live_face_matched`; the breaches so far go on);
    each ``presence_started`` says which reference it uses (``reference``: ``live_call`` or
    ``liveness_clip``). Without one (identity reported
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
                 engines: Callable[[], Any], in_database: InDatabase) -> None:
        self._hub = hub
        self._deps = deps
        self._engines = engines
        self._in_database = in_database
        self._host: PresenceHost | None = None
        # Rooms already handled: their origin when watched, None when being set up or when
        # there is no reference (logged once).
        self._rooms: dict[str, float | None] = {}
        self._setting_up: set[str] = set()
        # Rooms told of the live call's face while being set up: applied once set up.
        self._live_face_due: set[str] = set()
        # Rooms whose reading is held until the customer is back alone in view.
        self.held: set[str] = set()
        # Each watched room's mark writer (it skips the marks it wrote already).
        self._writers: dict[str, Callable[[list[PresenceMark]], Awaitable[None]]] = {}

    def host(self) -> PresenceHost:
        """The child process that runs the face analysis (also the live liveness judge)."""
        return self._presence_host()

    def _presence_host(self) -> PresenceHost:
        if self._host is None:
            config = getattr(self._engines(), "config", None)
            if not isinstance(config, IdentityConfig):
                raise media_events.NoPresenceReference("the identity engines cannot do presence")
            self._host = PresenceHost(config)
            self._hub().count_helper_process(self._host.pid)  # its CPU is the node's
        return self._host

    async def customer_connected(self, session_id: str) -> None:
        if session_id in self._rooms:
            return  # watching already (the hub follows a rejoin), or decided not to
        self._rooms[session_id] = None
        self._setting_up.add(session_id)
        try:
            await self._set_up(session_id)
        finally:
            self._setting_up.discard(session_id)
        if session_id in self._live_face_due:
            self._live_face_due.discard(session_id)
            await self.live_face_matched(session_id)

    async def _set_up(self, session_id: str) -> None:
        try:
            reference = await media_events.presence_reference(self._deps, UUID(session_id))
            host = self._presence_host()
            sample_fps = await asyncio.to_thread(
                host.open, session_id, reference.image, origin=reference.origin)
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
                on_result=self._in_database(self._writer(session_id)),
            )
        except UnknownSession:  # the room closed meanwhile
            self._rooms.pop(session_id, None)
            await asyncio.to_thread(host.drop, session_id)
            return
        if session_id in self._rooms:
            self._rooms[session_id] = reference.origin
            await record_media_event(self._deps, UUID(session_id), PRESENCE_STARTED,
                                     reference.started())

    async def live_face_matched(self, session_id: str) -> None:
        """The live liveness run matched a call frame against the card portrait and stored it
        (issue 15): presence compares with it from now on. A watched room's monitor takes it
        as its reference (its breaches go on); a room being set up takes it once set up; a
        room whose presence could not start (no clip face) starts now; a room not watched here
        loads it when the customer connects."""
        if session_id in self._setting_up:
            self._live_face_due.add(session_id)
            return
        if session_id not in self._rooms:
            return
        if self._rooms[session_id] is None:  # presence unavailable so far: it can start now
            del self._rooms[session_id]
            await self.customer_connected(session_id)
            return
        try:
            reference = await media_events.presence_reference(self._deps, UUID(session_id))
            if reference.source != "live_call":
                return
            await asyncio.to_thread(self._presence_host().replace_reference, session_id,
                                    reference.image)
        except Exception:
            log.exception("%s: presence keeps comparing with the liveness clip's face",
                          session_id)
            return
        if self._rooms.get(session_id) is not None:
            await record_media_event(self._deps, UUID(session_id), PRESENCE_STARTED,
                                     reference.started())

    async def _unavailable(self, session_id: str, reason: str, detail: str) -> None:
        await record_media_event(self._deps, UUID(session_id), PRESENCE_UNAVAILABLE,
                                 {"reason": reason, "detail": detail[:200]})

    async def room_closed(self, session_id: str) -> None:
        self.held.discard(session_id)
        origin = self._rooms.pop(session_id, None)
        if origin is None or self._host is None:
            self._writers.pop(session_id, None)
            return
        try:
            report = await asyncio.to_thread(self._host.finish, session_id,
                                             time.time() - origin)
        except PresenceHostError as error:
            log.error("%s: no presence report: %s", session_id, error)
            return
        writer = self._writers.pop(session_id, None)
        if writer is not None:  # a stretch at the end without samples: unknown
            await writer([m for m in report.marks if m.type == "sampling_lost"])
        log.info("%s: presence %s (%s), in view %.0f%% of %d samples, %d marks", session_id,
                 "passed" if report.passed else "failed", report.reason_code or "ok",
                 report.in_view_share * 100, report.samples, len(report.marks))

    def shutdown(self) -> None:
        if self._host is not None:
            self._host.shutdown()

    def _writer(self, key: str) -> Callable[[list[PresenceMark]], Awaitable[None]]:
        """Writes a room's marks on the timeline, each once, and holds the reading while a
        breach lasts. ``sampling_lost``/``_resumed`` (a stretch without samples, known only
        afterwards) are written for QA but are no breach: nothing was seen."""
        session_id = UUID(key)
        breaches: set[str] = set()
        written: set[tuple[str, float]] = set()

        async def write(marks: list[PresenceMark]) -> None:
            for mark in marks:
                if (mark.type, mark.at_s) in written:
                    continue
                written.add((mark.type, mark.at_s))
                await record_media_event(self._deps, session_id, PRESENCE_MARK, mark.model_dump(
                    include={"type", "at_s", "message", "faces", "distance"}))
                if mark.type in SAMPLING_MARKS:
                    continue
                before = bool(breaches)
                if mark.type in BREACH_ENDS:
                    breaches.discard(BREACH_ENDS[mark.type])
                else:
                    breaches.add(mark.type)
                if breaches and not before:
                    await self._hold(session_id, mark)
                elif before and not breaches:
                    await self._release(session_id)

        self._writers[key] = write
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
                 vad: Callable[[], VoiceActivityDetector], in_database: InDatabase) -> None:
        self._hub = hub
        self._deps = deps
        self._vad = vad
        self._in_database = in_database
        self._listening: dict[str, tuple[str, AudioListener[int]]] = {}

    async def follow(self, session_id: UUID, session: RecordingSession | None) -> None:
        """The current step (re)started: listen to the agent if the agent reads it."""
        key = str(session_id)
        step = media_events.reading_step(session) if session is not None else None
        current = self._listening.get(key)
        if current is not None:
            if step is not None and current[0] == step.id:
                return
            await self.stop(key)
        if step is None or step.speaker != "agent":
            return
        heard = 0

        def measure(_: float, samples: Any) -> int:
            return voiced_ms(self._vad(), samples)

        async def report(ms: int) -> None:
            nonlocal heard
            heard += ms
            if ms and await media_events.agent_voice(self._deps, session_id, step.id, heard):
                await self.stop(key)

        try:
            listener = self._hub().listen_audio(key, "agent", measure,
                                                on_result=self._in_database(report))
        except UnknownSession:
            return  # nobody joined yet on this node
        self._listening[key] = (step.id, listener)

    async def stop(self, session_id: str) -> None:
        current = self._listening.pop(session_id, None)
        if current is not None:
            await self._hub().stop_listening(session_id, current[1])

    async def forget(self, session_id: str) -> None:
        """The room closed (and closed its listeners)."""
        self._listening.pop(session_id, None)


class StepFollower:
    """Plays each step's speech, closes rooms and follows voices as the session's events are
    published, and catches up from the timeline after a Redis outage (what was published
    meanwhile is lost: without the catch-up a blip would stop the script's speech and leave a
    room of an expired session open). Only the sessions with a call room on this node are
    followed: their channels are subscribed from the first party's connection until the room
    closes, so a node receives no other session's events."""

    def __init__(self, hub: CallHub, deps: WorkflowDeps, speech: SpeechSettings,
                 presence: PresenceWatcher, listeners: tuple[StepListener, ...]) -> None:
        self.hub = hub
        self.deps = deps
        self.speech = speech
        self.presence = presence
        self.listeners = listeners
        self.snapshots = Snapshots()
        # The event channels of the sessions with a room here: subscribed when a party
        # connects, let go when the room closes (not every session's events on every node).
        self.channels = ChannelSet()
        self._seen: dict[UUID, int] = {}  # the last event seq handled per session

    async def run(self, redis: Redis) -> None:
        """Follows the published events until cancelled (in the app's database context)."""
        async for message in subscribe_to(redis, self.channels):
            if message is RESUBSCRIBED:
                try:
                    await self.catch_up()
                except Exception:
                    log.exception("could not catch up with the events missed")
                continue
            await self.on_message(message)

    async def on_message(self, message: dict[str, Any]) -> None:
        """One published event (`workflow.events`): followed when its session's room is here."""
        session_id = UUID(message["channel"].decode().split(":", 1)[1])
        if not self.hub.has_room(str(session_id)):
            return  # nothing to play, listen to or close on this node
        event = json.loads(message["data"])
        if isinstance(event.get("seq"), int):
            self._seen[session_id] = max(self._seen.get(session_id, 0), event["seq"])
        await self.follow(session_id, event)

    async def follow(self, session_id: UUID, event: dict[str, Any]) -> None:
        type_ = event.get("type")
        try:
            if event.get("to_state") in CLOSE_ON:
                # Moved on by a sweep (possibly in another process): free the room.
                await self.hub.close(str(session_id))
                self.snapshots.forget(session_id)
                session = None
            elif type_ in PLAY_ON or type_ in FOLLOW_VOICE_ON:
                seq = event.get("seq")
                session = await self.snapshots.as_of(session_id,
                                                     seq if isinstance(seq, int) else None)
                if type_ in PLAY_ON:
                    await self.play(session_id, session)
            else:
                return
            if type_ in FOLLOW_VOICE_ON:
                for listener in self.listeners:
                    await listener.follow(session_id, session)
        except Exception:
            log.exception("could not follow %s of %s", type_, session_id)

    async def party_connected(self, session_id: UUID, role: str) -> None:
        """A party (re)joined: the listeners follow the current step, and for the customer the
        current step is read (again) from its start, so a step that started before the
        customer's media was up is still heard in full (R-23, R-30). The session's events are
        subscribed to before it is read: what changes it after the reading is heard."""
        await self.channels.add(channel_for(session_id))
        session = await self.snapshots.as_of(session_id, None)
        for listener in self.listeners:
            await listener.follow(session_id, session)
        if role == "customer":
            try:
                await self.play(session_id, session)
            finally:
                await self.presence.customer_connected(str(session_id))

    async def room_closed(self, session_id: UUID) -> None:
        await self.channels.discard(channel_for(session_id))
        self.snapshots.forget(session_id)
        self._seen.pop(session_id, None)

    async def play(self, session_id: UUID, session: RecordingSession | None) -> None:
        """The current step's speech into the call, when this node has the room and the
        customer is alone in view (R-13, R-23)."""
        if session is None or not self.hub.has_room(str(session_id)):
            return  # nobody has joined the call on this node
        if str(session_id) in self.presence.held:
            return  # the customer is not alone in view: played once they are
        clip = await media_events.clip_for(session, self.speech)
        if clip is None:
            return
        try:
            await self.hub.play(str(session_id), clip[0], clip[1])
        except UnknownSession:  # nobody has joined the call yet
            return
        await media_events.speech_started(self.deps, session_id, clip[0])

    async def catch_up(self) -> None:
        """After a lost subscription: the events of this node's rooms written meanwhile, read
        from the timeline and followed as one (closing wins; the current step is played
        once)."""
        for room in self.hub.room_ids():
            session_id = UUID(room)
            missed = await SessionEvent.filter(
                session_id=session_id, seq__gt=self._seen.get(session_id, 0)).order_by(
                "seq").values("seq", "type", "to_state")
            if not missed:
                continue
            self._seen[session_id] = missed[-1]["seq"]
            closing = [e for e in missed if e["to_state"] in CLOSE_ON]
            playing = [e for e in missed if e["type"] in PLAY_ON or e["type"] in FOLLOW_VOICE_ON]
            log.info("session %s: %d events missed while Redis was away; following them", room,
                     len(missed))
            for event in (closing or playing)[-1:]:
                await self.follow(session_id, event)
