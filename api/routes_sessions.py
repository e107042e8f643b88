"""Staff endpoints for orders and sessions: create behind the gates, invite, drive the call,
complete, abort, review. Every session read is limited to the caller's scope (R-50)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from aiohttp import web

from api.auth import staff
from api.http import ChoiceQuery, IntQuery, path_int, path_uuid, read_json
from api.keys import DEPS, ROOMS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import (
    InvitationIssued,
    OrderView,
    SessionPage,
    SessionSummary,
    SessionView,
    Timeline,
)
from api.schemas import (
    CreateSessionBody,
    InvitationBody,
    LocationBody,
    LocationOnlyBody,
    NoteBody,
    OrderBody,
    ReasonBody,
    StepBody,
)
from api.views import order_view, session_summary, session_view
from models.sales import Order
from models.sessions import (
    Acknowledgement,
    IdentityCheck,
    RecordingSession,
    SessionEvent,
    SessionState,
    Signature,
)
from security.roles import Permission
from workflow import call, invitations
from workflow.core import WorkflowDeps, event_payload
from workflow.gates import Location
from workflow.orders import NewOrder, create_order
from workflow.principals import StaffPrincipal
from workflow.sessions import create_session, get_visible, visible_sessions
from workflow.states import ABORTABLE

api = Api()
P = Permission


def _location(body: LocationBody | None) -> Location | None:
    return Location(body.lat, body.lng, body.accuracy_m) if body else None


@api.endpoint("POST", "/orders", summary="Create an order (application) for a customer",
              tag="orders", permission=P.RECORD, body=OrderBody, returns=OrderView, status=201,
              responses={404: "the product is not on sale", 409: "application number taken",
                         422: "the order's values do not fit the product"})
async def post_order(request: web.Request) -> web.Response:
    body = await read_json(request, OrderBody)
    deps = request.app[DEPS]
    order = await create_order(deps, staff(request), NewOrder(
        application_no=body.application_no, product_code=body.product_code,
        customer_name=body.customer.name, customer_id_number=body.customer.id_number,
        customer_phone=body.customer.phone, premium=body.premium,
        payment_years=body.payment_years, payment_mode=body.payment_mode,
        sum_insured=body.sum_insured, insured_name=body.insured_name,
        extra_values={k: str(v) for k, v in body.extra_values.items()},
    ))
    return json_response(await order_view(deps, order, staff(request)), status=201)


@api.endpoint("GET", "/orders/{order_id}", summary="One order of the calling agent",
              tag="orders", permission=P.RECORD, returns=OrderView)
async def get_order(request: web.Request) -> web.Response:
    principal = staff(request)
    order = await Order.get_or_none(id=path_int(request, "order_id"), agent_id=principal.agent_id)
    if order is None:
        raise ApiProblem(404, "order_not_found", "找不到该投保单")
    return json_response(await order_view(request.app[DEPS], order, principal))


@api.endpoint("POST", "/sessions", summary="Create a session (checks R-02, R-03, R-26)",
              tag="sessions", permission=P.RECORD, body=CreateSessionBody, returns=SessionView,
              status=201, responses={403: "a gate failed", 404: "no such order",
                                     409: "order already recorded"})
async def post_session(request: web.Request) -> web.Response:
    body = await read_json(request, CreateSessionBody)
    deps = request.app[DEPS]
    session = await create_session(deps, staff(request), body.order_id, _location(body.location))
    return json_response(await session_view(deps, session, staff(request)), status=201)


STATE = ChoiceQuery.of("state", SessionState)
LIMIT = IntQuery("limit", default=50, low=1, high=500)
OFFSET = IntQuery("offset", default=0, low=0, high=10**9)


@api.endpoint("GET", "/sessions", summary="Sessions visible to the caller", tag="sessions",
              permission=P.VIEW_SESSIONS, query=(STATE, LIMIT, OFFSET), returns=SessionPage)
async def list_sessions(request: web.Request) -> web.Response:
    query = visible_sessions(staff(request))
    if state := STATE.read(request):
        query = query.filter(state=SessionState(state))
    limit, offset = LIMIT.read(request), OFFSET.read(request)
    total = await query.count()
    rows = await query.order_by("-created_at").offset(offset).limit(limit)
    return json_response({"total": total, "items": [session_summary(s) for s in rows]})


@api.endpoint("GET", "/sessions/{session_id}", summary="One session", tag="sessions",
              permission=P.VIEW_SESSIONS, returns=SessionView)
async def get_session(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    return json_response(await session_view(request.app[DEPS], session, principal))


@api.endpoint("GET", "/sessions/{session_id}/events", summary="The session timeline",
              tag="sessions", permission=P.VIEW_SESSIONS, returns=Timeline)
async def get_events(request: web.Request) -> web.Response:
    session = await get_visible(staff(request), path_uuid(request))
    events = await SessionEvent.filter(session_id=session.id).order_by("seq")
    acks = await Acknowledgement.filter(session_id=session.id).order_by("id")
    checks = await IdentityCheck.filter(session_id=session.id).order_by("attempt")
    return json_response({
        "events": [event_payload(e) for e in events],
        "acknowledgements": [
            {"step_id": a.step_id, "step_index": a.step_index, "answer": a.answer.value,
             "answer_kind": a.answer_kind, "text": a.text, "at": a.at.isoformat(),
             "offset_ms": a.offset_ms} for a in acks
        ],
        "identity_checks": [
            {"attempt": c.attempt, "passed": c.passed, "reasons": c.reasons,
             "at": c.at.isoformat(),
             "engines": {k: getattr(c, k).get("engine", "") for k in ("ocr", "face", "liveness")}}
            for c in checks
        ],
    })


@api.endpoint("POST", "/sessions/{session_id}/invitation",
              summary="Issue (or re-issue) the single-use invitation link", tag="sessions",
              permission=P.RECORD, body=InvitationBody, returns=InvitationIssued, status=201,
              responses={409: "the session cannot be invited now"})
async def post_invitation(request: web.Request) -> web.Response:
    body = await read_json(request, InvitationBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    issued = await invitations.issue(request.app[DEPS], principal, session.id, body.channel)
    return json_response({"token": issued.token, "url": issued.url,
                              "expires_at": issued.expires_at.isoformat(),
                              "channel": issued.channel}, status=201)


SessionAction = Callable[[WorkflowDeps, StaffPrincipal, UUID], Awaitable[RecordingSession]]


async def _act(request: web.Request, action: SessionAction) -> web.Response:
    """A call action on a session the caller may see; answers with the session's summary."""
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    return json_response(session_summary(await action(request.app[DEPS], principal, session.id)))


@api.endpoint("POST", "/sessions/{session_id}/call/start",
              summary="Start the call (gates re-checked, recording clock starts)",
              tag="call", permission=P.RECORD, body=LocationOnlyBody,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_call_start(request: web.Request) -> web.Response:
    location = _location((await read_json(request, LocationOnlyBody)).location)
    return await _act(request, lambda d, p, sid: call.start_call(d, p, sid, location))


@api.endpoint("POST", "/sessions/{session_id}/call/resume",
              summary="Resume an interrupted call within the window (断点续录)", tag="call",
              permission=P.RECORD, body=LocationOnlyBody,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_call_resume(request: web.Request) -> web.Response:
    location = _location((await read_json(request, LocationOnlyBody)).location)
    return await _act(request, lambda d, p, sid: call.resume_call(d, p, sid, location))


@api.endpoint("POST", "/sessions/{session_id}/call/interrupt",
              summary="Mark the call as interrupted", tag="call", permission=P.RECORD,
              body=ReasonBody,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_call_interrupt(request: web.Request) -> web.Response:
    reason = (await read_json(request, ReasonBody)).reason
    return await _act(request, lambda d, p, sid: call.interrupt_by_agent(d, p, sid, reason))


@api.endpoint("POST", "/sessions/{session_id}/script/start", summary="Start the script",
              tag="call", permission=P.RECORD,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_script_start(request: web.Request) -> web.Response:
    return await _act(request, call.start_script)


@api.endpoint("POST", "/sessions/{session_id}/script/advance",
              summary="Move past a step that needs no customer answer", tag="call",
              permission=P.RECORD, body=StepBody,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_script_advance(request: web.Request) -> web.Response:
    step_id = (await read_json(request, StepBody)).step_id
    return await _act(request, lambda d, p, sid: call.advance(d, p, sid, step_id))


@api.endpoint("POST", "/sessions/{session_id}/script/resume",
              summary="Continue after explaining a negative answer (the step replays)",
              tag="call", permission=P.RECORD, body=NoteBody,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_script_resume(request: web.Request) -> web.Response:
    note = (await read_json(request, NoteBody)).note
    return await _act(request, lambda d, p, sid: call.resume_script(d, p, sid, note))


@api.endpoint("POST", "/sessions/{session_id}/complete",
              summary="Complete the recording after the signature (the call is closed and "
              "every recorded segment registered first)", tag="call", permission=P.RECORD,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_complete(request: web.Request) -> web.Response:
    session = await get_visible(staff(request), path_uuid(request))
    signed = await Signature.filter(session_id=session.id).exists()
    if call.completion_problem(session, signed) is None:
        # Closing the room finishes and registers every segment, so `complete` sees the
        # whole recording.
        await request.app[ROOMS].close(str(session.id))  # on whichever node holds it
    return await _act(request, call.complete)


@api.endpoint("POST", "/sessions/{session_id}/abort", summary="Abort the session",
              tag="sessions", permission=P.VIEW_SESSIONS, body=ReasonBody,
              returns=SessionSummary, responses={409: "the session's state does not allow it"})
async def post_abort(request: web.Request) -> web.Response:
    reason = (await read_json(request, ReasonBody)).reason
    if not (staff(request).can(P.RECORD) or staff(request).can(P.STATISTICS)):
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    session = await get_visible(staff(request), path_uuid(request))
    if session.state in ABORTABLE:
        # Closed first, so every segment is registered while the call is still on: an aborted
        # session keeps (and seals) whatever was recorded.
        await request.app[ROOMS].close(str(session.id))
    return await _act(request, lambda d, p, sid: call.abort(d, p, sid, reason))


# The QA verdict has one path, with its rules: POST /qa/sessions/{id}/verdict (api/routes_qa.py,
# qa/verdicts.py). The former /sessions/{id}/qa-reviews, which had none, is gone.
