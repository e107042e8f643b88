"""Liveness proven in the live call (R-12, issue 15 item 1): the workflow's side.

Once both parties' media is connected and recorded, and before the script may start, the server
gives the customer liveness challenges over the call's data channel and judges them on the
frames it receives (`media.call.live_liveness`, run by `app.live_liveness`). This module keeps
what that means for the session, on its timeline only (no new columns):

- ``live_liveness_started`` ``{attempt, plan, at_ms}``: a run began (``at_ms``: its time in the
  recording, ms from ``recording_started_at``, where QA's replay seeks);
- ``live_liveness_passed`` / ``live_liveness_failed`` ``{attempt, reason_code, reason,
  challenges: [{id, action, passed, reason_code, sent_ms, deadline_ms, completed_ms, ...}],
  counted, attempts_left, final}``: the judgement of each challenge with its moment in the
  recording. A failure while the customer's media was gone is not ``counted``.
  ``face_match``: the best frame of each challenge matched against the verified card portrait
  (`card_portrait`) with the identity step's engine and threshold: ``{status: "matched" |
  "mismatch" | "not_run", passed, distance (the worst), threshold, metric, engine, attempt (of
  the identity check whose portrait), frames, reason}`` (each challenge's own is in its
  ``challenges[].face_match``). A
  mismatch fails the run (``reason_code`` ``card_face_mismatch``); ``not_run`` means there was
  no portrait to match (an identity check reported by an external engine) or no judged run:
  the run is judged on its actions alone and QA flags it (`qa.checks.check_live_liveness`).

The frame a passed run matched against the card portrait (the challenge's best frame with the
smallest distance) is stored encrypted at `live_call_face_path` before the run's result is
recorded: it is the presence monitor's reference for the rest of the call (issue 15; the
liveness clip's face before it, `workflow.media_events.presence_reference`).

When the session's policy asks for it (`WorkflowSettings.live_liveness_required`: production),
`start_script` refuses until a run passed; after `live_liveness_max_attempts` counted failures
no run starts again and the script can never start (the agent console shows the final failure;
the agent ends the session).

**Spot checks during the script** (issue 15: challenges at random times over the whole call,
not only before it). `WorkflowSettings.live_liveness_spot_checks` of them are drawn while the
script plays: at each step boundary the next step is held for one with probability (checks
left) / (boundaries left), drawn with the OS's CSPRNG, so the checks fall on uniformly random
boundaries, exactly that many (fewer only for a script with fewer boundaries), and nothing on
the timeline or the page says in advance where (`hold_for_spot_check`). A held step does not
start: ``live_liveness_spot_due`` ``{check, step_id, index, at_ms}`` is written instead of
``step_started`` and the session is paused with ``pause_reason`` `SPOT_HOLD` (no speech plays,
no answer or "move on" is accepted, the agent cannot resume it). The run that judges it is a
one-challenge run, recorded by the same events with ``spot: check`` (its attempts counted
apart from the runs before the script); its pass releases the hold and starts the held step
(``step_started``), in the same transaction. After `live_liveness_max_attempts` counted
failures of one check the script stays held for good: the agent ends the session.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient

from models.sessions import IdentityCheck, RecordingSession, SessionEvent, SessionState
from security.audit import Actor
from workflow.core import Unit, WorkflowDeps, WorkflowSettings, locked
from workflow.errors import Conflict
from workflow.event_types import EventType
from workflow.evidence import EvidenceStore
from workflow.steps import at_current

STARTED = EventType.LIVE_LIVENESS_STARTED
PASSED = EventType.LIVE_LIVENESS_PASSED
FAILED = EventType.LIVE_LIVENESS_FAILED
SPOT_DUE = EventType.LIVE_LIVENESS_SPOT_DUE
EVENT_TYPES = (STARTED, PASSED, FAILED)
ACTOR = Actor.system("liveness")
# `RecordingSession.pause_reason` while a spot check holds the script.
SPOT_HOLD = "live_liveness_spot_check"


@dataclass(frozen=True)
class LiveLivenessState:
    """What the timeline says so far."""

    passed: bool
    failures: int  # counted failures
    runs: int  # runs started

    def exhausted(self, settings: WorkflowSettings) -> bool:
        return not self.passed and self.failures >= settings.live_liveness_max_attempts

    def attempts_left(self, settings: WorkflowSettings) -> int:
        return 0 if self.passed else max(settings.live_liveness_max_attempts - self.failures, 0)


async def live_state(session_id: UUID, conn: BaseDBAsyncClient | None = None,
                     spot: int | None = None) -> LiveLivenessState:
    """The runs before the script (``spot`` None) or those of one spot check."""
    query = SessionEvent.filter(session_id=session_id, type__in=EVENT_TYPES)
    if conn is not None:
        query = query.using_db(conn)
    rows = [r for r in await query.values("type", "data")
            if (r["data"] or {}).get("spot") == spot]
    return LiveLivenessState(
        passed=any(r["type"] == PASSED for r in rows),
        failures=sum(1 for r in rows if r["type"] == FAILED and (r["data"] or {}).get("counted")),
        runs=sum(1 for r in rows if r["type"] == STARTED),
    )


def readiness_problem(state: LiveLivenessState, settings: WorkflowSettings) -> str | None:
    """Why the script may not start yet for liveness (Chinese), or None."""
    if not settings.live_liveness_required or state.passed:
        return None
    if state.exhausted(settings):
        return (f"客户通话中的实时活体检测 {state.failures} 次均未通过，不能开始播报话术，"
                "请终止本次录制")
    return "客户尚未通过通话中的实时活体检测"


def portrait_path(session_id: UUID, attempt: int) -> str:
    """Where `workflow.identity.run_identity_check` stores the card portrait it matched."""
    return f"sessions/{session_id}/identity/attempt-{attempt}/portrait.jpg.enc"


@dataclass(frozen=True)
class CardPortrait:
    attempt: int  # of the passed identity check
    jpeg: bytes


async def card_portrait(deps: WorkflowDeps, session_id: UUID) -> CardPortrait | None:
    """The verified card portrait: the one of the last passed identity check, or None when that
    check stored none (reported by an external engine) or none passed."""
    check = await IdentityCheck.filter(session_id=session_id, passed=True) \
        .order_by("-attempt").first()
    if check is None:
        return None
    path = portrait_path(session_id, check.attempt)
    if not await deps.storage.exists(path):
        return None
    return CardPortrait(check.attempt, await EvidenceStore(deps.storage, deps.cipher).get(path))


def live_call_face_path(session_id: UUID, attempt: int) -> str:
    """Where the call frame a passed run (``attempt``) matched against the card portrait is
    stored (encrypted, like the identity check's live face)."""
    return f"sessions/{session_id}/identity/live-call-face-{attempt}.jpg.enc"


async def store_live_call_face(deps: WorkflowDeps, session_id: UUID, attempt: int,
                               jpeg: bytes) -> None:
    await EvidenceStore(deps.storage, deps.cipher).put(live_call_face_path(session_id, attempt),
                                                       jpeg)


@dataclass(frozen=True)
class LiveCallFace:
    attempt: int  # the passed run's
    jpeg: bytes


async def live_call_face(deps: WorkflowDeps, session_id: UUID) -> LiveCallFace | None:
    """The call frame the passed run matched against the card portrait, or None (no run
    passed, or it matched none: no portrait to match)."""
    passed = await SessionEvent.filter(session_id=session_id, type=PASSED) \
        .order_by("-seq").first()
    if passed is None or not isinstance((passed.data or {}).get("attempt"), int):
        return None
    attempt = int(passed.data["attempt"])
    path = live_call_face_path(session_id, attempt)
    if not await deps.storage.exists(path):
        return None
    return LiveCallFace(attempt, await EvidenceStore(deps.storage, deps.cipher).get(path))


def face_match_record(challenges: list[dict[str, Any]],
                      portrait_attempt: int | None) -> dict[str, Any]:
    """The run's card-portrait match from its challenges' (``ChallengeRun.summary()``
    ``face_match``): the worst distance decides."""
    made = [(c.get("id"), c["face_match"]) for c in challenges if c.get("face_match")]
    if portrait_attempt is None or not made:
        return {"status": "not_run", "passed": None, "attempt": portrait_attempt,
                "reason": "no_portrait" if portrait_attempt is None else "not_judged"}
    failed = [m for _, m in made if not m.get("passed")]
    distances = [float(m["distance"]) for _, m in made if m.get("distance") is not None]
    first = made[0][1]
    return {
        "status": "mismatch" if failed else "matched", "passed": not failed,
        "attempt": portrait_attempt,
        "distance": max(distances) if distances else None,
        "threshold": first.get("threshold"), "metric": first.get("metric"),
        "engine": first.get("engine"),
        "reason_code": failed[0].get("reason_code") if failed else None,
        "frames": len(made),  # one best frame per judged challenge
    }


def _offset_ms(session: RecordingSession, at: float | datetime | None) -> int | None:
    if at is None or session.recording_started_at is None:
        return None
    posix = at.timestamp() if isinstance(at, datetime) else at
    return round((posix - session.recording_started_at.timestamp()) * 1000)


async def record_started(deps: WorkflowDeps, session_id: UUID, plan: list[str],
                         spot: int | None = None) -> int:
    """A run begins; returns its attempt number (runs started so far, plus one; a spot
    check's runs are counted apart)."""
    async with locked(deps, session_id, None) as unit:
        state = await live_state(session_id, unit.conn, spot)
        attempt = state.runs + 1
        data: dict[str, Any] = {"attempt": attempt, "plan": plan,
                                "at_ms": _offset_ms(unit.session, deps.clock())}
        if spot is not None:
            data["spot"] = spot
        await unit.event(ACTOR, STARTED, data)
    return attempt


@dataclass(frozen=True)
class LiveOutcome:
    passed: bool
    attempts_left: int
    final: bool  # no further run will start (passed, or every attempt used)


async def record_result(
    deps: WorkflowDeps, session_id: UUID, attempt: int, passed: bool,
    challenges: list[dict[str, Any]], counted: bool = True,
    face_match: dict[str, Any] | None = None, spot: int | None = None,
) -> LiveOutcome:
    """The judgement of a run: each challenge's summary (`ChallengeRun.summary()` plus its
    ``sent_at``, POSIX) is kept with its moments in the recording; ``face_match`` is the run's
    card-portrait match (`face_match_record`). A passed spot check releases the script's hold
    and starts the held step (`release_spot_hold`)."""
    async with locked(deps, session_id, None) as unit:
        session = unit.session
        kept = []
        for c in challenges:
            item = {k: v for k, v in c.items() if k != "sent_at"}
            sent_ms = _offset_ms(session, c.get("sent_at"))
            item["sent_ms"] = sent_ms
            if sent_ms is not None:
                item["deadline_ms"] = sent_ms + round(float(c.get("time_limit_s", 0)) * 1000)
                done = c.get("completed_at_s")
                item["completed_ms"] = None if done is None else sent_ms + round(done * 1000)
            kept.append(item)
        failed = next((c for c in kept if not c.get("passed")), None)
        before = await live_state(session_id, unit.conn, spot)
        failures = before.failures + (0 if passed or not counted else 1)
        left = 0 if passed else max(deps.settings.live_liveness_max_attempts - failures, 0)
        final = passed or left == 0
        data: dict[str, Any] = {
            "attempt": attempt, "passed": passed, "challenges": kept, "counted": counted,
            "attempts_left": left, "final": final,
            "reason_code": None if failed is None else failed.get("reason_code"),
            "reason": None if failed is None else failed.get("reason"),
            "face_match": face_match or face_match_record(kept, None),
        }
        if spot is not None:
            data["spot"] = spot
        await unit.event(ACTOR, PASSED if passed else FAILED, data)
        if passed and spot is not None:
            await release_spot_hold(unit, spot)
    return LiveOutcome(passed, left, final)


def spot_held(session: RecordingSession) -> bool:
    """Whether a spot check holds the script (the next step waits for it)."""
    return session.paused and session.pause_reason == SPOT_HOLD


# Why an answer, a replay, "move on" or "resume" is refused while a spot check holds the script.
SPOT_WAIT_CUSTOMER = "请先完成屏幕提示的随机活体抽检动作，通过后话术自动继续"
SPOT_WAIT_AGENT = "客户正在进行随机活体抽检，通过后话术自动继续"


def refuse_while_held(session: RecordingSession, *, customer: bool) -> None:
    """409 ``liveness_spot_check`` while a spot check holds the script: nothing moves it on
    but the check's pass (`release_spot_hold`)."""
    if spot_held(session):
        raise Conflict("liveness_spot_check",
                       SPOT_WAIT_CUSTOMER if customer else SPOT_WAIT_AGENT)


async def hold_for_spot_check(unit: Unit, index: int, step_id: str) -> bool:
    """At the boundary into step ``index`` (the session's current step, not yet started):
    hold it for a spot check, or not (the module docstring). True when held: the caller must
    not start the step."""
    settings = unit.deps.settings
    wanted = settings.live_liveness_spot_checks if settings.live_liveness_required else 0
    boundaries_left = len(unit.session.steps) - index  # into steps index .. last
    if wanted <= 0 or boundaries_left <= 0:
        return False
    done = await pending_spot_check(unit.session.id, unit.conn)
    left = wanted - done
    if left <= 0 or secrets.randbelow(boundaries_left) >= left:
        return False
    session = unit.session
    session.paused = True
    session.pause_reason = SPOT_HOLD
    session.answer_open_step = ""
    session.spoken = {}
    await unit.event(ACTOR, SPOT_DUE, {"check": done + 1, "step_id": step_id, "index": index,
                                       "at_ms": _offset_ms(session, unit.deps.clock())})
    return True


async def pending_spot_check(session_id: UUID, conn: BaseDBAsyncClient | None = None) -> int:
    """The number of the last spot check that fell due (0: none yet), i.e. how many did."""
    query = SessionEvent.filter(session_id=session_id, type=SPOT_DUE)
    if conn is not None:
        query = query.using_db(conn)
    return await query.count()


async def release_spot_hold(unit: Unit, spot: int) -> None:
    """Spot check ``spot`` passed: the held step starts (played once the event is out; after
    an interruption the resume plays it)."""
    session = unit.session
    if not spot_held(session) or spot != await pending_spot_check(session.id, unit.conn):
        return
    session.paused = False
    session.pause_reason = ""
    if session.state == SessionState.DISCLOSING:
        step = at_current(session)
        await unit.event(ACTOR, EventType.STEP_STARTED,
                         {"step_id": step.id, "index": session.current_step})
