"""What the call hub reports, applied to the session (R-23, R-24, R-30): recorded segments are
registered, the parties' media connections are kept on the session (the script starts only
with both), every TTS clip's outcome goes on the timeline (played in full or cut), a step's
answer opens once its speech has played in full to the connected customer (or, for a step the
agent reads, once the agent was heard long enough), a step that needs no answer moves on once
its speech has played in full, and a lost party interrupts the call; the presence monitor's
reference (R-13) is the verified live face. The hub itself knows nothing of sessions;
`app/call_bridge.py` wires it to this module and to `workflow.call_followers`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from models.sessions import AnswerValue, IdentityCheck, RecordingSession, SessionState
from scripts_library.render import SessionStep
from security.audit import Actor
from workflow import call, customer_controls, live_liveness
from workflow.core import Unit, WorkflowDeps, WorkflowSettings, locked
from workflow.errors import WorkflowError
from workflow.event_types import EventType
from workflow.evidence import EvidenceStore
from workflow.script_speech import SpeechSettings
from workflow.states import CALL_STATES
from workflow.steps import at_current, current

log = logging.getLogger(__name__)
MEDIA = Actor.system("media")
# Facts of the call written on the timeline in any state (`record_media_event`).
CLIP_FINISHED = EventType.TTS_PLAYED
PRESENCE_MARK = EventType.PRESENCE_MARK
PRESENCE_STARTED = EventType.PRESENCE_STARTED
PRESENCE_UNAVAILABLE = EventType.PRESENCE_UNAVAILABLE
MEDIA_EVENT_TYPES = frozenset({CLIP_FINISHED, PRESENCE_MARK, PRESENCE_STARTED,
                               PRESENCE_UNAVAILABLE})


async def record_media_event(deps: WorkflowDeps, session_id: UUID, type_: EventType,
                             data: dict[str, Any], actor: Actor | None = None) -> None:
    """Appends a presence (or clip) fact to the session's timeline, in any state: a late
    report after the call ended is still evidence (R-13; read by `qa.timeline`)."""
    if type_ not in MEDIA_EVENT_TYPES:
        raise ValueError(f"not a media event type: {type_}")
    async with locked(deps, session_id, None) as unit:
        await unit.event(actor or MEDIA, type_, data)


async def segment_written(
    deps: WorkflowDeps, session_id: UUID, kind: str, segment: int, path: str, sha256: str,
    size_bytes: int, duration_ms: int, started_at: datetime, ended_at: datetime | None,
) -> None:
    try:
        await call.register_recording(deps, MEDIA, session_id, call.NewRecording(
            kind=kind, segment=segment, path=path, sha256=sha256, size_bytes=size_bytes,
            duration_ms=duration_ms, started_at=started_at, ended_at=ended_at,
        ))
    except WorkflowError as exc:
        # The file stays on disk; sealing would list it as added, so make it loud.
        log.error("segment %s/%s/%s not registered: %s", session_id, kind, segment, exc)


async def party_connected(deps: WorkflowDeps, session_id: UUID, role: str,
                          recording: bool) -> None:
    """A party's media is up (and recorded when the hub records): kept on the session and on
    the timeline, where `workflow.coverage` reads when an interrupted party was back."""
    async with locked(deps, session_id, None) as unit:
        if unit.session.state not in CALL_STATES | {SessionState.INTERRUPTED}:
            return
        parties = dict(unit.session.call_parties or {})
        parties[role] = {"at": deps.clock().isoformat(), "recording": recording}
        unit.session.call_parties = parties
        await unit.event(MEDIA, EventType.PARTY_CONNECTED, {"role": role, "recording": recording})


async def _forget_party(deps: WorkflowDeps, session_id: UUID, role: str, reason: str) -> None:
    async with locked(deps, session_id, None) as unit:
        parties = dict(unit.session.call_parties or {})
        if parties.pop(role, None) is None:
            return
        unit.session.call_parties = parties
        await unit.event(MEDIA, EventType.PARTY_LOST, {"role": role, "reason": reason})


async def speech_started(deps: WorkflowDeps, session_id: UUID, clip_id: str) -> None:
    step_id = clip_id.split("@", 1)[0]
    async with locked(deps, session_id, None) as unit:
        unit.session.speaking_step = step_id
        await unit.event(MEDIA, EventType.TTS_STARTED, {"step_id": step_id, "clip_id": clip_id})


async def clip_finished(
    deps: WorkflowDeps, session_id: UUID, clip_id: str, played_ms: int, duration_ms: int,
    complete: bool,
) -> None:
    step_id = clip_id.split("@", 1)[0]
    advance_to_next = False
    async with locked(deps, session_id, None) as unit:
        await unit.event(MEDIA, EventType.TTS_PLAYED, {
            "step_id": step_id, "clip_id": clip_id, "played_ms": played_ms,
            "duration_ms": duration_ms, "complete": complete,
        })
        session = unit.session
        if session.speaking_step == step_id:
            session.speaking_step = ""
        step = _current_step(session)
        if (complete and step is not None and step.id == step_id
                # 再听一遍 asked after this clip started: the replay's clip must be heard.
                and not await customer_controls.replay_superseded(unit.conn, session_id,
                                                                  clip_id)):
            if step.answer == call.NO_ANSWER:
                advance_to_next = True
            else:
                await _open_answer(unit, step, {"by": "speech_complete", "clip_id": clip_id})
    if advance_to_next:
        await call.advance_after_speech(deps, session_id, step_id)


def reading_step(session: RecordingSession) -> SessionStep | None:
    """The step being read now and not yet open for its answer (None when paused, between
    steps or outside the script)."""
    step = _current_step(session)
    return step if step is not None and session.answer_open_step != step.id else None


def _current_step(session: RecordingSession) -> SessionStep | None:
    """The step being disclosed, while it can be answered (not paused)."""
    if session.state != SessionState.DISCLOSING or session.paused:
        return None
    return current(session)


async def _open_answer(unit: Unit, step: SessionStep, how: dict[str, Any]) -> None:
    """R-24: from now on the server accepts the answer to this step; the pages are told by
    the timeline event (the customer's snapshot carries `answer_open`)."""
    if unit.session.answer_open_step == step.id:
        return
    unit.session.answer_open_step = step.id
    await unit.event(MEDIA, EventType.ANSWER_OPENED,
                     {"step_id": step.id, "index": unit.session.current_step, **how})


def agent_voice_needed_ms(step: SessionStep, settings: WorkflowSettings) -> int:
    """How much of the agent's voice an agent-read step needs before it may be answered: a
    share of the time its text takes to read (R-24)."""
    chars = sum(1 for c in step.text if not c.isspace())
    reading_s = chars / settings.agent_chars_per_second
    return int(1000 * max(settings.agent_voice_min_seconds,
                          reading_s * settings.agent_voice_share))


async def agent_voice(deps: WorkflowDeps, session_id: UUID, step_id: str,
                      voiced_ms: int) -> bool:
    """The hub heard the agent for `voiced_ms` since the agent-read step `step_id` started;
    opens its answer once that is enough. Returns whether the answer is open."""
    async with locked(deps, session_id, None) as unit:
        step = _current_step(unit.session)
        if step is None or step.id != step_id or step.speaker != "agent":
            return False
        needed = agent_voice_needed_ms(step, deps.settings)
        if voiced_ms < needed:
            return False
        await _open_answer(unit, step, {"by": "agent_voice", "voiced_ms": voiced_ms,
                                        "needed_ms": needed})
        return True


SPOKEN_ANSWER = "spoken_answer"
# Answers the recogniser could not understand before the page offers the buttons.
UNCLEAR_BEFORE_BUTTONS = 2


def awaited_step(session: RecordingSession) -> SessionStep | None:
    """The step whose spoken answer is awaited now: its answer is open, it expects a spoken
    answer and it has not been answered."""
    step = _current_step(session)
    if (step is None or step.answer != SPOKEN_ANSWER
            or session.answer_open_step != step.id):
        return None
    return step


def _spoken_state(session: RecordingSession, step_id: str) -> dict[str, Any]:
    if session.spoken.get("step_id") == step_id:
        return dict(session.spoken)
    return {"step_id": step_id, "attempts": 0, "heard": "", "verdict": "", "buttons": False}


async def spoken_answer(deps: WorkflowDeps, session_id: UUID, step_id: str,
                        heard: dict[str, Any], start_ms: int, end_ms: int) -> str:
    """What the customer said to an open spoken-answer step (R-24), as the recogniser judged
    it (`heard`: verdict, transcript, confidence, engine …; start/end on the recording clock).

    Affirmative → the acknowledgement, `answer_kind` "voice", with the transcript, the audio
    span and the engine; negative → the same pause-and-explain as the "不清楚" button (never
    stored as affirmative); unclear → the page asks again, and after
    `UNCLEAR_BEFORE_BUTTONS` such answers offers the buttons. Every hearing goes on the
    timeline (`answer_heard`). Returns what happened: acknowledged, paused, unclear, ignored
    (the step moved on meanwhile)."""
    verdict = str(heard.get("verdict", "unclear"))
    async with locked(deps, session_id, None) as unit:
        session = unit.session
        step = awaited_step(session)
        if step is None or step.id != step_id:
            return "ignored"
        spoken = _spoken_state(session, step_id)
        spoken.update(attempts=int(spoken["attempts"]) + 1,
                      heard=str(heard.get("transcript", ""))[:100], verdict=verdict)
        await unit.event(MEDIA, EventType.ANSWER_HEARD, {
            "step_id": step_id, "verdict": verdict, "start_ms": start_ms, "end_ms": end_ms,
            **{k: heard[k] for k in ("transcript", "confidence", "reason", "engine",
                                     "engine_version", "seconds") if k in heard}})
        if verdict not in ("affirmative", "negative"):
            if spoken["attempts"] >= UNCLEAR_BEFORE_BUTTONS and not spoken["buttons"]:
                spoken["buttons"] = True
                await unit.event(MEDIA, EventType.ANSWER_BUTTONS_OFFERED,
                                 {"step_id": step_id, "reason": "unclear"})
            session.spoken = spoken
            return "unclear"
        session.spoken = spoken
        at = (session.recording_started_at + timedelta(milliseconds=end_ms)
              if session.recording_started_at else deps.clock())
        speech: dict[str, Any] = {k: heard[k] for k in ("transcript", "confidence", "reason",
                                                        "engine", "engine_version") if k in heard}
        speech.update(verdict=verdict, start_ms=start_ms, end_ms=end_ms)
        answer = AnswerValue.AFFIRMATIVE if verdict == "affirmative" else AnswerValue.NEGATIVE
        await call.store_answer(unit, MEDIA, step, answer, "voice",
                                str(heard.get("transcript", "")), f"voice-{step_id}-"
                                f"{session.event_seq}-{end_ms}", at, speech)
        return "acknowledged" if answer == AnswerValue.AFFIRMATIVE else "paused"


async def offer_buttons(deps: WorkflowDeps, session_id: UUID, step_id: str,
                        reason: str) -> None:
    """The page offers the answer buttons for a spoken-answer step (nothing understood in
    time, or no recogniser)."""
    async with locked(deps, session_id, None) as unit:
        step = awaited_step(unit.session)
        if step is None or step.id != step_id:
            return
        spoken = _spoken_state(unit.session, step_id)
        if spoken["buttons"]:
            return
        spoken["buttons"] = True
        unit.session.spoken = spoken
        await unit.event(MEDIA, EventType.ANSWER_BUTTONS_OFFERED,
                         {"step_id": step_id, "reason": reason})


async def room_lost(deps: WorkflowDeps, session_id: UUID, reason: str) -> None:
    """The node holding the call died (R-30): nobody is connected any more and the call is
    interrupted, resumable within the window on any live node."""
    async with locked(deps, session_id, None) as unit:
        lost = sorted(unit.session.call_parties or {})
        unit.session.call_parties = {}
        await unit.event(MEDIA, EventType.CALL_NODE_LOST, {"reason": reason[:200], "parties": lost})
    session = await RecordingSession.get_or_none(id=session_id)
    if session is not None and session.state in CALL_STATES:
        try:
            await call.interrupt(deps, MEDIA, session_id, reason)
        except WorkflowError as exc:
            log.info("session %s not interrupted: %s", session_id, exc)


async def segment_unreadable(deps: WorkflowDeps, session_id: UUID, path: str) -> None:
    """An unfinished segment of a dead process had nothing readable: kept, and on the
    timeline so QA and the seal see the hole."""
    async with locked(deps, session_id, None) as unit:
        await unit.event(MEDIA, EventType.SEGMENT_UNREADABLE, {"path": path})


async def presence_hold(deps: WorkflowDeps, session_id: UUID, mark: str, message: str) -> None:
    """R-13 live: the customer left the picture, a second face appeared or the face changed.
    The reading stops (the bridge cuts the clip) and the current step's answer closes until the
    customer is back alone; the agent's console shows the alert from this event."""
    async with locked(deps, session_id, None) as unit:
        unit.session.answer_open_step = ""
        await unit.event(MEDIA, EventType.PRESENCE_ALERT, {"type": mark, "message": message[:200]})


async def presence_release(deps: WorkflowDeps, session_id: UUID) -> None:
    """The customer is back alone in view: the current step is read again from its start."""
    async with locked(deps, session_id, None) as unit:
        step = _current_step(unit.session)
        await unit.event(MEDIA, EventType.PRESENCE_RESTORED,
                         {"step_id": step.id if step else None})


async def party_lost(deps: WorkflowDeps, session_id: UUID, role: str, reason: str) -> None:
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None:
        return
    if session.state in CALL_STATES | {SessionState.INTERRUPTED}:
        await _forget_party(deps, session_id, role, reason)
    if session.state not in CALL_STATES:
        return
    try:
        await call.interrupt(deps, MEDIA, session_id, f"{role} lost: {reason}")
    except WorkflowError as exc:
        log.info("session %s not interrupted: %s", session_id, exc)


@dataclass(frozen=True)
class PresenceReference:
    """What the presence monitor of a call needs (R-13): the verified live face and the zero of
    the session's timeline."""

    image: bytes  # JPEG of the reference face (decrypted evidence)
    attempt: int  # of the passed identity check
    origin: float  # recording_started_at as POSIX seconds: presence times count from here
    # "live_call": the call frame the live liveness run matched against the card portrait
    # (its run's ``live_attempt``); "liveness_clip": the identity check's live face.
    source: str = "liveness_clip"
    live_attempt: int | None = None

    def started(self) -> dict[str, Any]:
        """The ``presence_started`` data: which reference the monitor compares with."""
        data: dict[str, Any] = {"attempt": self.attempt, "reference": self.source}
        if self.live_attempt is not None:
            data["live_attempt"] = self.live_attempt
        return data


class NoPresenceReference(LookupError):
    """The session has no verified live face to compare the call's video with."""


def live_face_path(session_id: UUID, attempt: int) -> str:
    """Where `workflow.identity.run_identity_check` stores the matched live face."""
    return f"sessions/{session_id}/identity/attempt-{attempt}/live-face.jpg.enc"


async def presence_reference(deps: WorkflowDeps, session_id: UUID) -> PresenceReference:
    """The reference for R-13: the call frame the live liveness run matched against the card
    portrait once there is one (issue 15: the call itself, not the uploaded clip), else the
    live face of the passed identity check (the clip's). Raises `NoPresenceReference` (with
    the reason) when there is none, e.g. a check reported by an external engine without the
    evidence file, or a call without a verified identity."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or session.recording_started_at is None:
        raise NoPresenceReference("the call has not started")
    check = await IdentityCheck.filter(session_id=session_id, passed=True) \
        .order_by("-attempt").first()
    if check is None:
        raise NoPresenceReference("no passed identity check")
    origin = session.recording_started_at.timestamp()
    live = await live_liveness.live_call_face(deps, session_id)
    if live is not None:
        return PresenceReference(live.jpeg, check.attempt, origin, "live_call", live.attempt)
    path = live_face_path(session_id, check.attempt)
    if not await deps.storage.exists(path):
        raise NoPresenceReference(f"no live face stored for attempt {check.attempt}")
    image = await EvidenceStore(deps.storage, deps.cipher).get(path)
    return PresenceReference(image, check.attempt, origin)


async def clip_for(session: RecordingSession,
                   speech: SpeechSettings) -> tuple[str, Path] | None:
    """The current step's pre-rendered speech (R-23): its clip id and WAV file, if any; a
    rendering made on another node is fetched from the shared store into this node's cache."""
    if session.state.value != "disclosing" or session.paused:
        return None
    step = at_current(session)
    audio = step.audio
    if step.speaker != "tts" or not audio:
        return None
    from media.tts.cache import SpeechCache

    cached = await SpeechCache(speech.cache_dir, speech.store).fetch(audio.cache_key)
    if cached is None or cached.wav_sha256 != audio.sha256:
        log.error("speech of step %s is missing or changed in the cache", step.id)
        return None
    return f"{step.id}@{session.event_seq}", cached.wav_path
