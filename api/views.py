"""How objects look in responses; personal data is masked unless the role needs it (R-52)."""

from __future__ import annotations

from typing import Any

from models import lean
from models.sales import Order
from models.sessions import RecordingSession, Signature
from scripts_library.render import SessionStep
from security.masking import mask_id_number, mask_name, mask_phone
from security.roles import Permission
from workflow.core import WorkflowDeps
from workflow.live_liveness import spot_held
from workflow.orders import decrypt_customer
from workflow.principals import StaffPrincipal
from workflow.sessions import current_step
from workflow.states import STATE_LABELS_ZH
from workflow.steps import step_at


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def customer_view(
    deps: WorkflowDeps, order: Order, principal: StaffPrincipal | None
) -> dict[str, Any]:
    customer = await order.customer
    data = decrypt_customer(deps, customer)
    full = principal is not None and principal.can(Permission.VIEW_PERSONAL_DATA)
    return {
        "name": data.name if full else mask_name(data.name),
        "id_number": data.id_number if full else mask_id_number(data.id_number),
        "phone": (data.phone if full else mask_phone(data.phone)) if data.phone else None,
        "masked": not full,
    }


async def order_view(
    deps: WorkflowDeps, order: Order, principal: StaffPrincipal | None
) -> dict[str, Any]:
    product = await order.product
    return {
        "id": order.id, "application_no": order.application_no,
        "product": {"code": product.code, "name": product.name,
                    "type": product.product_type.value, "term_years": product.term_years},
        "premium": f"{order.premium:.2f}", "payment_years": order.payment_years,
        "payment_mode": order.payment_mode,
        "sum_insured": f"{order.sum_insured:.2f}" if order.sum_insured is not None else None,
        "customer": await customer_view(deps, order, principal),
        "created_at": _iso(order.created_at),
    }


def spoken_view(session: RecordingSession, step: SessionStep | None) -> dict[str, Any] | None:
    """The current step's spoken answer so far (R-24), or None for other steps."""
    if step is None or step.answer != "spoken_answer":
        return None
    state = session.spoken if session.spoken.get("step_id") == step.id else {}
    return {"attempts": int(state.get("attempts", 0)), "heard": state.get("heard", ""),
            "verdict": state.get("verdict", ""), "buttons": bool(state.get("buttons"))}


def _disclosed(session: RecordingSession) -> tuple[dict[str, Any] | None, SessionStep | None]:
    """The current step as the pages get it (its JSON with its index), and typed."""
    shown = current_step(session)
    return shown, (None if shown is None else step_at(session, session.current_step))


def session_summary(session: RecordingSession) -> dict[str, Any]:
    shown, step = _disclosed(session)
    return {
        "id": str(session.id), "state": session.state.value,
        "state_label": STATE_LABELS_ZH[session.state], "paused": session.paused,
        "pause_reason": session.pause_reason, "current_step": shown,
        "step_count": len(session.steps), "steps_done": min(session.current_step,
                                                            len(session.steps)),
        "identity_attempts": session.identity_attempts, "order_id": session.order_id,
        "script_hash": session.script_hash, "customer_age": session.customer_age,
        "created_at": _iso(session.created_at), "consented_at": _iso(session.consented_at),
        "recording_started_at": _iso(session.recording_started_at),
        "completed_at": _iso(session.completed_at), "sealed_at": _iso(session.sealed_at),
        "ended_at": _iso(session.ended_at), "end_reason": session.end_reason,
        "answer_open": bool(step and session.answer_open_step == step.id),
        "spoken": spoken_view(session, step),
        # Whose media is connected and recorded; the script starts only with both.
        "call_parties": session.call_parties or {},
        "speaking": bool(step and session.speaking_step == step.id),
    }


async def session_view(
    deps: WorkflowDeps, session: RecordingSession, principal: StaffPrincipal
) -> dict[str, Any]:
    order = await Order.get(id=session.order_id)
    return {**session_summary(session), "order": await order_view(deps, order, principal),
            "steps": session.steps, "manifest": session.manifest}


_SIGNED_SQL = "SELECT 1 FROM signature WHERE session_id = ? LIMIT 1"


async def customer_session_view(session: RecordingSession) -> dict[str, Any]:
    """What the customer page sees: its own progress, never other data."""
    shown, step = _disclosed(session)
    # Every customer request answers with this view: the query is written out (issue 14).
    signed = await lean.exists(Signature, _SIGNED_SQL,
                               [lean.param(Signature, "session_id", session.id)])
    return {
        "signed": signed,
        "speaking": bool(step and session.speaking_step == step.id),
        # The server accepts the answer to the current step now: the page shows its
        # buttons or pads only then.
        "answer_open": bool(step and session.answer_open_step == step.id),
        # A spoken-answer step: what was heard, and whether the buttons are offered.
        "spoken": spoken_view(session, step),
        "id": str(session.id), "state": session.state.value,
        "state_label": STATE_LABELS_ZH[session.state], "paused": session.paused,
        # A spot check of liveness holds the script (issue 15): not a pause for explaining.
        "liveness_check": spot_held(session),
        "current_step": shown, "step_count": len(session.steps),
        "steps_done": min(session.current_step, len(session.steps)),
    }
