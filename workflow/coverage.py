"""Is the recording whole? (R-30) The check `complete` runs before a session may be completed.

Each stream — the customer's audio/video, the agent's audio/video and the TTS track — must be
recorded across the whole script span: from the script's start to the moment of completion.
Gaps are allowed only where the call was interrupted and resumed: from the moment the party was
last heard (the interruption is reported up to one keep-alive timeout after the media stopped)
until the party's media connected again after the resume. Anything else missing is named, with
its place on the recording clock, so the agent knows why the session cannot be completed.

The segments are what the recorder registered (`Recording` rows, wall-clock start and end of
their first and last frame); the interruptions and (re)connections come from the timeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient

from models.sessions import Recording, RecordingSession, SessionEvent
from workflow.event_types import EventType

STREAMS: dict[str, str] = {"customer_av": "客户音视频", "agent_av": "销售人员音视频",
                           "tts": "话术语音"}
# Whose reconnection ends an allowed gap of each stream (the TTS track is recorded while
# anyone is connected).
STREAM_PARTIES: dict[str, tuple[str, ...]] = {"customer_av": ("customer",),
                                              "agent_av": ("agent",),
                                              "tts": ("customer", "agent")}

Span = tuple[datetime, datetime]


@dataclass(frozen=True)
class Gap:
    stream: str
    start: datetime
    end: datetime
    offset_s: float  # where the gap starts on the recording clock

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def describe(self) -> str:
        minutes, seconds = divmod(int(self.offset_s), 60)
        return (f"{STREAMS[self.stream]}在录制第 {minutes:02d}:{seconds:02d} 起缺失约 "
                f"{max(round(self.seconds), 1)} 秒")

    def as_dict(self) -> dict[str, object]:
        return {"stream": self.stream, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "offset_s": round(self.offset_s, 1),
                "seconds": round(self.seconds, 1)}


def allowed_gaps(events: Iterable[SessionEvent], parties: tuple[str, ...],
                 lost_before: timedelta, grace: timedelta) -> list[Span]:
    """The stretches an interruption explains: from `lost_before` ahead of each `interrupted`
    event until `grace` after one of `parties` connected again following the `call_resumed`
    (the first recorded frame comes a moment after the connection), or until the end when it
    never did."""
    spans: list[Span] = []
    start: datetime | None = None
    resumed = False
    for event in events:
        if event.type == EventType.INTERRUPTED and start is None:
            start, resumed = event.at - lost_before, False
        elif event.type == EventType.CALL_RESUMED and start is not None:
            resumed = True
        elif (event.type == EventType.PARTY_CONNECTED and start is not None and resumed
              and event.data.get("role") in parties):
            spans.append((start, event.at + grace))
            start = None
    if start is not None:
        spans.append((start, datetime.max.replace(tzinfo=start.tzinfo)))
    return spans


def _covered(gap: Span, allowed: list[Span]) -> bool:
    return any(a <= gap[0] and gap[1] <= b for a, b in allowed)


def stream_gaps(segments: list[Span], span: Span, allowed: list[Span],
                tolerance: timedelta, origin: datetime, stream: str) -> list[Gap]:
    """The gaps of one stream within `span` longer than `tolerance` that no allowed stretch
    explains."""
    gaps: list[Gap] = []
    cursor = span[0]

    def note(start: datetime, end: datetime) -> None:
        if end - start > tolerance and not _covered((start, end), allowed):
            gaps.append(Gap(stream, start, end, (start - origin).total_seconds()))

    for start, end in sorted(segments):
        if end <= cursor:
            continue
        if start > cursor:
            note(cursor, min(start, span[1]))
        cursor = max(cursor, end)
        if cursor >= span[1]:
            break
    if cursor < span[1]:
        note(cursor, span[1])
    return gaps


async def recording_gaps(session: RecordingSession, until: datetime, conn: BaseDBAsyncClient,
                         keepalive_timeout_s: float, tolerance_s: float) -> list[Gap]:
    """Every unexplained gap of the three streams between the script's start and `until`.
    A session whose script never started has nothing to cover (and cannot be completed
    anyway)."""
    events = await SessionEvent.filter(session_id=session.id).using_db(conn).order_by("seq")
    started = next((e.at for e in events if e.type == EventType.SCRIPT_STARTED), None)
    if started is None:
        return []
    origin = session.recording_started_at or started
    rows = await Recording.filter(session_id=session.id).using_db(conn)
    lost_before = timedelta(seconds=keepalive_timeout_s + tolerance_s)
    tolerance = timedelta(seconds=tolerance_s)
    gaps: list[Gap] = []
    for stream, parties in STREAM_PARTIES.items():
        segments = [(r.started_at, r.ended_at or r.started_at) for r in rows if r.kind == stream]
        if not segments:  # never recorded at all: missing however short the call was
            gaps.append(Gap(stream, started, until, (started - origin).total_seconds()))
            continue
        allowed = allowed_gaps(events, parties, lost_before, tolerance)
        gaps += stream_gaps(segments, (started, until), allowed, tolerance, origin, stream)
    return gaps
