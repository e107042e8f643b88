"""Administration and audit: users and roles (R-50), audit search, export and chain
verification for auditors (R-51), products and health."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from aiohttp import web
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api.auth import staff
from api.http import ChoiceQuery, DateQuery, IntQuery, TextQuery, read_json
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import AuditPage, AuditVerification, Health, ProductList, UserList, UserView
from api.schemas import CreateUserBody
from models.audit import AuditEntry
from models.org import Branch
from models.people import Agent, Role, User
from models.sales import Product
from security import audit
from security.passwords import hash_password_async
from security.roles import Permission, permissions_of
from workflow import script_versions as versions

api = Api()
P = Permission
FROM, TO = DateQuery("from", timed=True), DateQuery("to", timed=True)
ACTOR, ACTION = TextQuery("actor", 100), TextQuery("action", 64)
OBJECT_ID, OUTCOME = TextQuery("object_id", 64), TextQuery("outcome", 16)
AUDIT_FILTERS = (FROM, TO, ACTOR, ACTION, OBJECT_ID, OUTCOME)
AUDIT_QUERY = ("from", "to", "actor", "action", "object_id", "outcome", "limit", "offset")
LIMIT = IntQuery("limit", default=100, low=0, high=1000)
OFFSET = IntQuery("offset", default=0, low=0, high=10**12)
FORMAT = ChoiceQuery("format", ("csv", "jsonl"), default="csv")


def _user_view(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "display_name": user.display_name,
            "role": user.role.value, "branch_id": user.branch_id, "active": user.active,
            "permissions": sorted(p.value for p in permissions_of(user.role))}


@api.endpoint("GET", "/users", summary="Users of the caller's institution", tag="admin",
              permission=P.MANAGE_USERS, returns=UserList)
async def list_users(request: web.Request) -> web.Response:
    users = await User.filter(institution_id=staff(request).institution_id).order_by("id")
    return json_response({"items": [_user_view(u) for u in users]})


@api.endpoint("POST", "/users", summary="Create a staff user with one role", tag="admin",
              permission=P.MANAGE_USERS, body=CreateUserBody, returns=UserView, status=201,
              responses={409: "username taken",
                         422: "no such branch, or an agent without branch and licence"})
async def create_user(request: web.Request) -> web.Response:
    body = await read_json(request, CreateUserBody)
    principal = staff(request)
    if body.role == Role.AGENT and (body.agent is None or body.branch_id is None):
        raise ApiProblem(422, "agent_profile_required", "创建销售人员须填写网点和执业证信息")
    if body.branch_id is not None and not await Branch.exists(
        id=body.branch_id, institution_id=principal.institution_id
    ):
        raise ApiProblem(422, "branch_not_found", "网点不存在")
    if await User.exists(username=body.username):
        raise ApiProblem(409, "username_taken", "用户名已存在")
    password_hash = await hash_password_async(body.password)  # off the event loop
    async with in_transaction() as conn:
        user = await User.create(
            username=body.username, password_hash=password_hash,
            display_name=body.display_name, role=body.role,
            institution_id=principal.institution_id, branch_id=body.branch_id, using_db=conn,
        )
        if body.agent is not None:
            await Agent.create(user_id=user.id, **body.agent.model_dump(), using_db=conn)
        await audit.record(conn, principal.actor, "user.create", object_type="user",
                           object_id=str(user.id), details={"role": body.role.value})
    return json_response(_user_view(user), status=201)


def _audit_query(request: web.Request) -> QuerySet[AuditEntry]:
    query = AuditEntry.all()
    start, end = FROM.read(request), TO.read(request)
    if start:
        query = query.filter(at__gte=start)
    if end:
        query = query.filter(at__lt=end)
    if actor := ACTOR.read(request):
        query = query.filter(actor_label__icontains=actor)
    if action := ACTION.read(request):
        query = query.filter(action__startswith=action)
    if object_id := OBJECT_ID.read(request):
        query = query.filter(object_id=object_id)
    if outcome := OUTCOME.read(request):
        query = query.filter(outcome=outcome)
    return query


def _entry_view(e: AuditEntry) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "actor_kind": e.actor_kind,
            "actor_id": e.actor_id, "actor": e.actor_label, "action": e.action,
            "object_type": e.object_type, "object_id": e.object_id, "outcome": e.outcome,
            "ip": e.ip, "details": e.details, "hash": e.hash}


@api.endpoint("GET", "/audit", summary="Search the audit log", tag="audit",
              permission=P.READ_AUDIT, query=(*AUDIT_FILTERS, LIMIT, OFFSET), returns=AuditPage)
async def search_audit(request: web.Request) -> web.Response:
    query = _audit_query(request)
    limit, offset = LIMIT.read(request), OFFSET.read(request)
    total = await query.count()
    rows = await query.order_by("id").offset(offset).limit(limit)
    await audit.record_alone(staff(request).actor, "audit.search",
                             details={k: v for k, v in request.query.items() if k in AUDIT_QUERY})
    return json_response({"total": total, "items": [_entry_view(e) for e in rows]})


@api.endpoint("GET", "/audit/export", summary="Export the audit log as CSV or JSON lines",
              tag="audit", permission=P.READ_AUDIT, query=(*AUDIT_FILTERS, FORMAT),
              produces="text/csv,application/x-ndjson")
async def export_audit(request: web.Request) -> web.StreamResponse:
    fmt = FORMAT.read(request)
    query = _audit_query(request)
    await audit.record_alone(staff(request).actor, "audit.export", details={"format": fmt})
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv"
        else "application/x-ndjson; charset=utf-8",
        "Content-Disposition": f'attachment; filename="audit.{fmt}"',
    })
    await response.prepare(request)
    columns = ["id", "at", "actor_kind", "actor_id", "actor", "action", "object_type",
               "object_id", "outcome", "ip", "details", "hash"]
    if fmt == "csv":
        await response.write(("\ufeff" + ",".join(columns) + "\r\n").encode())
    last_id = 0
    while True:
        rows = await query.filter(id__gt=last_id).order_by("id").limit(500)
        if not rows:
            break
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            view = _entry_view(row)
            if fmt == "csv":
                writer.writerow([json.dumps(view[c], ensure_ascii=False) if c == "details"
                                 else view[c] for c in columns])
            else:
                buffer.write(json.dumps(view, ensure_ascii=False) + "\n")
        await response.write(buffer.getvalue().encode())
        last_id = rows[-1].id
    await response.write_eof()
    return response


@api.endpoint("GET", "/audit/verify", summary="Verify the audit hash chain", tag="audit",
              permission=P.READ_AUDIT, returns=AuditVerification)
async def verify_audit(request: web.Request) -> web.Response:
    result = await audit.verify_chain()
    await audit.record_alone(staff(request).actor, "audit.verify", details={"ok": result.ok})
    return json_response({"ok": result.ok, "checked": result.checked,
                              "first_broken_id": result.first_broken_id,
                              "reason": result.reason, "details": result.details,
                              # every chain: its first broken entry or missing tail
                              "chains": [c.view() for c in result.chains]})


# Script variables the platform fills itself; anything else the order must supply.
PLATFORM_VARIABLES = frozenset({
    "customer_name", "insured_name", "agent_name", "agent_licence_no", "institution_full_name",
    "payment_mode", "payment_term", "premium", "sum_insured",
})


@api.endpoint("GET", "/products",
              summary="Active products, with the extra values their published script needs",
              tag="products", returns=ProductList)
async def list_products(request: web.Request) -> web.Response:
    items = []
    for p in await Product.filter(active=True).order_by("code"):
        script = await versions.published_for(p.id)
        variables = (script.document.get("variables", {}) if script else {})
        items.append({
            "id": p.id, "code": p.code, "name": p.name, "type": p.product_type.value,
            "term_years": p.term_years, "grade": p.grade, "channel": p.channel.value,
            "cooling_off_days": p.cooling_off_days, "script_version": script and script.version,
            "needs_sum_insured": "sum_insured" in variables,
            "extra_values": [{"name": name, "label": v.get("label", name),
                              "description": v.get("description", "")}
                             for name, v in variables.items()
                             if name not in PLATFORM_VARIABLES],
        })
    return json_response({"items": items})


@api.endpoint("GET", "/health", summary="Liveness of the service", tag="system", auth="none",
              returns=Health)
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})
