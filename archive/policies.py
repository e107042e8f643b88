"""What the insurer (or the legal department) tells us about an order after the sale: the
policy's status (in force, cancelled in the cooling-off period, terminated with its date) and
disputes opening and closing (legal hold). Each change is audited and recomputes the retention
of the order's sessions (R-42) and the QA deadline (cooling-off end, R-40)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from tortoise.transactions import in_transaction

from archive.retention import recompute_order
from archive.settings import ArchiveSettings
from models.archive import ENDED_STATES, Dispute, PolicyState, PolicyStatus, PolicyStatusUpdate
from models.qa import QaTask
from models.sales import Order, Product
from models.sessions import RecordingSession
from qa.queue import OPEN_STATUSES, cooling_off_end
from security import audit
from security.audit import Actor
from workflow.core import WorkflowDeps
from workflow.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class StatusReport:
    state: PolicyState
    policy_no: str = ""
    effective_on: date | None = None
    receipt_on: date | None = None
    ended_on: date | None = None
    reason: str = ""


def _validate(report: StatusReport) -> None:
    if report.state in ENDED_STATES and report.ended_on is None:
        raise InvalidInput("ended_on_required", "保单已终止或撤单时须提供终止日期",
                           field="ended_on")
    if report.state not in ENDED_STATES and report.ended_on is not None:
        raise InvalidInput("ended_on_unexpected", "保单未终止，不应提供终止日期",
                           field="ended_on")
    if report.state == PolicyState.IN_FORCE and report.effective_on is None:
        raise InvalidInput("effective_on_required", "保单生效时须提供生效日期",
                           field="effective_on")


async def report_status(deps: WorkflowDeps, order: Order, report: StatusReport, actor: Actor,
                        settings: ArchiveSettings) -> PolicyStatus:
    _validate(report)
    now = deps.clock()
    async with in_transaction() as conn:
        status = await PolicyStatus.get_or_none(order_id=order.id, using_db=conn)
        previous = status.state.value if status else None
        if status is None:
            status = PolicyStatus(order_id=order.id)
        status.state = report.state
        status.policy_no = report.policy_no[:64] or status.policy_no
        status.effective_on = report.effective_on or status.effective_on
        status.receipt_on = report.receipt_on or status.receipt_on
        status.ended_on = report.ended_on
        status.reported_by = actor.label[:64]
        status.updated_at = now
        await status.save(using_db=conn)
        await PolicyStatusUpdate.create(
            order_id=order.id, state=report.state.value, effective_on=report.effective_on,
            receipt_on=report.receipt_on, ended_on=report.ended_on, reason=report.reason[:200],
            reported_by=actor.label[:64], at=now, using_db=conn,
        )
        await audit.record(conn, actor, "policy.status_reported", object_type="order",
                           object_id=str(order.id),
                           details={"application_no": order.application_no, "from": previous,
                                    "to": report.state.value,
                                    "ended_on": report.ended_on.isoformat()
                                    if report.ended_on else None})
    if report.receipt_on is not None:
        await _move_deadlines(order, report.receipt_on)
    await recompute_order(deps, order.id, settings)
    return status


async def _move_deadlines(order: Order, receipt_on: date) -> None:
    """The QA deadline is the end of the cooling-off period, which starts at the receipt."""
    product = await Product.get(id=order.product_id)
    deadline = cooling_off_end(receipt_on, product.cooling_off_days)
    sessions = await RecordingSession.filter(order_id=order.id).values_list("id", flat=True)
    await QaTask.filter(session_id__in=list(sessions), status__in=list(OPEN_STATUSES)).update(
        deadline=deadline, alert_level="")


async def open_dispute(deps: WorkflowDeps, order: Order, reference: str, opened_on: date,
                       note: str, actor: Actor, settings: ArchiveSettings) -> Dispute:
    if await Dispute.exists(order_id=order.id, reference=reference):
        raise Conflict("dispute_exists", "该争议编号已登记")
    async with in_transaction() as conn:
        dispute = await Dispute.create(order_id=order.id, reference=reference[:64],
                                       opened_on=opened_on, note=note[:500],
                                       opened_by=actor.label[:100], created_at=deps.clock(),
                                       using_db=conn)
        await audit.record(conn, actor, "dispute.opened", object_type="order",
                           object_id=str(order.id),
                           details={"reference": reference, "opened_on": opened_on.isoformat(),
                                    "application_no": order.application_no})
    await recompute_order(deps, order.id, settings)
    return dispute


async def close_dispute(deps: WorkflowDeps, order: Order, reference: str, closed_on: date,
                        actor: Actor, settings: ArchiveSettings) -> Dispute:
    dispute = await Dispute.get_or_none(order_id=order.id, reference=reference)
    if dispute is None:
        raise NotFound("dispute_not_found", "找不到该争议")
    if dispute.closed_on is not None:
        raise Conflict("dispute_closed", "该争议已结束")
    if closed_on < dispute.opened_on:
        raise InvalidInput("closed_before_opened", "争议结束日期早于开始日期", field="closed_on")
    async with in_transaction() as conn:
        dispute.closed_on = closed_on
        dispute.closed_by = actor.label[:100]
        await dispute.save(using_db=conn)
        await audit.record(conn, actor, "dispute.closed", object_type="order",
                           object_id=str(order.id),
                           details={"reference": reference, "closed_on": closed_on.isoformat()})
    await recompute_order(deps, order.id, settings)
    return dispute
