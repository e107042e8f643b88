"""What a rehearsal prints: one line per thing a party did, one line per script step (its id,
how the server opened its answer, what was answered), and a summary at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

# How the server opened a step's answer (timeline `answer_opened`, workflow/media_events.py).
OPENED_BY = {"speech_complete": "its speech played in full to the customer",
             "agent_voice": "the agent heard reading it"}


@dataclass
class StepRecord:
    index: int
    step_id: str
    title: str
    speaker: str
    answer: str
    started: float
    heard_ms: int = 0  # script speech the customer's connection received during the step
    opened: str = ""
    answered: str = ""
    seconds: float = 0.0


@dataclass
class Progress:
    """Shared by both parties of one rehearsal (one process, one event loop)."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.monotonic)
    steps: list[StepRecord] = field(default_factory=list)
    step_count: int = 0
    # step id -> the data of its latest `answer_opened` event (the agent's feed carries it)
    opened_by: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How to go on after a failure (the invitation link is single use)
    resume_hint: str = ""

    def say(self, who: str, message: str) -> None:
        elapsed = self.clock() - self.started
        print(f"[{elapsed:7.1f}s] {who:<8} {message}", file=self.out, flush=True)

    def step_started(self, step: dict[str, Any], step_count: int) -> StepRecord:
        self.step_count = step_count or self.step_count
        record = StepRecord(int(step.get("index", 0)), str(step["id"]),
                            str(step.get("title") or ""), str(step.get("speaker", "")),
                            str(step.get("answer", "")), self.clock())
        return record

    def opened(self, step_id: str, fallback: str) -> str:
        data = self.opened_by.get(step_id)
        if not data:
            return fallback
        how = OPENED_BY.get(str(data.get("by")), str(data.get("by")))
        if data.get("by") == "agent_voice":
            how += (f" ({int(data.get('voiced_ms', 0)) / 1000:.1f} s of voice, "
                    f"{int(data.get('needed_ms', 0)) / 1000:.1f} s needed)")
        return f"answer opened: {how}"

    def step_done(self, record: StepRecord, answered: str, opened_fallback: str) -> None:
        record.seconds = self.clock() - record.started
        record.opened = self.opened(record.step_id, opened_fallback)
        record.answered = answered
        self.steps.append(record)
        count = self.step_count or "?"
        heard = f", heard {record.heard_ms / 1000:.1f} s of speech" if record.heard_ms else ""
        self.say("step", f"{record.index + 1:02d}/{count} {record.step_id} 「{record.title}」 "
                 f"({record.speaker}, {record.seconds:.1f} s{heard}): {record.opened}; "
                 f"{answered}")

    def summary(self, state: str, session_id: str) -> str:
        elapsed = self.clock() - self.started
        minutes, seconds = divmod(int(elapsed), 60)
        spoken = sum(1 for s in self.steps if "said" in s.answered)
        return (f"session {session_id}: {state} after {minutes} min {seconds:02d} s; "
                f"{len(self.steps)} steps played, {spoken} answers said aloud")
