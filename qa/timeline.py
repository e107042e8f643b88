"""The session's timeline as the checks and the replay page need it: every play of every step
(start, end, how it ended), the answers, TTS clips, presence marks, interruptions, all in
milliseconds from the start of the recording (`recording_started_at`).

Two facts come from the media side rather than the workflow's own transitions:

* ``tts_played`` — ``{step_id, clip_id, played_ms, duration_ms, complete}``, one per TTS clip,
  written by `workflow.media_events.clip_finished` from the call hub's ``ClipFinished``.
* ``presence_mark`` — ``{type, at_s, message, faces, distance}``, a presence breach or its end
  (``media.identity.results.PresenceMark``; ``at_s`` is seconds into the recording, R-13),
  written through `record_media_event` by whoever runs the presence monitor.
* ``presence_started`` — ``{attempt, reference, live_attempt}``: the presence monitor started
  watching the customer (again after a reconnect: a higher attempt), or took the call frame the
  live liveness run matched as its reference (``reference``: ``liveness_clip`` or
  ``live_call``); ``presence_unavailable`` — ``{reason}``: it
  could not (no verified live face, engines unavailable). Written by the live call; the checks
  fail closed on them (R-13: a call without ``presence_started``, or with
  ``presence_unavailable``, gets a critical ``presence_unchecked`` finding).

The after-call transcript (`qa.transcripts`, derived data stored beside the evidence, not
sealed) joins the timeline as `Timeline.transcript`: what each party said, per line, on the same
clock; the checks of the agent's words and of the answers read it, the replay page shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from models.sessions import (
    Acknowledgement,
    AnswerValue,
    IdentityCheck,
    Recording,
    RecordingSession,
    SessionEvent,
    Signature,
)
from scripts_library.render import SessionStep
from workflow.event_types import EventType

# The timeline's media facts, recorded by the workflow (re-exported here for QA's readers).
from workflow.media_events import CLIP_FINISHED as CLIP_FINISHED
from workflow.media_events import MEDIA_EVENT_TYPES as MEDIA_EVENT_TYPES
from workflow.media_events import PRESENCE_MARK as PRESENCE_MARK
from workflow.media_events import PRESENCE_STARTED as PRESENCE_STARTED
from workflow.media_events import PRESENCE_UNAVAILABLE as PRESENCE_UNAVAILABLE
from workflow.media_events import record_media_event as record_media_event
from workflow.steps import step_at, steps_of

# Events that start (or restart) the play of a step.
STEP_STARTS = (EventType.SCRIPT_STARTED, EventType.STEP_STARTED, EventType.SCRIPT_RESUMED)


@dataclass
class StepPlay:
    """One play of a step: from its start until an answer, the next step or an interruption."""

    index: int
    step_id: str
    start_ms: int
    end_ms: int | None = None
    ended_by: str = ""  # affirmative | negative | unclear | advanced | interrupted | finished
    answer_offset_ms: int | None = None


@dataclass(frozen=True)
class Clip:
    clip_id: str
    step_id: str
    end_ms: int
    played_ms: int
    duration_ms: int
    complete: bool

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.played_ms


@dataclass(frozen=True)
class PresenceFact:
    type: str
    at_ms: int
    message: str
    faces: int


@dataclass(frozen=True)
class PresenceWatch:
    """The presence monitor started (`started`, with its attempt) or could not (`unavailable`,
    with its reason)."""

    type: str
    at_ms: int
    attempt: int = 0
    reason: str = ""


@dataclass
class Interruption:
    start_ms: int
    end_ms: int | None
    reason: str


PARTY_LABELS = {"customer": "客户", "agent": "销售人员"}


@dataclass(frozen=True)
class TranscriptLine:
    """One recognised stretch of one party's speech, on the recording clock."""

    party: str  # customer | agent
    start_ms: int
    end_ms: int
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass
class SessionTranscript:
    """The after-call transcript: `done` (lines, possibly none), `unavailable` (no recogniser
    here: `reason`) or `failed` (the job gave up after `attempts`)."""

    status: str
    lines: list[TranscriptLine] = field(default_factory=list)
    reason: str = ""
    engine: str = ""
    attempts: int = 0

    @property
    def usable(self) -> bool:
        return self.status == "done"

    def said(self, party: str, start_ms: int, end_ms: int) -> list[TranscriptLine]:
        """The party's lines that overlap [start_ms, end_ms), in time order."""
        return [line for line in self.lines if line.party == party
                and line.start_ms < end_ms and line.end_ms > start_ms]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionTranscript:
        lines = [TranscriptLine(str(x.get("party", "")), _int(x.get("start_ms")),
                                _int(x.get("end_ms")), str(x.get("text", "")),
                                float(x.get("avg_logprob") or 0.0),
                                float(x.get("no_speech_prob") or 0.0))
                 for x in data.get("lines") or []]
        return cls(status=str(data.get("status", "")), lines=sorted(
            lines, key=lambda line: (line.start_ms, line.party)),
            reason=str(data.get("reason") or ""), engine=str(data.get("engine") or ""),
            attempts=_int(data.get("attempts")))


@dataclass
class Timeline:
    session: RecordingSession
    events: list[SessionEvent]
    acknowledgements: list[Acknowledgement]
    identity_checks: list[IdentityCheck]
    signatures: list[Signature]
    recordings: list[Recording]
    plays: list[StepPlay] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)
    presence: list[PresenceFact] = field(default_factory=list)
    presence_watch: list[PresenceWatch] = field(default_factory=list)
    interruptions: list[Interruption] = field(default_factory=list)
    end_ms: int = 0
    # None: no transcript stored (yet); the runner attaches it (`qa.transcripts`).
    transcript: SessionTranscript | None = None

    @property
    def steps(self) -> list[SessionStep]:
        return steps_of(self.session)

    @property
    def had_call(self) -> bool:
        """The call started: the recording clock runs or the script was started."""
        return self.session.recording_started_at is not None or any(
            e.type == EventType.SCRIPT_STARTED for e in self.events)

    def offset(self, at: datetime) -> int:
        start = self.session.recording_started_at
        if start is None:
            return 0
        return (at - start) // timedelta(milliseconds=1)

    def plays_of(self, index: int) -> list[StepPlay]:
        return [p for p in self.plays if p.index == index]

    def clips_of(self, step_id: str) -> list[Clip]:
        return [c for c in self.clips if c.step_id == step_id]

    def answer_windows(self) -> list[tuple[int, int]]:
        """Where silence is expected: from the end of a step's speech until its answer."""
        windows = []
        for play in self.plays:
            if play.end_ms is None or play.ended_by in ("interrupted", ""):
                continue
            step = self.steps[play.index]
            speech_ms = _expected_speech_ms(step)
            start = play.start_ms + speech_ms if speech_ms else play.start_ms
            windows.append((min(start, play.end_ms), play.end_ms))
        return windows


def _expected_speech_ms(step: SessionStep) -> int:
    return step.audio.duration_ms if step.audio else 0


async def load_timeline(session_id: UUID) -> Timeline:
    session = await RecordingSession.get(id=session_id)
    return build_timeline(
        session,
        events=await SessionEvent.filter(session_id=session_id).order_by("seq"),
        acknowledgements=await Acknowledgement.filter(session_id=session_id).order_by("id"),
        identity_checks=await IdentityCheck.filter(session_id=session_id).order_by("attempt"),
        signatures=await Signature.filter(session_id=session_id).order_by("id"),
        recordings=await Recording.filter(session_id=session_id).order_by("kind", "segment"),
    )


def build_timeline(session: RecordingSession, *, events: list[SessionEvent],
                   acknowledgements: list[Acknowledgement],
                   identity_checks: list[IdentityCheck], signatures: list[Signature],
                   recordings: list[Recording]) -> Timeline:
    """The timeline read from rows already loaded (events in `seq` order)."""
    timeline = Timeline(session=session, events=events, acknowledgements=acknowledgements,
                        identity_checks=identity_checks, signatures=signatures,
                        recordings=recordings)
    _read_events(timeline)
    return timeline


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _read_events(t: Timeline) -> None:
    current: StepPlay | None = None

    def close(at_ms: int, how: str, answer_ms: int | None = None) -> None:
        nonlocal current
        if current is not None and current.end_ms is None:
            current.end_ms = at_ms
            current.ended_by = how
            current.answer_offset_ms = answer_ms
        current = None

    for e in t.events:
        at = t.offset(e.at)
        data = e.data or {}
        if e.type == EventType.CALL_RESUMED:
            for gap in reversed(t.interruptions):
                if gap.end_ms is None:
                    gap.end_ms = at
                    break
        if e.type in STEP_STARTS or (e.type == EventType.CALL_RESUMED and "replay_step_id" in data):
            close(at, "advanced")
            index = int(data.get("index", 0))
            step_id = str(data.get("step_id") or data.get("replay_step_id") or "")
            current = StepPlay(index, step_id, at)
            t.plays.append(current)
        elif e.type in (EventType.ACKNOWLEDGED, EventType.SIGNED) and current is not None:
            answer = str(data.get("answer", AnswerValue.AFFIRMATIVE.value))
            offset = int(data.get("offset_ms", at))
            if e.type == EventType.SIGNED and data.get("step_id") != current.step_id:
                continue
            close(at, answer if e.type == EventType.ACKNOWLEDGED else "affirmative", offset)
        elif e.type == EventType.SCRIPT_FINISHED:
            close(at, "finished")
        elif e.type == EventType.INTERRUPTED:
            close(at, "interrupted")
            t.interruptions.append(Interruption(at, None, str(data.get("reason", ""))))
        elif e.type == CLIP_FINISHED:
            clip_id = str(data.get("clip_id", ""))
            t.clips.append(Clip(
                clip_id=clip_id, step_id=str(data.get("step_id") or clip_id.split("@")[0]),
                end_ms=at, played_ms=int(data.get("played_ms", 0)),
                duration_ms=int(data.get("duration_ms", 0)),
                complete=bool(data.get("complete", False)),
            ))
        elif e.type == PRESENCE_MARK:
            t.presence.append(PresenceFact(
                type=str(data.get("type", "")), at_ms=round(float(data.get("at_s", 0)) * 1000),
                message=str(data.get("message", "")), faces=int(data.get("faces", 0)),
            ))
        elif e.type == PRESENCE_STARTED:
            t.presence_watch.append(PresenceWatch("started", at,
                                                  attempt=_int(data.get("attempt"))))
        elif e.type == PRESENCE_UNAVAILABLE:
            t.presence_watch.append(PresenceWatch("unavailable", at,
                                                  reason=str(data.get("reason", ""))[:200]))
        elif e.type in (EventType.COMPLETED, EventType.ABORTED, EventType.EXPIRED):
            close(at, "")
    s = t.session
    end = s.completed_at or s.ended_at
    t.end_ms = t.offset(end) if end is not None else (t.offset(t.events[-1].at)
                                                      if t.events else 0)
    # A "signed" step end is an acknowledgement too; a plain advance leaves ended_by as set.
    for play in t.plays:
        step = step_at(s, play.index)
        if play.ended_by == "advanced" and step is not None and step.answer != "none":
            # Moved on without an answer event: only possible through a replay or a gap.
            play.ended_by = "advanced_without_answer"
