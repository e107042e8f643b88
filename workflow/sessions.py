"""Creating a session behind the gates (R-02, R-03, R-26), and reading sessions within the
caller's scope (R-50: an agent sees only their own, a supervisor their branch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID, uuid4

from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.org import Institution, Premises
from models.people import Agent
from models.sales import Order, Product, ScriptVersion
from models.sessions import RecordingSession, SessionEvent, SessionState
from rules import idnumber
from scripts_library.render import RenderContext, RenderError, render
from security import audit
from security.roles import Scope
from workflow import event_types
from workflow import script_versions as versions
from workflow.core import WorkflowDeps, event_payload
from workflow.errors import Conflict, Forbidden, InvalidInput, NotFound
from workflow.event_types import EventType
from workflow.gates import GateFailure, Location, check_agent, check_gates, check_location
from workflow.orders import CustomerData, decrypt_customer
from workflow.principals import StaffPrincipal
from workflow.states import TERMINAL

# Sessions in these states do not block a new session for the same application (rectification).
REPLACEABLE = frozenset(TERMINAL - {SessionState.QA_PASSED})


class GateRefused(Forbidden):
    def __init__(self, failures: list[GateFailure]) -> None:
        super().__init__(
            "agent_gate_failed",
            "；".join(f.message for f in failures),
            failures=[{"code": f.code, "message": f.message} for f in failures],
        )


async def run_gates(
    deps: WorkflowDeps, principal: StaffPrincipal, agent: Agent, product: Product,
    location: Location | None, action: str, object_id: str,
) -> Premises:
    """R-03: on failure an audit entry is written (in its own transaction) and 403 raised."""
    premises_list = await Premises.filter(branch_id=principal.branch_id, active=True)
    result = check_gates(agent, product, premises_list, location, principal.ip,
                         deps.clock().date())
    if not result.passed or result.premises is None:
        await audit.record_alone(
            principal.actor, f"{action}.gate_failed", object_type="session",
            object_id=object_id, outcome="denied",
            details={"failures": [f.code for f in result.failures], "ip": principal.ip},
        )
        raise GateRefused(result.failures)
    return result.premises


@dataclass(frozen=True)
class Precheck:
    """What the agent console shows before anything else (R-03)."""

    failures: list[GateFailure]
    premises: Premises | None
    licence_expires: date
    training_expires: date


async def precheck(
    deps: WorkflowDeps, principal: StaffPrincipal, location: Location | None
) -> Precheck:
    """Licence, training, position and network, without a product (its grade is checked when
    the session is created)."""
    if principal.agent_id is None:
        raise Forbidden("not_an_agent", "只有销售人员可以发起远程双录")
    agent = await Agent.get(id=principal.agent_id)
    today = deps.clock().date()
    failures = check_agent(agent, None, today)
    premises_list = await Premises.filter(branch_id=principal.branch_id, active=True)
    location_failures, premises = check_location(premises_list, location, principal.ip)
    return Precheck(failures + location_failures, premises, agent.licence_expires,
                    agent.training_expires)


async def create_session(
    deps: WorkflowDeps, principal: StaffPrincipal, order_id: int, location: Location | None
) -> RecordingSession:
    if principal.agent_id is None:
        raise Forbidden("not_an_agent", "只有销售人员可以发起远程双录")
    order = await Order.get_or_none(id=order_id).prefetch_related("product", "customer")
    if order is None or order.agent_id != principal.agent_id:
        raise NotFound("order_not_found", "找不到该投保单")
    institution = await Institution.get(id=order.institution_id)
    if not institution.accepted:
        await audit.record_alone(
            principal.actor, "session.create.denied", object_type="order",
            object_id=str(order.id), outcome="denied", details={"reason": "not_accepted"},
        )
        raise Forbidden("institution_not_accepted",
                        "本机构远程双录系统尚未通过验收，暂不能开展远程双录")
    product: Product = order.product
    if not product.active or product.term_years <= 1:
        raise InvalidInput("product_out_of_scope",
                           "该产品不属于远程双录适用范围（保险期间须超过一年）")
    open_sessions = await RecordingSession.filter(order_id=order.id).exclude(
        state__in=list(REPLACEABLE)
    ).exists()
    if open_sessions:
        raise Conflict("order_already_recorded", "该投保单已有进行中或已完成的录制会话（一单一录）")
    script = await versions.published_for(product.id)
    if script is None:
        raise Conflict("script_not_published", "该产品没有已发布的话术，暂不能录制")

    agent = await Agent.get(id=principal.agent_id).prefetch_related("user")
    premises = await run_gates(deps, principal, agent, product, location, "session.create",
                               f"order:{order.id}")

    customer = decrypt_customer(deps, order.customer, order)
    age = idnumber.age_of(customer.id_number, deps.clock().date())
    steps = render_session_steps(script, order, customer, agent, institution.full_name, age)
    session_id = uuid4()
    async with in_transaction() as conn:
        session = await RecordingSession.create(
            id=session_id, order_id=order.id, agent_id=agent.id,
            institution_id=order.institution_id, branch_id=order.branch_id,
            product_id=product.id, premises_id=premises.id, script_version_id=script.id,
            script_hash=script.content_hash, steps=steps, customer_age=age, event_seq=1,
            using_db=conn,
        )
        data = {"premises_id": premises.id, "script_version": script.version,
                "script_hash": script.content_hash}
        event_types.check(EventType.CREATED, data)
        event = await SessionEvent.create(
            session_id=session.id, seq=1, type=EventType.CREATED.value, from_state="",
            to_state=SessionState.CREATED.value, actor_kind="user", actor_id=str(principal.user_id),
            ip=principal.ip, data=data, at=deps.clock(), using_db=conn,
        )
        await audit.record(
            conn, principal.actor, "session.created", object_type="session",
            object_id=str(session.id),
            details={"order_id": order.id, "premises_id": premises.id},
        )
    await deps.publisher.publish(session.id, event_payload(event))
    await deps.jobs.enqueue("prerender_session", session_id=str(session.id))
    return session


def render_session_steps(
    script: ScriptVersion, order: Order, customer: CustomerData, agent: Agent,
    institution_full_name: str, age: int,
) -> list[dict[str, Any]]:
    """The concrete steps for this customer, every variable filled (R-21, R-23): a missing
    value stops the session before the call, never a blank in the audio."""
    insured = customer.insured_name
    values = {
        **order.extra_values,
        "customer_name": customer.name, "insured_name": insured or customer.name,
        "agent_name": agent.user.display_name, "agent_licence_no": agent.licence_no,
        "institution_full_name": institution_full_name, "premium": order.premium,
        "payment_mode": order.payment_mode, "sum_insured": order.sum_insured,
        "payment_term": f"{order.payment_years}年" if order.payment_years > 1 else "一次交清",
    }
    try:
        rendered = render(versions.document_of(script), RenderContext(
            customer_age=age, values=values, policyholder_is_insured=insured is None))
    except RenderError as exc:
        raise InvalidInput("script_values_missing", str(exc)) from exc
    return [step.model_dump(mode="json") for step in rendered.steps]


def visible_sessions(principal: StaffPrincipal) -> QuerySet[RecordingSession]:
    """The sessions this caller may see; everything else does not exist for them."""
    query = RecordingSession.all()
    scope = principal.scope
    if scope == Scope.OWN:
        return query.filter(agent_id=principal.agent_id or -1)
    if scope == Scope.BRANCH:
        return query.filter(branch_id=principal.branch_id or -1)
    if scope == Scope.INSTITUTION:
        return query.filter(institution_id=principal.institution_id)
    return query.filter(id=UUID(int=0))


async def get_visible(principal: StaffPrincipal, session_id: UUID) -> RecordingSession:
    session = await visible_sessions(principal).get_or_none(id=session_id)
    if session is None:
        raise NotFound("session_not_found", "找不到该录制会话")
    return session


def current_step(session: RecordingSession) -> dict[str, Any] | None:
    if session.state != SessionState.DISCLOSING or session.current_step >= len(session.steps):
        return None
    return dict(session.steps[session.current_step], index=session.current_step)
