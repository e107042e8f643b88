"""The QA queue (R-40): every checked session gets a task; sampled ones go to an inspector
before the end of the cooling-off period (alerts before it), the others pass automatically
when their automated checks are clean (a finished report with no critical or major finding).

Deadlines count from the policy receipt the insurer reports (`PolicyStatus.receipt_on`), or,
until it does, from the day the recording was completed — earlier, so never too late.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from uuid import UUID

from tortoise.transactions import in_transaction

from models.archive import PolicyStatus
from models.people import Role, User
from models.qa import QaCheckReport, QaTask, TaskStatus
from models.sales import Product
from models.sessions import RecordingSession, SessionState
from qa.sampling import decide
from qa.settings import QaSettings
from qa.verdicts import report_is_clean
from security import audit
from security.audit import Actor
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict, NotFound, WorkflowError
from workflow.event_types import EventType

log = logging.getLogger(__name__)
CHINA = timezone(timedelta(hours=8), "CST")
OPEN_STATUSES = (TaskStatus.OPEN, TaskStatus.ASSIGNED)


def cooling_off_end(start: date, days: int) -> datetime:
    """The end (24:00 China time) of the last day of a cooling-off period starting on `start`
    (the period runs for `days` days from the day after receipt)."""
    return datetime.combine(start + timedelta(days=days + 1), time(0, 0), tzinfo=CHINA)


async def deadline_for(session: RecordingSession, product: Product) -> datetime:
    status = await PolicyStatus.get_or_none(order_id=session.order_id)
    if status is not None and status.receipt_on is not None:
        start = status.receipt_on
    else:
        done = session.completed_at or session.sealed_at or session.created_at
        start = done.astimezone(CHINA).date()
    return cooling_off_end(start, product.cooling_off_days)


async def _least_loaded_inspector(institution_id: int) -> User | None:
    inspectors = await User.filter(institution_id=institution_id, role=Role.QA_INSPECTOR,
                                   active=True).order_by("id")
    if not inspectors:
        return None
    loads = {u.id: await QaTask.filter(assignee_id=u.id, status=TaskStatus.ASSIGNED).count()
             for u in inspectors}
    return min(inspectors, key=lambda u: (loads[u.id], u.id))


async def enqueue(deps: WorkflowDeps, session_id: UUID, settings: QaSettings,
                  report: QaCheckReport) -> QaTask:
    """Creates the session's task once (idempotent) and routes it."""
    existing = await QaTask.get_or_none(session_id=session_id)
    if existing is not None:
        return existing
    session = await RecordingSession.get(id=session_id)
    product = await Product.get(id=session.product_id)
    now = deps.clock()
    decision = await decide(settings.sampling_config(), session, product, report, now)
    task = await QaTask.create(
        session_id=session_id, institution_id=session.institution_id,
        branch_id=session.branch_id, report_id=report.id, sampled=decision.sampled,
        sample_share=decision.share, sample_reasons=decision.reasons,
        deadline=await deadline_for(session, product), created_at=now,
    )
    await audit.record_alone(Actor.system("qa-queue"), "qa.task_created", object_type="session",
                             object_id=str(session_id),
                             details={"sampled": decision.sampled, "share": decision.share,
                                      "reasons": decision.reasons,
                                      "draw": round(decision.draw, 6)})
    if decision.sampled:
        inspector = await _least_loaded_inspector(session.institution_id)
        if inspector is not None:
            await assign(deps, task, inspector, Actor.system("qa-queue"))
    elif await report_is_clean(report):
        await _auto_pass(deps, task, report)
    # Otherwise (not sampled, not clean: e.g. `findings_force_review` off, or a report that did
    # not finish) the task stays open for an inspector: it never passes by itself.
    return task


async def _auto_pass(deps: WorkflowDeps, task: QaTask, report: QaCheckReport) -> None:
    """Not sampled and nothing found: qa_pending → qa_passed by the sampling rule. Only a
    finished report without a single critical or major finding is clean (R-40); the caller
    checks, and this checks again from the stored findings."""
    if task.report_id != report.id or not await report_is_clean(report):
        log.warning("session %s not auto-passed: its report %s is not clean", task.session_id,
                    report.id)
        return
    try:
        async with locked(deps, task.session_id, "review") as unit:
            await unit.move(Actor.system("qa-sampling"), SessionState.QA_PASSED,
                            EventType.QA_AUTO_PASSED,
                            {"task_id": task.id, "report_id": task.report_id,
                             "share": task.sample_share, "counts": report.counts})
            task.status = TaskStatus.AUTO_PASSED
            task.decided_at = deps.clock()
            task.verdict = "pass"
            await task.save(using_db=unit.conn)
    except WorkflowError as exc:
        log.info("session %s not auto-passed: %s", task.session_id, exc)


async def assign(deps: WorkflowDeps, task: QaTask, inspector: User, actor: Actor) -> QaTask:
    if task.status not in OPEN_STATUSES:
        raise Conflict("task_closed", "该质检任务已完成，不能再分配")
    if inspector.role != Role.QA_INSPECTOR or not inspector.active \
            or inspector.institution_id != task.institution_id:
        raise NotFound("inspector_not_found", "找不到该质检员")
    async with in_transaction() as conn:
        task.assignee_id = inspector.id
        task.assigned_at = deps.clock()
        task.status = TaskStatus.ASSIGNED
        await task.save(using_db=conn)
        await audit.record(conn, actor, "qa.task_assigned", object_type="session",
                           object_id=str(task.session_id),
                           details={"inspector": inspector.username})
    return task


def alert_level(task: QaTask, now: datetime, hours: list[int]) -> str:
    left = task.deadline - now
    if left <= timedelta(0):
        return "overdue"
    for h in sorted(hours):
        if left <= timedelta(hours=h):
            return f"due_{h}h"
    return ""


async def check_deadlines(deps: WorkflowDeps, settings: QaSettings) -> list[QaTask]:
    """Raises each open task's alert level as its deadline nears; returns the tasks alerted."""
    now = deps.clock()
    horizon = now + timedelta(hours=max(settings.alert_hours_before_deadline, default=0))
    alerted = []
    for task in await QaTask.filter(status__in=list(OPEN_STATUSES), deadline__lte=horizon):
        level = alert_level(task, now, settings.alert_hours_before_deadline)
        if level == task.alert_level:
            continue
        async with in_transaction() as conn:
            task.alert_level = level
            task.alerted_at = now
            await task.save(using_db=conn, update_fields=["alert_level", "alerted_at"])
            await audit.record(conn, Actor.system("qa-queue"), "qa.deadline_alert",
                               object_type="session", object_id=str(task.session_id),
                               details={"level": level, "deadline": task.deadline.isoformat(),
                                        "assignee_id": task.assignee_id})
        try:
            await deps.publisher.publish(task.session_id, {
                "type": "qa_deadline_alert", "level": level,
                "deadline": task.deadline.isoformat(), "at": now.isoformat()})
        except (ConnectionError, OSError):
            log.warning("could not publish the deadline alert of %s", task.session_id)
        alerted.append(task)
    return alerted


async def close_decided_elsewhere(deps: WorkflowDeps) -> int:
    """Open tasks of sessions decided outside the queue are closed. Since the plain review
    endpoint is gone only old rows can be like this; a closed task is never a recognised pass
    (`qa.verdicts.pass_standing`)."""
    closed = 0
    for task in await QaTask.filter(status__in=list(OPEN_STATUSES)).prefetch_related("session"):
        state = task.session.state
        if state in (SessionState.QA_PASSED, SessionState.QA_REJECTED):
            task.status = TaskStatus.CLOSED
            task.decided_at = deps.clock()
            task.verdict = "pass" if state == SessionState.QA_PASSED else "reject"
            await task.save()
            closed += 1
    return closed


@dataclass(frozen=True)
class QueueRow:
    task: QaTask
    session: RecordingSession
    hours_left: float


async def listing(institution_id: int, *, assignee_id: int | None = None,
                  status: list[TaskStatus] | None = None, now: datetime | None = None,
                  limit: int = 100) -> list[QueueRow]:
    query = QaTask.filter(institution_id=institution_id)
    if assignee_id is not None:
        query = query.filter(assignee_id=assignee_id)
    if status:
        query = query.filter(status__in=status)
    tasks = await query.order_by("deadline", "id").limit(limit).prefetch_related("session")
    current = now or datetime.now(UTC)
    return [QueueRow(t, t.session, round((t.deadline - current).total_seconds() / 3600, 1))
            for t in tasks]
