"""Running the automated checks on one session and storing the report with its findings (R-40).

The media analysis (decoding, voice activity) is blocking and runs in a worker thread; the
report and its findings are written in one transaction with an audit entry. The after-call
transcript (`qa.transcripts`) is read as it is stored: the after-call sweep runs the checks only
once it is there (or will not come); without it the transcript checks say they could not decide.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from tortoise.transactions import in_transaction

from media.voice.vad import VoiceActivityDetector
from models.qa import QaCheckReport, QaFinding, ReportStatus
from models.sales import Product
from qa.checks import CheckInput, run_checks
from qa.findings import FAILING, Finding, Severity, sort_key
from qa.media import MediaFacts, analyse_recordings
from qa.settings import QaSettings
from qa.timeline import Timeline, load_timeline
from qa.transcripts import read_transcript
from security import audit
from security.audit import Actor
from workflow.core import WorkflowDeps


async def latest_report(session_id: UUID) -> QaCheckReport | None:
    return await QaCheckReport.filter(session_id=session_id,
                                      status=ReportStatus.DONE).order_by("-id").first()


async def evaluate(
    deps: WorkflowDeps, session_id: UUID, settings: QaSettings, vad: VoiceActivityDetector,
    identity_max_attempts: int,
) -> tuple[Timeline, MediaFacts, list[Finding]]:
    """The findings without storing anything (the bench and the tests use it directly)."""
    timeline = await load_timeline(session_id)
    timeline.transcript = await read_transcript(deps.storage, session_id)
    product = await Product.get(id=timeline.session.product_id)
    media = await asyncio.to_thread(
        analyse_recordings, deps.storage, timeline.recordings, timeline.offset, vad,
        settings.silence_dbfs,
    )
    findings = run_checks(CheckInput(timeline, media, product, settings, identity_max_attempts))
    return timeline, media, sorted(findings, key=sort_key)


async def run_automated_checks(
    deps: WorkflowDeps, session_id: UUID, settings: QaSettings, vad: VoiceActivityDetector,
    *, identity_max_attempts: int = 3, force: bool = False,
) -> QaCheckReport:
    """Idempotent: a session with a finished report keeps it unless `force`."""
    if not force:
        existing = await latest_report(session_id)
        if existing is not None:
            return existing
    started = time.perf_counter()
    report = await QaCheckReport.create(
        session_id=session_id, status=ReportStatus.RUNNING, created_at=deps.clock(),
        engines={"vad": vad.name, "step_read_min_coverage": settings.step_read_min_coverage,
                 "max_silence_seconds": settings.max_silence_seconds,
                 "min_frame_rate": settings.min_frame_rate,
                 "min_presence_share": settings.min_presence_share},
    )
    try:
        timeline, media, findings = await evaluate(deps, session_id, settings, vad,
                                                   identity_max_attempts)
    except Exception as exc:
        report.status = ReportStatus.FAILED
        report.error = f"{type(exc).__name__}: {exc}"[:2000]
        report.finished_at = deps.clock()
        await report.save()
        raise
    counts = {s.value: 0 for s in Severity}
    for f in findings:
        counts[f.effective_severity.value] += 1
    async with in_transaction() as conn:
        for f in findings:
            await QaFinding.create(
                report_id=report.id, session_id=session_id, source="auto", code=f.code,
                severity=f.effective_severity.value, requirement=f.requirement,
                at_ms=f.at_ms, step_id=f.step_id[:64], message=f.message[:500],
                details=f.details, using_db=conn,
            )
        report.status = ReportStatus.DONE
        transcript = timeline.transcript
        report.engines = {**report.engines, "transcript": transcript.status if transcript
                          else "missing", "transcript_engine": transcript.engine
                          if transcript else ""}
        report.passed = not any(f.effective_severity in FAILING for f in findings)
        report.counts = counts
        report.recorded_ms = media.recorded_ms
        report.elapsed_ms = round((time.perf_counter() - started) * 1000)
        report.finished_at = deps.clock()
        await report.save(using_db=conn)
        await audit.record(conn, Actor.system("qa-checks"), "qa.checks_completed",
                           object_type="session", object_id=str(session_id),
                           details={"report_id": report.id, "passed": report.passed,
                                    "counts": counts})
    return report
