"""Liveness proven in the live call (R-12, issue 15 item 1): the bridge between the call hub's
live challenge runner (`media.call.live_liveness`) and the session (`workflow.live_liveness`).

When a party's media connects and both parties are now connected and recorded, a session in
``in_call`` (the script not started) whose policy requires it and that has neither passed nor
used up its runs gets a run: a plan drawn by the OS's CSPRNG (`new_challenge_plan`, the actions
of the configuration), ``liveness_prepare`` to the customer's page, then each challenge given
and judged on the customer's frames in the presence host's child, ``liveness_result`` after
each challenge and after the run, and the run's events on the timeline with their offsets in
the recording. Each challenge's best frame is matched against the verified card portrait
(`workflow.live_liveness.card_portrait`) in the judge, with the identity step's engine and
threshold; a mismatch fails the run like a failed action (the score goes on the timeline in
``face_match``). Without a stored portrait the run is judged on its actions and the timeline
says the match was ``not_run`` (QA flags it). The frame a passed run matched is stored
(`workflow.live_liveness.store_live_call_face`) and `on_live_face` told, so the presence
monitor compares the rest of the call with the call's own face rather than the clip's. A failed
run is followed by another after a pause, until the limit; a run the customer's media dropped
out of, or whose judge was unavailable, is not counted and starts again when a party
(re)connects. One run per room at a time; closing the room cancels it.

During the script the same watcher runs the **spot checks** (issue 15): when the timeline says
one fell due (``live_liveness_spot_due``, the script held at a step boundary drawn at random,
`workflow.live_liveness.hold_for_spot_check`) it is told as a step listener and runs a
one-challenge run, judged and matched against the card portrait like the first; its pass
starts the held step, its failures are retried like the first run's until the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from infra.tasks import cancel_and_wait
from media.call import CallHub, UnknownSession
from media.call.live_liveness import ChallengeRun, LiveChallengeConfig, LiveJudge, run_challenge
from media.identity.results import ChallengePlan
from models.sessions import RecordingSession, SessionState
from workflow import live_liveness
from workflow.core import WorkflowDeps

log = logging.getLogger(__name__)

PREPARE_TEXT = "请正对摄像头，保持光线充足，稍后按屏幕提示做动作"
PASSED_TEXT = "活体检测通过，请稍候，销售人员将开始讲解"
RETRY_TEXT = "活体检测未通过：{reason}。稍后将重新检测（还有 {left} 次机会）"
FINAL_TEXT = "活体检测未通过：{reason}。本次录制无法继续，请与销售人员联系"
SPOT_PREPARE_TEXT = "随机活体抽检：请正对摄像头，稍后按屏幕提示做一个动作"
SPOT_PASSED_TEXT = "抽检通过，继续播报"


@dataclass(frozen=True)
class _Due:
    spot: int | None  # the spot check due, or None: the run before the script


class LiveLivenessWatcher:
    """One run at a time per room (see the module docstring)."""

    def __init__(self, hub: Callable[[], CallHub], deps: WorkflowDeps,
                 engines: Callable[[], Any], judge: Callable[[], LiveJudge],
                 in_database: Callable[[Any], Any], *, retry_seconds: float = 4.0,
                 config: LiveChallengeConfig | None = None,
                 on_live_face: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._hub = hub
        self._deps = deps
        self._engines = engines
        self._judge = judge
        self._in_database = in_database
        self._retry_seconds = retry_seconds
        self._config = config or LiveChallengeConfig()
        # Told (the session id) once a passed run's matched frame is stored (presence, R-13).
        self._on_live_face = on_live_face
        self._runs: dict[str, asyncio.Task[None]] = {}

    def running(self, session_id: str) -> bool:
        task = self._runs.get(session_id)
        return task is not None and not task.done()

    async def parties_changed(self, session_id: str) -> None:
        """A party connected: start a run if one is due now."""
        await self._start_if_due(session_id)

    async def follow(self, session_id: UUID, session: RecordingSession | None) -> None:
        """A step listener (`workflow.call_followers.StepListener`): told the session after
        each event that moves the script, among them ``live_liveness_spot_due``."""
        if session is not None and live_liveness.spot_held(session) \
                and session.state == SessionState.DISCLOSING:
            await self._start_if_due(str(session_id))

    async def _start_if_due(self, session_id: str) -> None:
        if not self._deps.settings.live_liveness_required or self.running(session_id):
            return
        due = await self._due(UUID(session_id))
        if due is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._in_database(functools.partial(self._run_due, spot=due.spot))(session_id),
            name=f"live-liveness {session_id}")
        self._runs[session_id] = task

    async def _due(self, session_id: UUID) -> _Due | None:
        """The run due now: before the script (``in_call``), or the spot check holding it."""
        session = await RecordingSession.get_or_none(id=session_id)
        if session is None:
            return None
        if session.state == SessionState.IN_CALL:
            due = _Due(None)
        elif session.state == SessionState.DISCLOSING and live_liveness.spot_held(session):
            due = _Due(await live_liveness.pending_spot_check(session_id))
        else:
            return None
        parties = session.call_parties or {}
        if not all((parties.get(role) or {}).get("recording") for role in ("customer", "agent")):
            return None
        if "customer" not in self._hub().connected_roles(str(session_id)):
            return None
        state = await live_liveness.live_state(session_id, spot=due.spot)
        return None if state.passed or state.exhausted(self._deps.settings) else due

    async def _run_due(self, session_id: str, spot: int | None) -> None:
        """The run due, then any that fell due while it was finishing (a spot check drawn
        while the run before the script was still telling presence of its face); a run of the
        same check that ended uncounted starts again only when a party (re)connects."""
        while True:
            await self._run(session_id, spot)
            due = await self._due(UUID(session_id))
            if due is None or due.spot == spot:
                return
            spot = due.spot

    async def _run(self, session_id: str, spot: int | None) -> None:
        sid = UUID(session_id)
        while True:
            portrait = await live_liveness.card_portrait(self._deps, sid)
            if portrait is None:
                log.warning("%s: no card portrait stored; the live run cannot match the face",
                            session_id)
            engines = self._engines()
            plan = engines.new_challenge_plan()
            if spot is not None:  # one challenge: a uniformly random action of the plan's
                plan = ChallengePlan(challenges=plan.challenges[:1],
                                     time_limit_s=plan.time_limit_s)
            actions = [c.value for c in plan.challenges]
            attempt = await live_liveness.record_started(self._deps, sid, actions, spot)
            await self._send(session_id, {
                "type": "liveness_prepare", "attempt": attempt, "count": len(actions),
                "spot": spot, "text": PREPARE_TEXT if spot is None else SPOT_PREPARE_TEXT})
            runs: list[ChallengeRun] = []
            for index, challenge in enumerate(plan.challenges, start=1):
                try:
                    source = self._hub().video_source(session_id, "customer")
                except UnknownSession:
                    return  # the room closed
                run = await run_challenge(
                    source, lambda m: self._send(session_id, m), self._judge(), challenge,
                    plan.time_limit_s, key=f"{session_id}/{spot or 0}/{attempt}/{index}",
                    config=self._config, index=index, count=len(actions),
                    portrait=None if portrait is None else portrait.jpeg)
                runs.append(run)
                log.info("%s: live liveness %s%d.%d %s %s (%s) on %d frames, decode %.0f ms CPU",
                         session_id, "" if spot is None else f"spot {spot} ", attempt, index,
                         challenge.value,
                         "passed" if run.passed else "failed", run.result.reason_code or "ok",
                         len(run.frame_times), run.decode_cpu_s * 1000)
                await self._send(session_id, {
                    "type": "liveness_result", "id": run.challenge_id, "scope": "challenge",
                    "passed": run.passed, "message": "" if run.passed else run.result.reason})
                if not run.passed:
                    break
            passed = len(runs) == len(actions) and all(r.passed for r in runs)
            present = "customer" in self._hub().connected_roles(session_id)
            # Not the customer's failure: the media dropped out, or the judge was unavailable.
            counted = present and all(r.failure != "engine_error" for r in runs)
            summaries = [{**r.summary(), "sent_at": r.sent_at} for r in runs]
            face = live_liveness.face_match_record(
                summaries, None if portrait is None else portrait.attempt)
            if face["status"] != "not_run":
                log.info("%s: live face match against the card portrait: %s (distance %s, "
                         "threshold %s)", session_id, face["status"], face["distance"],
                         face["threshold"])
            # The presence reference is the first run's frame; a spot check only proves it.
            matched = (_matched_frame(runs) if passed and spot is None
                       and face["status"] == "matched" else None)
            if matched is not None:
                # Stored before the pass is recorded: whoever reads the pass finds the face.
                await live_liveness.store_live_call_face(self._deps, sid, attempt, matched)
            outcome = await live_liveness.record_result(
                self._deps, sid, attempt, passed, summaries, counted=counted, face_match=face,
                spot=spot)
            reason = next((r.result.reason for r in runs if not r.passed), None) or ""
            text = ((PASSED_TEXT if spot is None else SPOT_PASSED_TEXT) if passed
                    else FINAL_TEXT.format(reason=reason.rstrip("。")) if outcome.final
                    else RETRY_TEXT.format(reason=reason.rstrip("。"), left=outcome.attempts_left))
            await self._send(session_id, {
                "type": "liveness_result", "scope": "run", "attempt": attempt, "spot": spot,
                "passed": passed, "final": outcome.final,
                "attempts_left": outcome.attempts_left, "message": text})
            if matched is not None and self._on_live_face is not None:
                try:  # after the customer heard the result: presence may take a while
                    await self._on_live_face(session_id)
                except Exception:
                    log.exception("%s: the presence monitor was not told of the live face",
                                  session_id)
            if outcome.final or not counted:
                return  # an uncounted run starts again when a party (re)connects
            await asyncio.sleep(self._retry_seconds)
            due = await self._due(sid)
            if due is None or due.spot != spot:
                return

    async def _send(self, session_id: str, message: dict[str, Any]) -> None:
        with contextlib.suppress(UnknownSession):
            await self._hub().push(session_id, message, "customer")

    async def room_closed(self, session_id: str) -> None:
        task = self._runs.pop(session_id, None)
        if task is not None and not task.done():
            await cancel_and_wait(task, f"live liveness run of {session_id}")

    async def shutdown(self) -> None:
        for session_id in list(self._runs):
            await self.room_closed(session_id)


def _matched_frame(runs: list[ChallengeRun]) -> bytes | None:
    """The call frame that matched the card portrait best (smallest distance) among the
    challenges of a passed run, or None when none was matched."""
    matched = [(r.result.face_match.distance, r.result.matched_frame_jpeg) for r in runs
               if r.result.face_match is not None and r.result.face_match.passed
               and r.result.face_match.distance is not None and r.result.matched_frame_jpeg]
    if not matched:
        return None
    return min(matched, key=lambda m: m[0])[1]
