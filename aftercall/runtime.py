"""Everything after the call, wired for one app or worker: the settings, the archive store, the
voice activity detector (loaded on first use), the background jobs and the periodic sweep.

The sweep runs as a job (`after_call_sweep`) that the worker loop queues every interval, so it
runs wherever the job receiver runs (in the server by default, or `python -m app worker`); a
Redis lock keeps two processes from sweeping at once.

The checks of a newly sealed session wait for its after-call transcript (`qa.transcripts`): the
sweep queues `transcribe_session` first, and that job queues `qa_checks` when it is done (or
when no transcript can be made); after `transcript_wait_minutes` the sweep queues the checks
anyway, and they say the transcript is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import LockError
from tortoise.expressions import Subquery

from archive import archival, insurer, retention
from archive.archival import archive_store
from archive.settings import ArchiveSettings, InsurerSettings
from media.voice.vad import VoiceActivityDetector, load_vad
from models.qa import QaCheckReport, QaTask, ReportStatus
from models.sessions import RecordingSession, SessionState
from qa import queue, transcripts, verdicts
from qa.runner import latest_report, run_automated_checks
from qa.settings import QaSettings
from storage import ObjectStore
from workflow.core import JobQueue, WorkflowDeps

log = logging.getLogger(__name__)
SWEEP_LOCK = "after-call:sweep-lock"
PURGE_STAMP = "after-call:last-purge"


@dataclass
class AfterCall:
    qa: QaSettings
    archive: ArchiveSettings
    insurer: InsurerSettings
    store: ObjectStore
    redis: Redis
    identity_max_attempts: int = 3
    _vad: list[VoiceActivityDetector] = field(default_factory=list)

    def vad(self) -> VoiceActivityDetector:
        if not self._vad:
            self._vad.append(load_vad(self.qa.vad_engine))
        return self._vad[0]


def build_after_call(redis: Redis, evidence: ObjectStore, *, qa: QaSettings,
                     archive: ArchiveSettings, insurer: InsurerSettings,
                     identity_max_attempts: int, store: ObjectStore | None = None) -> AfterCall:
    """The after-call runtime, built once by the composition root from the configuration's
    sections. `store` is where sealed evidence is archived: the evidence store itself
    (verified in place) unless the archive settings name another."""
    return AfterCall(
        qa=qa, archive=archive, insurer=insurer,
        store=store or archive_store(archive, evidence),
        redis=redis,
        identity_max_attempts=identity_max_attempts,
    )


async def check_and_queue(deps: WorkflowDeps, rt: AfterCall, session_id: UUID) -> QaTask:
    """The automated checks, then the session's place in the QA queue (R-40)."""
    report = await run_automated_checks(deps, session_id, rt.qa, rt.vad(),
                                        identity_max_attempts=rt.identity_max_attempts)
    return await queue.enqueue(deps, session_id, rt.qa, report)


async def sweep(deps: WorkflowDeps, rt: AfterCall, jobs: JobQueue | None = None) -> dict[str, int]:
    """One pass of everything periodic after the call; returns counts for the log."""
    # A token lock (redis-py's Lock): released only while this process still owns it, never
    # a lock another process took after ours expired.
    lock = rt.redis.lock(SWEEP_LOCK, timeout=300, blocking=False)
    if not await lock.acquire():
        return {}
    try:
        return await _sweep(deps, rt, jobs)
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: someone else's now
            await lock.release()


async def _sweep(deps: WorkflowDeps, rt: AfterCall, jobs: JobQueue | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    reported = Subquery(QaCheckReport.filter(status=ReportStatus.DONE).values("session_id"))
    unchecked = await RecordingSession.filter(state=SessionState.QA_PENDING).exclude(
        id__in=reported).limit(50).values_list("id", flat=True)
    for session_id in unchecked:
        sid = UUID(str(session_id))
        if not await transcripts.ready_for_checks(deps, rt.qa, sid):
            if jobs is not None:
                await transcripts.queue_transcript(rt.redis, jobs, sid, rt.qa)
                continue
            try:
                await transcripts.make_transcript(deps, sid, redis=rt.redis, settings=rt.qa)
            except Exception:
                log.exception("transcript of %s failed; the next sweep tries again", sid)
                continue
        # Queued once per 10 minutes at most; the job is idempotent anyway.
        if jobs is not None and await rt.redis.set(f"qa:checks-queued:{session_id}", "1",
                                                   nx=True, ex=600):
            await jobs.enqueue("qa_checks", session_id=str(session_id))
        elif jobs is None:
            await check_and_queue(deps, rt, session_id)  # type: ignore[arg-type]
    counts["checks"] = len(unchecked)
    queued = Subquery(QaTask.all().values("session_id"))
    waiting = await RecordingSession.filter(state=SessionState.QA_PENDING).exclude(
        id__in=queued).limit(50).values_list("id", flat=True)
    for session_id in waiting:
        report = await latest_report(session_id)  # type: ignore[arg-type]
        if report is not None:
            await queue.enqueue(deps, session_id, rt.qa, report)  # type: ignore[arg-type]
    counts["transcripts"] = await transcripts.catch_up(deps, rt.redis, jobs, rt.qa)
    counts["closed"] = await queue.close_decided_elsewhere(deps)
    counts["alerts"] = len(await queue.check_deadlines(deps, rt.qa))
    counts["rectifications_linked"] = await verdicts.link_new_sessions(deps)
    counts["archived"] = await archival.archive_sealed(deps, rt.store)
    counts["retention_computed"] = await retention.compute_missing(deps, rt.archive)
    # Deleting is rare and date-based: once an hour is plenty.
    if await rt.redis.set(PURGE_STAMP, "1", nx=True, ex=3600):
        result = await retention.purge_due(deps, rt.store, rt.archive)
        counts["purged"] = len(result.purged)
    counts["insurer_changes"] = await insurer.sync(deps, rt.insurer, rt.redis)
    if rt.insurer.clients:
        async with aiohttp.ClientSession() as http:
            counts["webhooks"] = await insurer.deliver_due(deps, rt.insurer, http)
    return counts


def register_after_call_jobs(jobs: Any, deps: WorkflowDeps, rt: AfterCall) -> None:
    async def qa_checks(session_id: str) -> None:
        await check_and_queue(deps, rt, UUID(session_id))

    async def after_call_sweep() -> None:
        counts = await sweep(deps, rt, jobs)
        if any(counts.values()):
            log.info("after-call sweep: %s", counts)

    # Low priority: one transcript at a time per process, in a niced child process.
    one_at_a_time = asyncio.Semaphore(1)

    async def transcribe_session(session_id: str) -> str:
        sid = UUID(session_id)
        async with one_at_a_time:
            outcome = await transcripts.make_transcript(deps, sid, redis=rt.redis,
                                                        settings=rt.qa)
        # The checks waited for it (busy: the worker making it queues them).
        if outcome.status != "busy" and await transcripts.needs_checks(sid):
            await jobs.enqueue("qa_checks", session_id=session_id)
        return outcome.status

    jobs.register("qa_checks", qa_checks)
    jobs.register("after_call_sweep", after_call_sweep)
    jobs.register("transcribe_session", transcribe_session)
