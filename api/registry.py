"""Route registration that keeps the OpenAPI document and the router in step.

Each endpoint is declared once with its method, path, authentication, permission and request
model; the same declaration feeds aiohttp's router and the OpenAPI 3 document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from api.auth import resolve_customer, resolve_staff
from api.keys import PRINCIPAL
from api.problems import ApiProblem
from security.roles import Permission

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthKind = Literal["none", "staff", "customer"]
PREFIX = "/api/v1"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    auth: AuthKind
    permission: Permission | None
    body: type[BaseModel] | None
    responses: dict[int, str] = field(default_factory=dict)
    query: tuple[str, ...] = ()
    produces: str = "application/json"


class Api:
    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.operations: list[Operation] = []

    def endpoint(
        self, method: str, path: str, *, summary: str, tag: str, auth: AuthKind = "staff",
        permission: Permission | None = None, body: type[BaseModel] | None = None,
        responses: dict[int, str] | None = None, query: tuple[str, ...] = (),
        produces: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            async def guarded(request: web.Request) -> web.StreamResponse:
                if auth == "staff":
                    principal = await resolve_staff(request)
                    if permission is not None and not principal.can(permission):
                        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限",
                                         permission=permission.value)
                    request[PRINCIPAL] = principal
                elif auth == "customer":
                    request[PRINCIPAL] = await resolve_customer(request)
                return await handler(request)

            self.routes.route(method, PREFIX + path)(guarded)
            self.operations.append(Operation(
                method.lower(), PREFIX + path, summary, tag, auth, permission, body,
                responses or {}, query, produces,
            ))
            return handler

        return register


_PARAM = re.compile(r"{([^}:]+)(:[^}]+)?}")


def openapi_path(path: str) -> str:
    """aiohttp's `{id:regex}` becomes OpenAPI's `{id}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def openapi_document(operations: list[Operation], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for op in operations:
        path = openapi_path(op.path)
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{([^}:]+)", op.path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in op.query
        ]
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {op.produces: {}}},
            "default": {"description": "Problem document (RFC 9457)",
                        "content": {"application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}}}},
        }
        for status, text in op.responses.items():
            responses[str(status)] = {"description": text}
        entry: dict[str, Any] = {
            "summary": op.summary, "tags": [op.tag], "operationId": _operation_id(op),
            "parameters": params, "responses": responses,
        }
        if op.auth != "none":
            entry["security"] = [{"staffToken" if op.auth == "staff" else "customerToken": []}]
        if op.permission is not None:
            entry["x-permission"] = op.permission.value
        if op.body is not None:
            schema = op.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[op.body.__name__] = schema
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}}}
        paths.setdefault(path, {})[op.method] = entry
    schemas["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "code": {"type": "string"},
            "detail": {"type": "string", "description": "Chinese message for the user"},
        },
        "required": ["type", "title", "status", "code", "detail"],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "远程双录 API", "version": version,
                 "description": "Remote double-recording of insurance sales."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "staffToken": {"type": "http", "scheme": "bearer",
                               "description": "from POST /api/v1/auth/login"},
                "customerToken": {"type": "http", "scheme": "bearer",
                                  "description": "from POST /api/v1/invitations/open"},
            },
        },
    }


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}:\\[\]\-+.*]", "", op.path.removeprefix(PREFIX)).strip("/").split("/")
    return op.method + "_" + "_".join(w for w in words if w)
