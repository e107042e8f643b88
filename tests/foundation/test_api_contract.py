"""The API contract: every route is in the OpenAPI document, and bad input gets a 4xx
problem document (application/problem+json), never a 500."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
import types
from typing import Any

import pytest
from aiohttp import web
from tortoise.models import Model

from api.http import Query
from api.problems import ApiProblem
from api.registry import Operation, openapi_path
from app.factory import API_MODULES
from tests.harness import Harness
from workflow.errors import WorkflowError


async def test_every_route_is_documented_in_openapi(harness: Harness) -> None:
    r = await harness.request("GET", "/api/v1/openapi.json")
    assert r.status == 200 and r.body["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in r.body["paths"].items() for method in ops}
    routes = set()
    for route in harness.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith("/api/v1") or path.endswith("openapi.json"):
            continue
        if route.method == "HEAD":
            continue
        routes.add((openapi_path(path), route.method.lower()))
    assert routes, "no API routes found"
    assert routes - documented == set(), "routes missing from OpenAPI"
    assert documented - routes == set(), "OpenAPI documents routes that do not exist"


async def test_openapi_names_bodies_and_permissions(harness: Harness) -> None:
    doc = (await harness.request("GET", "/api/v1/openapi.json")).body
    op = doc["paths"]["/api/v1/sessions"]["post"]
    assert op["x-permission"] == "record"
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.split("/")[-1] in doc["components"]["schemas"]


def _is_problem(r: object) -> None:
    assert r.content_type == "application/problem+json", r.body  # type: ignore[attr-defined]
    body = r.body  # type: ignore[attr-defined]
    assert {"type", "title", "status", "code", "detail"} <= set(body)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in body["detail"]), "detail must be Chinese"


@pytest.mark.parametrize(("payload", "status", "code"), [
    (b"{not json", 400, "malformed_json"),
    (b"\xff\xfe\x00garbage", 400, "malformed_json"),
    (b"[]", 422, "validation_failed"),
    (b'{"order_id": "one"}', 422, "validation_failed"),
    (b'{"order_id": 1, "location": {"lat": 500, "lng": 0}}', 422, "validation_failed"),
    (b'{"order_id": 1, "unexpected": true}', 422, "validation_failed"),
    (b"{}", 422, "validation_failed"),
    (b'{"order_id": 99999999}', 404, "order_not_found"),
])
async def test_bad_bodies_get_4xx_problems(
    harness: Harness, payload: bytes, status: int, code: str
) -> None:
    r = await harness.as_("agent01", "POST", "/sessions", data=payload,
                          headers={"Content-Type": "application/json"})
    assert (r.status, r.body["code"]) == (status, code)
    _is_problem(r)


async def test_validation_errors_name_the_field(harness: Harness) -> None:
    r = await harness.as_("agent01", "POST", "/sessions", json={"order_id": "one"})
    assert r.body["errors"][0]["field"] == "order_id"


async def test_a_huge_body_is_413(harness: Harness) -> None:
    huge = b'{"order_id": 1, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = await harness.as_("agent01", "POST", "/sessions", data=huge,
                          headers={"Content-Type": "application/json"})
    assert r.status == 413 and r.body["code"] == "body_too_large"
    _is_problem(r)


async def test_wrong_content_type_is_415(harness: Harness) -> None:
    r = await harness.as_("agent01", "POST", "/sessions", data="order_id=1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415
    _is_problem(r)


@pytest.mark.parametrize("path", [
    "/sessions/not-a-uuid", "/sessions/4d1f2a3b-0000-4000-8000-000000000404",
    "/sessions/4d1f2a3b-0000-4000-8000-000000000405/events",
    "/orders/abc", "/orders/99999", "/no/such/route",
])
async def test_unknown_ids_and_routes_are_404(harness: Harness, path: str) -> None:
    r = await harness.as_("agent01", "GET", path)
    assert r.status == 404
    _is_problem(r)


async def test_wrong_method_is_405(harness: Harness) -> None:
    r = await harness.as_("agent01", "DELETE", "/sessions")
    assert r.status == 405
    _is_problem(r)


async def test_missing_or_bad_tokens_are_401(harness: Harness) -> None:
    r = await harness.request("GET", "/sessions")
    assert r.status == 401 and r.body["code"] == "unauthenticated"
    r = await harness.request("GET", "/sessions", token="forged-token")
    assert r.status == 401 and r.body["code"] == "token_invalid"
    r = await harness.request("GET", "/customer/session", token="x" * 500)
    assert r.status == 401
    _is_problem(r)


async def test_bad_query_parameters_are_422(harness: Harness) -> None:
    r = await harness.as_("agent01", "GET", "/sessions?state=dancing")
    assert r.status == 422
    r = await harness.as_("agent01", "GET", "/sessions?limit=-1")
    assert r.status == 422


# -- the document is honest: response schemas, status codes, parameters ------------------------


def _operations() -> list[Operation]:
    return [op for api in API_MODULES for op in api.operations]


async def test_every_operation_declares_its_responses(harness: Harness) -> None:
    doc = (await harness.request("GET", "/api/v1/openapi.json")).body
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            codes = {int(c) for c in op["responses"]}
            success = [c for c in codes if c < 400]
            assert success, f"{where}: no success response"
            assert "default" not in op["responses"], f"{where}: every status is listed"
            for code, response in op["responses"].items():
                if int(code) == 101:
                    continue
                (media, content), = response["content"].items() if int(code) >= 400 else [
                    next(iter(response["content"].items()))]
                schema = content["schema"]
                if int(code) >= 400:
                    assert media == "application/problem+json", where
                    assert schema["$ref"].endswith("/Problem"), where
                elif media == "application/json":
                    name = schema["$ref"].split("/")[-1]
                    assert schemas[name]["type"] == "object", f"{where} {code}"
                else:
                    assert schema == {"type": "string", "format": "binary"}, where
            for param in op["parameters"]:
                assert param["schema"].get("type") in ("string", "integer"), (where, param)
    created = [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m, op in ops.items()
               if "201" in op["responses"]]
    assert "POST /api/v1/orders" in created and "POST /api/v1/sessions" in created
    sessions = doc["paths"]["/api/v1/sessions"]["get"]
    limit = next(p for p in sessions["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    state = next(p for p in sessions["parameters"] if p["name"] == "state")
    assert "consented" in state["schema"]["enum"]
    upload = doc["paths"]["/api/v1/customer/identity/uploads/{kind}"]["post"]
    assert "415" not in upload["responses"] and "422" in upload["responses"]  # as answered


async def test_the_live_websocket_is_documented_and_a_plain_get_is_426(harness: Harness) -> None:
    doc = (await harness.request("GET", "/api/v1/openapi.json")).body
    live = doc["paths"]["/api/v1/live"]["get"]
    assert {"101", "426"} <= set(live["responses"])
    assert live["x-websocket"]["client_sends_first"]["properties"]["role"]["enum"] == [
        "customer", "staff"]
    r = await harness.request("GET", "/live")
    assert r.status == 426 and r.headers["Upgrade"] == "websocket"
    _is_problem(r)


# Static inspection: which statuses can a handler answer? Its code and the project functions it
# calls or passes on (lambdas, callbacks) are walked: `ApiProblem(<status>, ...)`, the workflow
# errors (their class's status), aiohttp's HTTP exceptions, `Model.get` (404) and the 429 of
# `api.load_shedding.too_many`. Method calls on objects (deps.storage...) are not followed; the
# test profile checks at run time what this misses (api/registry.py).
# The anonymous endpoints api.load_shedding limits per address (429).
LIMITS = importlib.import_module("api.load_shedding")
ROOTS = {"api", "workflow", "qa", "archive", "bot", "scripts_library", "security", "app",
         "reporting", "storage", "models", "media"}
_MISSING = object()


def _resolve(node: ast.AST, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return scope.get(node.id, _MISSING)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        if isinstance(base, types.ModuleType | type):
            return getattr(base, node.attr, _MISSING)
    return _MISSING


def _ours(obj: Any) -> bool:
    return isinstance(obj, types.FunctionType | types.MethodType) and (
        getattr(obj, "__module__", "") or "").split(".")[0] in ROOTS


def raised_statuses(func: Any, seen: set[Any] | None = None) -> set[int | str]:
    seen = set() if seen is None else seen
    func = inspect.unwrap(func)
    if func in seen or not isinstance(func, types.FunctionType | types.MethodType):
        return set()
    seen.add(func)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set()
    code = func.__func__ if isinstance(func, types.MethodType) else func
    scope = {**code.__globals__, **inspect.getclosurevars(code).nonlocals}
    found: set[int | str] = set()
    for node in ast.walk(tree):
        target = node.func if isinstance(node, ast.Call) else node
        if not isinstance(target, ast.Name | ast.Attribute):
            continue
        obj = _resolve(target, scope)
        if obj is ApiProblem and isinstance(node, ast.Call):
            first = node.args[0] if node.args else None
            value = first.value if isinstance(first, ast.Constant) else None
            found.add(value if isinstance(value, int | str) else "dynamic")
        elif isinstance(obj, type) and issubclass(obj, WorkflowError):
            found.add(obj.status)
        elif isinstance(obj, type) and issubclass(obj, web.HTTPException) and obj.status_code:
            found.add(obj.status_code)
        elif isinstance(obj, types.MethodType) and obj.__name__ == "get" and isinstance(
                obj.__self__, type) and issubclass(obj.__self__, Model):
            found.add(404)
        elif getattr(obj, "__name__", "") == "too_many" and _ours(obj):
            found.add(429)
        elif _ours(obj):
            found |= raised_statuses(obj, seen)
    return found


def _plumbing(op: Operation) -> set[int]:
    """What the registry, the middlewares and aiohttp answer for every such operation."""
    codes = {500, 503}
    if op.auth != "none":
        codes.add(401)
    if op.permission is not None:
        codes.add(403)
    if op.path_names:
        codes.add(404)
    if any(type(q) is not Query for q in op.query):
        codes.add(422)
    if op.body is not None:
        codes |= {400, 413, 422} | ({415} if op.json_content_type else set())
    route = op.path
    if route in LIMITS.REQUEST_LIMITED or route in LIMITS.REFUSAL_LIMITED or route.startswith(
            LIMITS.REFUSAL_LIMITED_PREFIXES):
        codes.add(429)  # api.load_shedding
    return codes


def test_declared_status_codes_are_the_ones_the_handlers_answer() -> None:
    """Both ways: a declared error the handler cannot produce is as wrong as one it produces
    undeclared."""
    problems = []
    for op in _operations():
        where = f"{op.method.upper()} {op.path}"
        raised = raised_statuses(op.handler)
        declared = {code for code in op.statuses() if code >= 400}
        producible = {c for c in raised if isinstance(c, int)} | _plumbing(op)
        if op.produces == "websocket":  # errors after the handshake go over the socket
            producible = _plumbing(op) | {400, 426}
        elif missing := producible - declared:
            problems.append(f"{where}: answers {sorted(missing)} undeclared")
        if "dynamic" not in raised and (unproven := declared - producible):
            problems.append(f"{where}: declares {sorted(unproven)}, which it cannot answer")
    assert problems == []


# -- the 5xx classes of issue 14, each answered 4xx now ----------------------------------------


@pytest.mark.parametrize(("method", "path", "payload", "status", "code"), [
    # nesting beyond the parser's depth limit (was a RecursionError: 500)
    ("POST", "/auth/login", b"[" * 1000 + b"]" * 1000, 422, "json_too_deep"),
    ("POST", "/auth/login", b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b"}", 422,
     "json_too_deep"),
    # an integer past Python's 4,300-digit conversion limit (was a ValueError: 500)
    ("POST", "/sessions", b'{"order_id": ' + b"7" * 4301 + b"}", 422, "number_too_large"),
    # ids beyond the 32-bit columns (PostgreSQL refused the comparison: 500)
    ("POST", "/sessions", b'{"order_id": 18446744073709551617}', 422, "validation_failed"),
    ("POST", "/sessions", b'{"order_id": 2147483648}', 422, "validation_failed"),
    # a boolean is not a number, a number is not a date (strict JSON types)
    ("POST", "/agent/precheck", b'{"location": {"lat": false, "lng": 121.5}}', 422,
     "validation_failed"),
    ("POST", "/users", b'{"username": "agent.x", "password": "0123456789ab", "display_name": "x",'
     b' "role": "agent", "branch_id": 1, "agent": {"licence_no": "L", "licence_expires": '
     b'"2030-01-01", "training_expires": 0}}', 422, "validation_failed"),
    # text PostgreSQL cannot store
    ("POST", "/sessions/00000000-0000-0000-0000-000000000000/call/interrupt",
     b'{"reason": "a\\u0000b"}', 422, "validation_failed"),
    # a control character the YAML reader refuses when it is made (was a ReaderError: 500)
    ("POST", "/scripts", b'{"yaml": "z\\u0083\\u0005"}', 422, "script_invalid"),
])
async def test_input_that_used_to_be_a_500_is_refused(
    harness: Harness, method: str, path: str, payload: bytes, status: int, code: str
) -> None:
    user = {"/users": "admin01", "/scripts": "po01"}.get(path, "agent01")
    r = await harness.as_(user, method, path, data=payload,
                          headers={"Content-Type": "application/json"})
    assert (r.status, r.body.get("code")) == (status, code), r.body
    _is_problem(r)


@pytest.mark.parametrize(("user", "path", "status"), [
    ("agent01", "/orders/%C2%B3", 404),  # '³' is a digit to str.isdigit, not to int()
    ("agent01", "/orders/%D9%A3", 404),  # Arabic-Indic three
    ("agent01", "/orders/18446744073709551617", 404),
    ("agent01", "/orders/2147483648", 404),
    ("agent01", "/orders/0", 404),
    ("po01", "/scripts/99999999999999999999999/diff/1", 404),
    ("agent01", "/sessions?limit=" + "9" * 5000, 422),
    ("agent01", "/sessions?offset=" + "9" * 5000, 422),
    ("agent01", "/sessions?limit=%C2%B3", 422),
    ("qa01", "/qa/queue?limit=" + "1" * 5000, 422),
    ("qa01", "/qa/queue?status=open,nonsense", 422),
    ("auditor01", "/audit?offset=" + "1" * 5000, 422),
    ("auditor01", "/audit?actor=a%00b", 422),
    ("auditor01", "/audit?from=yesterday", 422),
    ("auditor01", "/audit?from=2026-01-01T00:00:00", 422),  # no offset
    ("sup01", "/stats?from=2026-13-01", 422),
    ("agent01", f"/sessions/{'0' * 36}x", 404),
    ("auditor01", "/archive/tombstones?limit=0", 422),
])
async def test_bad_path_and_query_values_are_4xx(harness: Harness, user: str, path: str,
                                                 status: int) -> None:
    r = await harness.as_(user, "GET", path)
    assert r.status == status, r.body
    _is_problem(r)


@pytest.mark.parametrize("code", ["X" * 33, "a%00b", "%F0%9F%98%80" * 40])
async def test_an_institution_code_that_cannot_exist_is_404(harness: Harness, code: str) -> None:
    r = await harness.request("GET", f"/institutions/{code}/seal-keys")
    assert r.status == 404 and r.body["code"] == "not_found", r.body
    _is_problem(r)


async def test_a_recording_path_outside_the_store_is_422_for_the_engines(
        harness: Harness) -> None:
    walk = await harness.walk_to("in_call")
    r = await harness.as_("engine01", "POST", f"/sessions/{walk.session_id}/recordings", json={
        "kind": "customer_av", "segment": 1, "path": "../secrets.env", "sha256": "0" * 64,
        "size_bytes": 10, "duration_ms": 10, "started_at": "2026-01-01T00:00:00+00:00"})
    assert (r.status, r.body["code"]) == (422, "recording_file_mismatch"), r.body
