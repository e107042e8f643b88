"""Retention endpoints (R-42) for staff: a session's retention and its basis, disputes (legal
hold) entered by an administrator, and the tombstones of deleted sessions for auditors.

Disputes are managed by administrators (`manage_users`) and retention is read by auditors
(`read_audit`) until the role model gets a dedicated retention permission.

Sealed evidence (R-31): the public seal keys of an institution are published without login (for
auditors and insurers checking exported archives offline), and a sealed session can be
downloaded as a verifiable archive by QA inspectors and auditors (audited: it holds recordings).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from datetime import date

from aiohttp import web
from pydantic import Field

from api.auth import staff
from api.http import IntQuery, path_int, path_str, path_uuid, read_json
from api.keys import DEPS
from api.problems import ApiProblem, json_response
from api.registry import THROTTLED, Api
from api.responses import DisputeClosed, DisputeOpened, Keyring, RetentionView, TombstoneList
from api.routes_qa import AFTER_CALL
from api.schemas import Body
from archive import policies
from archive.export import plan_export, write_zip
from archive.retention import tombstone_view
from models.archive import Dispute, PolicyStatus, RetentionRecord, Tombstone
from models.org import Institution
from models.sales import Order
from models.sessions import RecordingSession
from security import audit
from security.roles import Permission
from security.seal_keys import published_keyring
from workflow.sessions import visible_sessions

api = Api()
P = Permission


@api.endpoint("GET", "/archive/sessions/{session_id}/retention",
              summary="When a session may be deleted, and why (R-42)", tag="archive",
              permission=P.READ_AUDIT, returns=RetentionView)
async def get_retention(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await RecordingSession.get_or_none(id=path_uuid(request),
                                                 institution_id=principal.institution_id)
    if session is None:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    record = await RetentionRecord.get_or_none(session_id=session.id)
    status = await PolicyStatus.get_or_none(order_id=session.order_id)
    disputes = await Dispute.filter(order_id=session.order_id).order_by("id")
    return json_response({
        "session_id": str(session.id),
        "retain_until": record.retain_until.isoformat() if record and record.retain_until
        else None,
        "on_hold": bool(record and record.on_hold),
        "purged_at": record.purged_at.isoformat() if record and record.purged_at else None,
        "basis": record.basis if record else {"reason": "not computed yet"},
        "policy": None if status is None else {
            "state": status.state.value, "policy_no": status.policy_no,
            "effective_on": status.effective_on.isoformat() if status.effective_on else None,
            "ended_on": status.ended_on.isoformat() if status.ended_on else None},
        "disputes": [{"id": d.id, "reference": d.reference, "opened_on": d.opened_on.isoformat(),
                      "closed_on": d.closed_on.isoformat() if d.closed_on else None,
                      "note": d.note} for d in disputes],
    })


REFERENCE = re.compile(r"[A-Za-z0-9\-_]{1,64}")
TOMBSTONE_LIMIT = IntQuery("limit", default=200, low=1, high=1000)


class DisputeBody(Body):
    reference: str = Field(pattern=r"^[A-Za-z0-9\-_]{1,64}$")
    opened_on: date
    note: str = Field(default="", max_length=500)


class CloseBody(Body):
    closed_on: date


async def _order(request: web.Request) -> Order:
    order = await Order.get_or_none(id=path_int(request, "order_id"),
                                    institution_id=staff(request).institution_id)
    if order is None:
        raise ApiProblem(404, "order_not_found", "找不到该投保单")
    return order


@api.endpoint("POST", "/archive/orders/{order_id}/disputes",
              summary="Open a dispute: legal hold on the order's sessions (R-42)",
              tag="archive", permission=P.MANAGE_USERS, body=DisputeBody, returns=DisputeOpened,
              status=201, responses={409: "a dispute with this reference is open already"})
async def post_dispute(request: web.Request) -> web.Response:
    body = await read_json(request, DisputeBody)
    order = await _order(request)
    dispute = await policies.open_dispute(request.app[DEPS], order, body.reference,
                                          body.opened_on, body.note, staff(request).actor,
                                          request.app[AFTER_CALL].archive)
    return json_response({"id": dispute.id, "reference": dispute.reference}, status=201)


@api.endpoint("POST", "/archive/orders/{order_id}/disputes/{reference}/close",
              summary="Close a dispute: retention runs 2 more years from today (R-42)",
              tag="archive", permission=P.MANAGE_USERS, body=CloseBody, returns=DisputeClosed,
              responses={409: "the dispute is closed already"})
async def post_close_dispute(request: web.Request) -> web.Response:
    body = await read_json(request, CloseBody)
    order = await _order(request)
    dispute = await policies.close_dispute(request.app[DEPS], order,
                                           path_str(request, "reference", 64, REFERENCE),
                                           body.closed_on,
                                           staff(request).actor,
                                           request.app[AFTER_CALL].archive)
    return json_response({"id": dispute.id, "closed_on": body.closed_on.isoformat()})


@api.endpoint("GET", "/archive/tombstones", summary="Deleted sessions and the hashes kept",
              tag="archive", permission=P.READ_AUDIT, query=(TOMBSTONE_LIMIT,),
              returns=TombstoneList)
async def get_tombstones(request: web.Request) -> web.Response:
    principal = staff(request)
    limit = TOMBSTONE_LIMIT.read(request)
    orders = Order.filter(institution_id=principal.institution_id).values_list("id", flat=True)
    rows = await Tombstone.filter(order_id__in=list(await orders)).order_by("-id").limit(limit)
    return json_response({"items": [tombstone_view(t) for t in rows]})


@api.endpoint("GET", "/institutions/{code}/seal-keys", auth="none", tag="archive",
              summary="Public Ed25519 seal keys of an institution, active and retired (R-31)",
              returns=Keyring, responses={429: THROTTLED})
async def get_seal_keys(request: web.Request) -> web.Response:
    institution = await Institution.get_or_none(code=path_str(request, "code", 32))
    if institution is None:
        raise ApiProblem(404, "institution_not_found", "找不到该机构")
    # Public halves only (security.seal_keys.key_view): the document verify-archive reads.
    return json_response(await published_keyring(institution))


CHUNK = 1 << 20


@api.endpoint("GET", "/archive/sessions/{session_id}/export", tag="archive",
              summary="Download a sealed session as a verifiable archive (.zip; QA inspectors "
              "with inspect, auditors with read_audit; R-31)",
              produces="application/zip",
              responses={403: "neither inspect nor read_audit", 409: "not sealed yet"})
async def get_export(request: web.Request) -> web.StreamResponse:
    principal = staff(request)
    if principal.can(P.INSPECT):
        query = visible_sessions(principal)
    elif principal.can(P.READ_AUDIT):
        query = RecordingSession.filter(institution_id=principal.institution_id)
    else:
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限",
                         permission=f"{P.INSPECT.value}|{P.READ_AUDIT.value}")
    session = await query.get_or_none(id=path_uuid(request))
    if session is None:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    if not session.manifest:
        raise ApiProblem(409, "session_not_sealed", "该会话尚未封存，不能导出")
    deps = request.app[DEPS]
    plan = await plan_export(deps, session.id, deps.clock())
    # An export copies the recordings: an access to personal data, audited before it is sent.
    await audit.record_alone(principal.actor, "archive.export", object_type="session",
                             object_id=str(session.id),
                             details={"files": len(plan.members), "to": "download"})
    with tempfile.TemporaryFile() as spool:
        await asyncio.to_thread(write_zip, plan, spool)
        size = spool.tell()
        spool.seek(0)
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="session-{session.id}.zip"'})
        await response.prepare(request)
        while chunk := await asyncio.to_thread(spool.read, CHUNK):
            await response.write(chunk)
        await response.write_eof()
    return response
