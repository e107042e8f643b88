"""The insurer's core system (R-43, R-42): the status of an application by its number, policy
status updates and disputes. Server-to-server calls, each signed with HMAC-SHA256 over a
timestamped body with a single-use nonce (`security.partner_signing`, as for the bank app): a
stale or replayed request is refused. An insurer sees only applications for its own products."""

from __future__ import annotations

import re
from datetime import date

from aiohttp import web
from pydantic import Field

from api.http import parse_json, path_str
from api.keys import DEPS, REDIS
from api.partner_auth import Partner, PartnerGate, authenticate
from api.problems import ApiProblem, json_response
from api.registry import THROTTLED, Api
from api.responses import (
    ApplicationStatus,
    InsurerDisputeClosed,
    InsurerDisputeOpened,
    PolicyStatusResult,
)
from api.routes_qa import AFTER_CALL
from api.schemas import Body
from archive import insurer, policies
from archive.settings import InsurerClient
from models.archive import PolicyState
from models.sales import Order
from security import audit
from security.audit import Actor

api = Api()
APPLICATION = "/insurer/applications/{application_no}"
SIGNED = "signature, timestamp or nonce refused"
APPLICATION_NO = re.compile(r"[A-Za-z0-9\-]{4,64}")
REFERENCE = re.compile(r"[A-Za-z0-9\-_]{1,64}")


INSURER = Partner("insurer", "insurer", unknown_client="client_unknown",
                  audit_unknown_client=True)


async def _authenticate(request: web.Request) -> tuple[str, InsurerClient, bytes, Actor]:
    """One signed call of an insurer's core system (api.partner_auth: 413 and 401 problems,
    every refusal audited)."""
    settings = request.app[AFTER_CALL].insurer
    caller = await authenticate(request, INSURER, PartnerGate(
        settings.clients, request.app[REDIS], int(request.app[DEPS].clock().timestamp()),
        settings.max_body_bytes, settings.nonce_ttl_seconds,
        settings.timestamp_tolerance_seconds))
    return caller.client_id, caller.client, caller.body, caller.actor


async def _order(request: web.Request, client: InsurerClient) -> Order:
    number = path_str(request, "application_no", 64, APPLICATION_NO)
    order = await Order.get_or_none(application_no=number)
    # Another insurer's application does not exist for this client.
    if order is None or await insurer.insurer_code(order) != client.institution:
        raise ApiProblem(404, "application_not_found", "找不到该投保单")
    return order


@api.endpoint("GET", APPLICATION + "/status", tag="insurer", auth="none",
              summary="Recording and QA status of an application (signed request, R-43)",
              returns=ApplicationStatus, responses={401: SIGNED, 413: "body too large",
                                                    429: THROTTLED})
async def get_status(request: web.Request) -> web.Response:
    _client_id, client, _, actor = await _authenticate(request)
    order = await _order(request, client)
    body = await insurer.application_status(order)
    await audit.record_alone(actor, "insurer.status_read", object_type="order",
                             object_id=str(order.id),
                             details={"application_no": order.application_no})
    return json_response(body)


class PolicyStatusBody(Body):
    state: PolicyState
    policy_no: str = Field(default="", max_length=64)
    effective_on: date | None = None
    receipt_on: date | None = None
    ended_on: date | None = None
    reason: str = Field(default="", max_length=200)


@api.endpoint("POST", APPLICATION + "/policy-status", tag="insurer", auth="none",
              body=PolicyStatusBody, json_content_type=False,
              summary="Policy status from the insurer: in force, cancelled, terminated (R-42)",
              returns=PolicyStatusResult,
              responses={401: SIGNED, 429: THROTTLED})
async def post_policy_status(request: web.Request) -> web.Response:
    _, client, raw, actor = await _authenticate(request)
    order = await _order(request, client)
    body = parse_json(raw, PolicyStatusBody)
    status = await policies.report_status(
        request.app[DEPS], order, policies.StatusReport(
            state=body.state, policy_no=body.policy_no, effective_on=body.effective_on,
            receipt_on=body.receipt_on, ended_on=body.ended_on, reason=body.reason),
        actor, request.app[AFTER_CALL].archive)
    return json_response({"application_no": order.application_no, "state": status.state.value})


class InsurerDisputeBody(Body):
    reference: str = Field(pattern=r"^[A-Za-z0-9\-_]{1,64}$")
    opened_on: date
    note: str = Field(default="", max_length=500)


class InsurerCloseBody(Body):
    closed_on: date


@api.endpoint("POST", APPLICATION + "/disputes", tag="insurer", auth="none",
              body=InsurerDisputeBody, json_content_type=False,
              summary="A dispute opened: legal hold (R-42)",
              returns=InsurerDisputeOpened, status=201,
              responses={401: SIGNED, 409: "a dispute with this reference is open already",
                         429: THROTTLED})
async def post_dispute(request: web.Request) -> web.Response:
    _, client, raw, actor = await _authenticate(request)
    order = await _order(request, client)
    body = parse_json(raw, InsurerDisputeBody)
    dispute = await policies.open_dispute(request.app[DEPS], order, body.reference,
                                          body.opened_on, body.note, actor,
                                          request.app[AFTER_CALL].archive)
    return json_response({"reference": dispute.reference, "opened_on":
                          dispute.opened_on.isoformat()}, status=201)


@api.endpoint("POST", APPLICATION + "/disputes/{reference}/close", tag="insurer", auth="none",
              body=InsurerCloseBody, json_content_type=False, summary="A dispute closed (R-42)",
              returns=InsurerDisputeClosed,
              responses={401: SIGNED, 409: "the dispute is closed already", 429: THROTTLED})
async def post_dispute_close(request: web.Request) -> web.Response:
    _, client, raw, actor = await _authenticate(request)
    order = await _order(request, client)
    body = parse_json(raw, InsurerCloseBody)
    dispute = await policies.close_dispute(request.app[DEPS], order,
                                           path_str(request, "reference", 64, REFERENCE),
                                           body.closed_on,
                                           actor, request.app[AFTER_CALL].archive)
    return json_response({"reference": dispute.reference,
                          "closed_on": body.closed_on.isoformat()})
