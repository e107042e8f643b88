"""A session's steps, typed (issue 18): `RecordingSession.steps` is stored as the JSON of
`scripts_library.render.SessionStep` (rendered, plus the prepared speech); the workflow, QA and
the API read it through these functions, by attribute, never by string key.

A session's steps are replaced, never changed in place (`workflow.core.Unit.save`), so the
parsed list is kept on the session object for as long as it holds the same list; a
transaction that needs one step (an answer, a clip) parses only that one.
"""

from __future__ import annotations

from typing import Any

from models.sessions import RecordingSession
from scripts_library.render import SessionStep

_PARSED = "_parsed_steps"  # (the raw list parsed, its steps) on the session object


def parse(raw: list[dict[str, Any]]) -> list[SessionStep]:
    return [SessionStep.model_validate(step) for step in raw]


def _cached(session: RecordingSession) -> list[SessionStep] | None:
    """The steps parsed earlier, while the session still holds the list they were parsed from."""
    cached: tuple[list[dict[str, Any]], list[SessionStep]] | None = getattr(
        session, _PARSED, None)
    return cached[1] if cached is not None and cached[0] is session.steps else None


def steps_of(session: RecordingSession) -> list[SessionStep]:
    """Every step of the session, in order."""
    steps = _cached(session)
    if steps is None:
        steps = parse(session.steps)
        setattr(session, _PARSED, (session.steps, steps))
    return steps


def step_at(session: RecordingSession, index: int) -> SessionStep | None:
    """The step at `index`, or None past the end."""
    raw = session.steps
    if not 0 <= index < len(raw):
        return None
    steps = _cached(session)
    return steps[index] if steps is not None else SessionStep.model_validate(raw[index])


def current(session: RecordingSession) -> SessionStep | None:
    """The step the script is at (None once it has run past the last one)."""
    return step_at(session, session.current_step)


def at_current(session: RecordingSession) -> SessionStep:
    """The step the script is at; `IndexError` past the last one (as indexing the list)."""
    step = current(session)
    if step is None:
        raise IndexError(f"no step {session.current_step} of {len(session.steps)}")
    return step
