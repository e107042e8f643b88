"""The inspector's verdict (R-40) — the one path by which a session leaves `qa_pending` through
an inspector: a decision on each finding, pass or reject, and for a rejected session the
rectification — a new session for the same order, linked to the old one, before the
cooling-off period ends. Everything of one verdict is one transaction.

Dismissing a finding needs a reason from `qa.dismissals.REASONS` and a note; a critical
finding's dismissal is proposed by one inspector and takes effect only when a second, different
inspector of the institution approves it (four eyes). A pass is refused while any critical or
major finding is undecided, confirmed, or dismissed without that approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from models.qa import (
    DismissalStatus,
    FindingDecision,
    QaCheckReport,
    QaDismissal,
    QaFinding,
    QaTask,
    Rectification,
    RectificationStatus,
    ReportStatus,
    TaskStatus,
)
from models.sessions import QaReview, RecordingSession, SessionState, Verdict
from qa import dismissals as dm
from qa.findings import KINDS, SEVERITY_RANK, Severity
from security import audit
from security.roles import Permission
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict, Forbidden, InvalidInput, NotFound
from workflow.event_types import EventType
from workflow.gates import Location
from workflow.principals import StaffPrincipal
from workflow.sessions import create_session

DECIDED_TASK = (TaskStatus.DECIDED, TaskStatus.AUTO_PASSED, TaskStatus.CLOSED)

# The timeline event of an inspector's verdict.
QA_EVENTS = {Verdict.PASS: EventType.QA_PASS, Verdict.REJECT: EventType.QA_REJECT}


@dataclass(frozen=True)
class FindingDecisionInput:
    finding_id: int
    decision: FindingDecision
    note: str = ""
    reason_code: str = ""  # for a dismissal: a code of qa.dismissals.REASONS
    duplicate_of: int | None = None  # for the reason `duplicate`


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
    counts: dict[str, int]


def _title(f: QaFinding) -> str:
    return KINDS[f.code].title if f.code in KINDS else f.code


async def _open_task(principal: StaffPrincipal, session_id: UUID) -> QaTask:
    if not principal.can(Permission.INSPECT):
        raise Forbidden("permission_denied", "您没有执行此操作的权限")
    task = await QaTask.get_or_none(session_id=session_id)
    if task is None or task.institution_id != principal.institution_id:
        raise NotFound("qa_task_not_found", "该会话不在质检队列中（自动质检尚未完成）")
    if task.status in DECIDED_TASK:
        raise Conflict("qa_task_decided", "该会话已完成质检")
    return task


async def _load(conn: BaseDBAsyncClient, session_id: UUID,
                task: QaTask) -> tuple[dict[int, QaFinding], list[QaDismissal]]:
    """The task's findings (its report's, and those inspectors added) and their dismissals,
    read inside the session's lock."""
    findings = {f.id: f for f in await QaFinding.filter(
        session_id=session_id, report_id=task.report_id).using_db(conn).order_by("id")}
    rows = await QaDismissal.filter(session_id=session_id,
                                    finding_id__in=list(findings) or [0]
                                    ).using_db(conn).order_by("id")
    return findings, list(rows)


def _validate_dismissal(finding: QaFinding, reason_code: str, note: str,
                        duplicate_of: int | None, findings: dict[int, QaFinding],
                        dismissals: list[QaDismissal]) -> None:
    """The reason is on the list, explains this kind of finding, and the note says what the
    inspector saw; a duplicate names a finding that stays to be decided."""
    if not reason_code:
        raise InvalidInput("dismissal_needs_reason", "排除问题时须选择规定的排除理由并说明情况",
                           finding_id=finding.id)
    if finding.code in dm.NOT_DISMISSIBLE:
        raise InvalidInput("finding_not_dismissible",
                           f"问题 #{finding.id}“{_title(finding)}”不能排除，只能确认后重新录制",
                           finding_id=finding.id)
    reason = dm.REASONS.get(reason_code)
    if reason is None:
        raise InvalidInput("dismissal_reason_unknown", "排除理由不在规定的理由列表中",
                           finding_id=finding.id, allowed=list(dm.REASONS))
    if not reason.allows(finding.code):
        raise InvalidInput(
            "dismissal_reason_not_allowed",
            f"“{reason.label}”不能作为排除“{_title(finding)}”的理由",
            finding_id=finding.id, allowed=[r.code for r in dm.reasons_for(finding.code)])
    if not note.strip():
        raise InvalidInput("dismissal_needs_note", f"请在备注中{reason.note_hint}",
                           finding_id=finding.id)
    if reason.code != "duplicate":
        return
    target = findings.get(duplicate_of) if duplicate_of is not None else None
    if target is None or target.id == finding.id:
        raise InvalidInput("duplicate_of_invalid", "请指明本会话中与之重复的另一项问题",
                           finding_id=finding.id)
    if SEVERITY_RANK[Severity(target.severity)] > SEVERITY_RANK[Severity(finding.severity)]:
        raise InvalidInput("duplicate_of_invalid", "重复的问题须至少同等严重",
                           finding_id=finding.id)
    target_dismissals = [d for d in dismissals if d.finding_id == target.id
                         and d.status != DismissalStatus.REFUSED]
    if dm.standing(target, dismissals) in (dm.Standing.DISMISSED,
                                           dm.Standing.DISMISSAL_PROPOSED) \
            or any(d.reason_code == "duplicate" for d in target_dismissals):
        raise InvalidInput("duplicate_of_invalid", "被引用的问题本身已排除或正在申请排除，"
                           "不能以“重复”为由排除", finding_id=finding.id)


def _apply_dismissal(finding: QaFinding, dismissal: QaDismissal, now: datetime) -> None:
    finding.decision = FindingDecision.DISMISSED
    finding.dismissal_reason = dismissal.reason_code
    finding.decision_note = dismissal.note[:500]
    finding.decided_by_id = dismissal.proposed_by_id
    finding.decided_at = now


def _dismissal_details(f: QaFinding, d: QaDismissal) -> dict[str, Any]:
    return {"finding_id": f.id, "code": f.code, "severity": f.severity,
            "dismissal_id": d.id, "reason_code": d.reason_code,
            "reason": dm.REASONS[d.reason_code].label, "note": d.note[:200],
            "duplicate_of": d.duplicate_of_id, "four_eyes": d.four_eyes,
            "proposed_by": d.proposed_by_id, "reviewed_by": d.reviewed_by_id}


async def propose_dismissal(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, finding_id: int,
    reason_code: str, note: str, duplicate_of: int | None = None,
) -> QaDismissal:
    """Dismisses a major (or lesser) finding at once; for a critical finding records the
    proposal, which a second inspector approves or refuses (R-40, four eyes)."""
    task = await _open_task(principal, session_id)
    async with locked(deps, session_id, "review") as unit:
        conn = unit.conn
        findings, dismissals = await _load(conn, session_id, task)
        finding = findings.get(finding_id)
        if finding is None:
            raise NotFound("finding_not_found", "找不到该问题")
        current = dm.standing(finding, dismissals)
        if current in (dm.Standing.CONFIRMED, dm.Standing.DISMISSED):
            raise Conflict("finding_decided",
                           f"问题 #{finding.id} 已有结论：{dm.STANDING_LABELS_ZH[current]}")
        if current == dm.Standing.DISMISSAL_PROPOSED:
            raise Conflict("dismissal_pending", f"问题 #{finding.id} 已有待复核的排除申请")
        _validate_dismissal(finding, reason_code, note, duplicate_of, findings, dismissals)
        now = deps.clock()
        four_eyes = dm.needs_four_eyes(finding)
        dismissal = await QaDismissal.create(
            finding_id=finding.id, session_id=session_id, reason_code=reason_code,
            note=note.strip()[:500],
            duplicate_of_id=duplicate_of if reason_code == "duplicate" else None,
            four_eyes=four_eyes,
            status=DismissalStatus.PROPOSED if four_eyes else DismissalStatus.APPROVED,
            proposed_by_id=principal.user_id, proposed_at=now, using_db=conn,
        )
        if not four_eyes:
            _apply_dismissal(finding, dismissal, now)
            await finding.save(using_db=conn)
        action = "qa.finding_dismissal_proposed" if four_eyes else "qa.finding_dismissed"
        await audit.record(conn, principal.actor, action, object_type="session",
                           object_id=str(session_id),
                           details=_dismissal_details(finding, dismissal))
    return dismissal


async def review_dismissal(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, finding_id: int,
    approve: bool, note: str = "",
) -> QaDismissal:
    """The second inspector approves (the dismissal takes effect) or refuses (the finding stays
    open) a proposed dismissal of a critical finding. Never the proposer (four eyes)."""
    task = await _open_task(principal, session_id)
    async with locked(deps, session_id, "review") as unit:
        conn = unit.conn
        findings, dismissals = await _load(conn, session_id, task)
        finding = findings.get(finding_id)
        if finding is None:
            raise NotFound("finding_not_found", "找不到该问题")
        pending = [d for d in dismissals
                   if d.finding_id == finding.id and d.status == DismissalStatus.PROPOSED]
        if not pending or finding.decision is not None:
            raise Conflict("no_dismissal_pending", f"问题 #{finding.id} 没有待复核的排除申请")
        dismissal = pending[-1]
        if dismissal.proposed_by_id == principal.user_id:
            raise Conflict("dismissal_same_inspector",
                           "严重问题的排除须由另一名质检员复核，不能复核本人提出的申请")
        if not approve and not note.strip():
            raise InvalidInput("refusal_needs_note", "不同意排除时须说明理由")
        if approve:
            # The facts may have moved since the proposal (e.g. a duplicate's target).
            others = [d for d in dismissals if d.id != dismissal.id]
            _validate_dismissal(finding, dismissal.reason_code, dismissal.note,
                                dismissal.duplicate_of_id, findings, others)
        now = deps.clock()
        dismissal.status = DismissalStatus.APPROVED if approve else DismissalStatus.REFUSED
        dismissal.reviewed_by_id = principal.user_id
        dismissal.reviewed_at = now
        dismissal.review_note = note.strip()[:500]
        await dismissal.save(using_db=conn)
        if approve:
            _apply_dismissal(finding, dismissal, now)
            await finding.save(using_db=conn)
        action = ("qa.finding_dismissal_approved" if approve
                  else "qa.finding_dismissal_refused")
        await audit.record(conn, principal.actor, action, object_type="session",
                           object_id=str(session_id),
                           details={**_dismissal_details(finding, dismissal),
                                    "review_note": dismissal.review_note[:200]})
    return dismissal


async def decide(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, verdict: Verdict,
    comments: str, decisions: list[FindingDecisionInput], new_findings: list[NewFinding],
) -> VerdictResult:
    task = await _open_task(principal, session_id)
    try:
        return await _decide(deps, principal, session_id, task, verdict, comments, decisions,
                             new_findings)
    except Conflict as exc:
        if exc.code == "qa_pass_blocked":
            # The refusal is audited too, in its own transaction (the verdict's rolled back).
            await audit.record_alone(principal.actor, "qa.pass_refused", object_type="session",
                                     object_id=str(session_id), outcome="failure",
                                     details={"task_id": task.id, **exc.extra})
        raise


async def _decide(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, task: QaTask,
    verdict: Verdict, comments: str, decisions: list[FindingDecisionInput],
    new_findings: list[NewFinding],
) -> VerdictResult:
    rectification: Rectification | None = None
    async with locked(deps, session_id, "review") as unit:
        conn = unit.conn
        findings, dismissals = await _load(conn, session_id, task)
        given = {d.finding_id: d for d in decisions}
        unknown = sorted(set(given) - set(findings))
        if unknown:
            raise InvalidInput("finding_not_found", "质检结论引用了不存在的问题",
                               finding_ids=unknown)
        now = deps.clock()
        # Validate every decision before anything is written; dismissals of majors made in the
        # verdict take effect with it, a critical's needs its approved proposal beforehand.
        new_dismissals: list[QaDismissal] = []
        for d in given.values():
            f = findings[d.finding_id]
            if d.decision != FindingDecision.DISMISSED \
                    or dm.standing(f, dismissals) == dm.Standing.DISMISSED:
                continue
            _validate_dismissal(f, d.reason_code, d.note, d.duplicate_of, findings, dismissals)
            if dm.needs_four_eyes(f):
                raise Conflict(
                    "dismissal_needs_second_inspector",
                    f"严重问题 #{f.id}“{_title(f)}”须先提交排除申请，经另一名质检员复核同意后"
                    "方可排除", finding_id=f.id)
            new_dismissals.append(QaDismissal(
                finding_id=f.id, session_id=session_id, reason_code=d.reason_code,
                note=d.note.strip()[:500],
                duplicate_of_id=d.duplicate_of if d.reason_code == "duplicate" else None,
                four_eyes=False, status=DismissalStatus.APPROVED,
                proposed_by_id=principal.user_id, proposed_at=now))
        # Where each finding stands once this verdict's decisions are applied.
        for d in given.values():
            f = findings[d.finding_id]
            if d.decision == FindingDecision.CONFIRMED:
                f.decision = FindingDecision.CONFIRMED
                f.decision_note = d.note[:500]
                f.dismissal_reason = ""
                f.decided_by_id = principal.user_id
                f.decided_at = now
        for nd in new_dismissals:
            _apply_dismissal(findings[nd.finding_id], nd, now)
        every = [*dismissals, *new_dismissals]
        blocked = dm.blocking(findings.values(), every)
        if verdict == Verdict.PASS:
            if new_findings:
                raise Conflict("pass_with_confirmed_findings",
                               "存在质检员添加的问题，不能判定为质检通过")
            if blocked:
                raise Conflict(
                    "qa_pass_blocked",
                    f"以下严重或重要问题尚未排除，不能判定为质检通过：{dm.describe(blocked)}",
                    finding_ids=[f.id for f, _ in blocked],
                    standings={str(f.id): s.value for f, s in blocked},
                    counts=dm.counts(findings.values(), every))
        else:
            open_ = [f.id for f, s in blocked if s != dm.Standing.CONFIRMED]
            if open_:
                raise InvalidInput("findings_undecided",
                                   "请对每一项严重和重要问题给出确认或（经复核的）排除结论",
                                   finding_ids=open_)
            if not any(s == dm.Standing.CONFIRMED for _, s in blocked) and not new_findings:
                raise InvalidInput("reject_needs_finding", "判定不通过时须至少确认或添加一项问题")

        for d in given.values():
            if d.decision == FindingDecision.CONFIRMED:
                await findings[d.finding_id].save(using_db=conn)
        for nd in new_dismissals:
            await nd.save(using_db=conn)
            f = findings[nd.finding_id]
            await f.save(using_db=conn)
            await audit.record(conn, principal.actor, "qa.finding_dismissed",
                               object_type="session", object_id=str(session_id),
                               details=_dismissal_details(f, nd))
        added = []
        for n in new_findings:
            added.append(await QaFinding.create(
                report_id=task.report_id, session_id=session_id, source="inspector",
                code="inspector_note", severity=n.severity.value, requirement=n.requirement,
                at_ms=n.at_ms, message=n.message[:500], decision=FindingDecision.CONFIRMED,
                decided_by_id=principal.user_id, decided_at=now, using_db=conn,
            ))
        counts = {**dm.counts([*findings.values(), *added], every), "added": len(added)}
        confirmed = [f for f, s in blocked if s == dm.Standing.CONFIRMED]
        summary = [{"code": f.code, "message": f.message[:500]} for f in [*confirmed, *added]]
        review = await QaReview.create(
            session_id=session_id, inspector_id=principal.user_id, verdict=verdict,
            comments=comments[:2000], findings=summary, at=now, using_db=conn,
        )
        target = SessionState.QA_PASSED if verdict == Verdict.PASS else SessionState.QA_REJECTED
        await unit.move(principal.actor, target, QA_EVENTS[verdict],
                        {"review_id": review.id, "task_id": task.id, **counts})
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
    return VerdictResult(task, review, rectification, counts)


@dataclass(frozen=True)
class PassStanding:
    """Whether a session's `qa_passed` is a pass the rules recognise (R-40, R-43)."""

    recognised: bool
    basis: str = ""  # "inspector" | "auto_pass"
    reason: str = ""  # why not, an English code


async def pass_standing(session: RecordingSession) -> PassStanding:
    """A pass counts only when it went through this path: the task decided "pass" with every
    critical and major finding dismissed in effect, or a clean automatic pass (a finished
    report without a single critical or major finding). Anything else — a session passed by the
    retired plain review endpoint, a dismissal without its approval — does not."""
    if session.state != SessionState.QA_PASSED:
        return PassStanding(False, reason="not_passed")
    task = await QaTask.get_or_none(session_id=session.id)
    if task is None:
        return PassStanding(False, reason="no_qa_task")
    findings = await QaFinding.filter(session_id=session.id, report_id=task.report_id)
    if task.status == TaskStatus.DECIDED and task.verdict == Verdict.PASS.value:
        rows = await QaDismissal.filter(session_id=session.id)
        if dm.blocking(findings, rows):
            return PassStanding(False, reason="findings_not_dismissed")
        if not await QaReview.exists(session_id=session.id, verdict=Verdict.PASS):
            return PassStanding(False, reason="no_review")
        return PassStanding(True, basis="inspector")
    if task.status == TaskStatus.AUTO_PASSED:
        report = (await QaCheckReport.get_or_none(id=task.report_id)
                  if task.report_id is not None else None)
        if report is None or not await report_is_clean(report):
            return PassStanding(False, reason="auto_pass_not_clean")
        return PassStanding(True, basis="auto_pass")
    return PassStanding(False, reason="not_decided_by_qa")


async def report_is_clean(report: QaCheckReport) -> bool:
    """A finished report whose stored findings hold no critical or major one: a report that is
    running, failed, or undecided (`passed` not True) is never clean."""
    if report.status != ReportStatus.DONE or report.passed is not True:
        return False
    return not await QaFinding.filter(
        report_id=report.id, severity__in=[Severity.CRITICAL.value, Severity.MAJOR.value],
    ).exists()


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


def kinds_catalogue() -> list[dict[str, Any]]:
    return [{"code": k.code, "severity": k.severity.value, "requirement": k.requirement,
             "title": k.title, "dismissal_reasons": [r.code for r in dm.reasons_for(k.code)]}
            for k in KINDS.values()]
