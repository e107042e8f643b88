"""The live liveness runs of a session as QA reads them (R-12, issue 15): from the timeline's
``live_liveness_started`` / ``_passed`` / ``_failed`` events (`workflow.live_liveness`), each
run with its challenges' moments in the recording and its face match against the card
portrait; and whether the policy required a passed run before the script (``script_started``
says so since issue 15; a session with runs had it required, the runs start only then).

Read from `Timeline.events` (already loaded, in ``seq`` order): no query of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qa.timeline import Timeline
from workflow.event_types import EventType
from workflow.live_liveness import FAILED, PASSED, STARTED

ACTION_LABELS = {"blink": "眨眼", "turn_left": "向左转头", "turn_right": "向右转头",
                 "open_mouth": "张嘴"}


@dataclass(frozen=True)
class LiveChallenge:
    id: str
    action: str
    passed: bool
    reason_code: str | None
    reason: str
    sent_ms: int | None
    completed_ms: int | None
    deadline_ms: int | None
    face_match: dict[str, Any] | None

    @property
    def label(self) -> str:
        return ACTION_LABELS.get(self.action, self.action)


@dataclass
class LiveRun:
    """One run: ``passed`` None while it has no result on the timeline (cut off)."""

    attempt: int
    started_ms: int
    seq: int  # the started event's place on the timeline
    passed: bool | None = None
    ended_ms: int | None = None
    ended_seq: int | None = None
    reason_code: str | None = None
    reason: str = ""
    counted: bool = True
    final: bool = False
    challenges: list[LiveChallenge] = field(default_factory=list)
    face_match: dict[str, Any] = field(default_factory=dict)

    @property
    def face_status(self) -> str:
        """matched | mismatch | not_run | "" (a run recorded before issue 15's face match)."""
        return str(self.face_match.get("status") or "")


@dataclass
class LiveFacts:
    runs: list[LiveRun]
    script_started_ms: int | None
    script_started_seq: int | None
    required: bool  # the policy asked for a passed run before the script

    def passed_before_script(self) -> LiveRun | None:
        """The run that passed before the script started (the last such), or None."""
        limit = self.script_started_seq
        done = [r for r in self.runs if r.passed and r.ended_seq is not None
                and (limit is None or r.ended_seq < limit)]
        return done[-1] if done else None


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def live_facts(t: Timeline) -> LiveFacts:
    runs: dict[int, LiveRun] = {}
    started_ms: int | None = None
    started_seq: int | None = None
    declared: bool | None = None
    for seq, e in enumerate(t.events):  # places in the timeline's order (seq order)
        data = e.data or {}
        at = t.offset(e.at)
        if e.type == EventType.SCRIPT_STARTED and started_seq is None:
            started_ms, started_seq = at, seq
            if "live_liveness_required" in data:
                declared = bool(data["live_liveness_required"])
        elif e.type == STARTED:
            attempt = _int(data.get("attempt")) or len(runs) + 1
            at_ms = _int(data.get("at_ms"))
            runs[attempt] = LiveRun(attempt, at if at_ms is None else at_ms, seq)
        elif e.type in (PASSED, FAILED):
            attempt = _int(data.get("attempt")) or len(runs)
            run = runs.setdefault(attempt, LiveRun(attempt, at, seq))
            run.passed = e.type == PASSED
            run.ended_ms, run.ended_seq = at, seq
            run.reason_code = data.get("reason_code")
            run.reason = str(data.get("reason") or "")
            run.counted = bool(data.get("counted", True))
            run.final = bool(data.get("final", False))
            run.face_match = dict(data.get("face_match") or {})
            run.challenges = [LiveChallenge(
                id=str(c.get("id", "")), action=str(c.get("action", "")),
                passed=bool(c.get("passed")), reason_code=c.get("reason_code"),
                reason=str(c.get("reason") or ""), sent_ms=_int(c.get("sent_ms")),
                completed_ms=_int(c.get("completed_ms")),
                deadline_ms=_int(c.get("deadline_ms")), face_match=c.get("face_match"),
            ) for c in data.get("challenges") or []]
    ordered = sorted(runs.values(), key=lambda r: r.seq)
    required = declared if declared is not None else bool(ordered)
    return LiveFacts(ordered, started_ms, started_seq, required)
