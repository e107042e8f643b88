"""The inspector's verdict (R-40): a decision on each finding, pass or reject, and for a
rejected session the rectification — a new session for the same order, linked to the old one,
before the cooling-off period ends. Everything of one verdict is one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from tortoise.transactions import in_transaction

from models.qa import (
    FindingDecision,
    QaFinding,
    QaTask,
    Rectification,
    RectificationStatus,
    TaskStatus,
)
from models.sessions import QaReview, RecordingSession, SessionState, Verdict
from qa.findings import FAILING, KINDS, Severity
from security import audit
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict, InvalidInput, NotFound
from workflow.gates import Location
from workflow.principals import StaffPrincipal
from workflow.sessions import create_session

DECIDED_TASK = (TaskStatus.DECIDED, TaskStatus.AUTO_PASSED, TaskStatus.CLOSED)


@dataclass(frozen=True)
class FindingDecisionInput:
    finding_id: int
    decision: FindingDecision
    note: str = ""


@dataclass(frozen=True)
class NewFinding:
    """A problem the inspector found that the checks did not (e.g. a misleading remark)."""

    message: str
    at_ms: int | None = None
    requirement: str = "R-40"
    severity: Severity = Severity.MAJOR


@dataclass(frozen=True)
class VerdictResult:
    task: QaTask
    review: QaReview
    rectification: Rectification | None


async def decide(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, verdict: Verdict,
    comments: str, decisions: list[FindingDecisionInput], new_findings: list[NewFinding],
) -> VerdictResult:
    task = await QaTask.get_or_none(session_id=session_id)
    if task is None or task.institution_id != principal.institution_id:
        raise NotFound("qa_task_not_found", "该会话不在质检队列中")
    if task.status in DECIDED_TASK:
        raise Conflict("qa_task_decided", "该会话已完成质检")
    findings = {f.id: f for f in await QaFinding.filter(session_id=session_id,
                                                        report_id=task.report_id)}
    given = {d.finding_id: d for d in decisions}
    unknown = sorted(set(given) - set(findings))
    if unknown:
        raise InvalidInput("finding_not_found", "质检结论引用了不存在的问题", finding_ids=unknown)
    undecided = [f.id for f in findings.values()
                 if Severity(f.severity) in FAILING and f.id not in given]
    if undecided:
        raise InvalidInput("findings_undecided", "请对每一项严重和重要问题给出确认或排除的结论",
                           finding_ids=sorted(undecided))
    for d in given.values():
        if d.decision == FindingDecision.DISMISSED and not d.note.strip():
            raise InvalidInput("dismissal_needs_reason", "排除问题时须说明理由",
                               finding_id=d.finding_id)
    confirmed = [findings[i] for i, d in given.items() if d.decision == FindingDecision.CONFIRMED
                 and Severity(findings[i].severity) in FAILING]
    if verdict == Verdict.PASS and (confirmed or new_findings):
        raise Conflict("pass_with_confirmed_findings", "存在已确认的问题，不能判定为质检通过")
    if verdict == Verdict.REJECT and not (confirmed or new_findings):
        raise InvalidInput("reject_needs_finding", "判定不通过时须至少确认或添加一项问题")

    now = deps.clock()
    rectification: Rectification | None = None
    async with locked(deps, session_id, "review") as unit:
        conn = unit.conn
        for d in given.values():
            f = findings[d.finding_id]
            f.decision = d.decision
            f.decision_note = d.note[:500]
            f.decided_by_id = principal.user_id
            f.decided_at = now
            await f.save(using_db=conn)
        added = []
        for n in new_findings:
            added.append(await QaFinding.create(
                report_id=task.report_id, session_id=session_id, source="inspector",
                code="inspector_note", severity=n.severity.value, requirement=n.requirement,
                at_ms=n.at_ms, message=n.message[:500], decision=FindingDecision.CONFIRMED,
                decided_by_id=principal.user_id, decided_at=now, using_db=conn,
            ))
        summary = [{"code": f.code, "message": f.message[:500]} for f in [*confirmed, *added]]
        review = await QaReview.create(
            session_id=session_id, inspector_id=principal.user_id, verdict=verdict,
            comments=comments[:2000], findings=summary, at=now, using_db=conn,
        )
        target = SessionState.QA_PASSED if verdict == Verdict.PASS else SessionState.QA_REJECTED
        await unit.move(principal.actor, target, f"qa_{verdict.value}",
                        {"review_id": review.id, "findings": len(summary), "task_id": task.id})
        task.status = TaskStatus.DECIDED
        task.verdict = verdict.value
        task.decided_at = now
        if task.assignee_id is None:
            task.assignee_id = principal.user_id
            task.assigned_at = now
        await task.save(using_db=conn)
        if verdict == Verdict.REJECT:
            rectification = await Rectification.create(
                order_id=unit.session.order_id, original_session_id=session_id,
                reasons=summary, created_by_id=principal.user_id, created_at=now,
                # Re-recording must also be done before the cooling-off period ends.
                deadline=max(task.deadline, now + timedelta(hours=24)), using_db=conn,
            )
            await audit.record(conn, principal.actor, "qa.rectification_required",
                               object_type="session", object_id=str(session_id),
                               details={"rectification_id": rectification.id,
                                        "order_id": unit.session.order_id})
        # This session may itself be the re-recording of a rejected one.
        earlier = await Rectification.filter(new_session_id=session_id).using_db(conn).first()
        if earlier is not None:
            earlier.status = (RectificationStatus.DONE if verdict == Verdict.PASS
                              else RectificationStatus.FAILED)
            await earlier.save(using_db=conn)
    return VerdictResult(task, review, rectification)


async def start_rectification(
    deps: WorkflowDeps, principal: StaffPrincipal, rectification_id: int,
    location: Location | None,
) -> RecordingSession:
    """The agent records the order again (all gates apply); the new session is linked."""
    rect = await Rectification.get_or_none(id=rectification_id).prefetch_related("order")
    if rect is None or principal.agent_id is None or rect.order.agent_id != principal.agent_id:
        raise NotFound("rectification_not_found", "找不到该整改任务")
    if rect.status != RectificationStatus.REQUIRED:
        raise Conflict("rectification_started", "该整改任务已发起重新录制")
    session = await create_session(deps, principal, rect.order_id, location)
    await link(deps, rect, session, principal.actor)
    return session


async def link(deps: WorkflowDeps, rect: Rectification, session: RecordingSession,
               actor: Any) -> None:
    async with in_transaction() as conn:
        rect.new_session_id = session.id
        rect.status = RectificationStatus.RECORDING
        rect.linked_at = deps.clock()
        await rect.save(using_db=conn)
        await audit.record(conn, actor, "qa.rectification_linked", object_type="session",
                           object_id=str(session.id),
                           details={"rectification_id": rect.id,
                                    "original_session": str(rect.original_session_id)})


async def link_new_sessions(deps: WorkflowDeps) -> int:
    """A new session an agent created for a rejected order through the plain endpoint is
    linked too (the sweep calls this)."""
    from security.audit import Actor

    linked = 0
    for rect in await Rectification.filter(status=RectificationStatus.REQUIRED):
        session = await RecordingSession.filter(
            order_id=rect.order_id, created_at__gt=rect.created_at,
        ).exclude(id=rect.original_session_id).order_by("created_at").first()
        if session is not None:
            await link(deps, rect, session, Actor.system("qa-queue"))
            linked += 1
    return linked


def kinds_catalogue() -> list[dict[str, str]]:
    return [{"code": k.code, "severity": k.severity.value, "requirement": k.requirement,
             "title": k.title} for k in KINDS.values()]
