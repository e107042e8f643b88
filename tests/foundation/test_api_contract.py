"""The API contract: every route is in the OpenAPI document, and bad input gets a 4xx
problem document (application/problem+json), never a 500."""

from __future__ import annotations

import uuid

import pytest

from api.registry import openapi_path
from tests.harness import Harness


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
    "/sessions/not-a-uuid", f"/sessions/{uuid.uuid4()}", f"/sessions/{uuid.uuid4()}/events",
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
