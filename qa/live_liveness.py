"""The live liveness runs of a session as QA reads them (R-12, issue 15): from the timeline's
``live_liveness_started`` / ``_passed`` / ``_failed`` events (`workflow.live_liveness`), each
run with its challenges' moments in the recording and its face match against the card
portrait; and whether the policy required a passed run before the script (``script_started``
says so since issue 15; a session with runs had it required, the runs start only then). The
spot checks during the script (``live_liveness_spot_due``, their runs marked ``spot``) are
read as `SpotCheck`: when it fell due, the step it held, whether a run of it passed before that
step started.

Read from `Timeline.events` (already loaded, in ``seq`` order): no query of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qa.timeline import Timeline
from workflow.event_types import EventType
from workflow.live_liveness import FAILED, PASSED, SPOT_DUE, STARTED

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
    spot: int | None = None  # the spot check during the script it judged (None: before it)
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

    @property
    def label(self) -> str:
        """The run as the inspector reads it (Chinese)."""
        if self.spot is None:
            return f"第 {self.attempt} 次实时活体检测"
        return f"第 {self.spot} 次随机活体抽检（第 {self.attempt} 次检测）"


@dataclass
class SpotCheck:
    """A spot check that fell due during the script: the step it held, where that step started
    (None: never), and the run of it that passed first (None: none)."""

    check: int
    due_ms: int
    seq: int
    step_id: str
    index: int
    step_started_seq: int | None = None
    passed_run: LiveRun | None = None

    @property
    def passed_in_time(self) -> bool:
        """A run of it passed before the held step started (or the step never started)."""
        run = self.passed_run
        return run is not None and run.ended_seq is not None and (
            self.step_started_seq is None or run.ended_seq < self.step_started_seq)


@dataclass
class LiveFacts:
    runs: list[LiveRun]
    script_started_ms: int | None
    script_started_seq: int | None
    required: bool  # the policy asked for a passed run before the script
    spots: list[SpotCheck] = field(default_factory=list)

    def passed_before_script(self) -> LiveRun | None:
        """The run that passed before the script started (the last such), or None."""
        limit = self.script_started_seq
        done = [r for r in self.runs if r.passed and r.ended_seq is not None and r.spot is None
                and (limit is None or r.ended_seq < limit)]
        return done[-1] if done else None


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def live_facts(t: Timeline) -> LiveFacts:
    runs: dict[tuple[int | None, int], LiveRun] = {}
    spots: dict[int, SpotCheck] = {}
    started_ms: int | None = None
    started_seq: int | None = None
    declared: bool | None = None
    for seq, e in enumerate(t.events):  # places in the timeline's order (seq order)
        data = e.data or {}
        at = t.offset(e.at)
        spot = _int(data.get("spot"))
        if e.type == EventType.SCRIPT_STARTED and started_seq is None:
            started_ms, started_seq = at, seq
            if "live_liveness_required" in data:
                declared = bool(data["live_liveness_required"])
        elif e.type == SPOT_DUE:
            check = _int(data.get("check")) or len(spots) + 1
            at_ms = _int(data.get("at_ms"))
            spots[check] = SpotCheck(check, at if at_ms is None else at_ms, seq,
                                     str(data.get("step_id", "")), _int(data.get("index")) or 0)
        elif e.type == EventType.STEP_STARTED:
            index = _int(data.get("index"))
            for due in spots.values():
                if due.index == index and due.step_started_seq is None:
                    due.step_started_seq = seq
        elif e.type == STARTED:
            attempt = _int(data.get("attempt")) or len(runs) + 1
            at_ms = _int(data.get("at_ms"))
            runs[(spot, attempt)] = LiveRun(attempt, at if at_ms is None else at_ms, seq, spot)
        elif e.type in (PASSED, FAILED):
            attempt = _int(data.get("attempt")) or len(runs)
            run = runs.setdefault((spot, attempt), LiveRun(attempt, at, seq, spot))
            run.passed = e.type == PASSED
            if run.passed and spot in spots and spots[spot].passed_run is None:
                spots[spot].passed_run = run
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
    return LiveFacts(ordered, started_ms, started_seq, required,
                     sorted(spots.values(), key=lambda d: d.seq))
