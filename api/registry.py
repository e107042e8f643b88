"""Route registration that keeps the OpenAPI document and the router in step.

Each endpoint is declared once with its method, path, authentication, permission, request model,
query parameters (api.http.Query: the same object parses the parameter and describes it) and
responses (the success body's pydantic model, the other status codes with their reason); the
same declaration feeds aiohttp's router and the OpenAPI 3.1 document. The status codes the
request plumbing itself answers (401 and 403 from authentication, 400/413/415/422 from the JSON
body, 404 from path parameters, 422 from query parameters) are added to each operation from its
declaration.

In the test profile every response is checked against its declaration (the status code is
declared, a JSON body matches its schema): the whole test suite then checks the document.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError
from tortoise.exceptions import DoesNotExist, IntegrityError

from api.auth import resolve_customer, resolve_staff
from api.http import Query
from api.keys import CONFIG, PRINCIPAL
from api.problems import PROBLEM_TYPE, ApiProblem, ProblemDocument
from security.roles import Permission
from workflow.errors import WorkflowError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthKind = Literal["none", "staff", "customer"]
# A response: the model of its JSON body, or the reason of an error (a problem document).
ResponseSpec = type[BaseModel] | str
PREFIX = "/api/v1"
# api.load_shedding limits some anonymous endpoints per address.
THROTTLED = "too many requests from this address (Retry-After)"
BINARY = {"type": "string", "format": "binary"}
_PARAM = re.compile(r"{([^}:]+)(:[^}]+)?}")


@dataclass(frozen=True)
class PathParam:
    """How a path parameter looks; a value that does not is answered 404 (api.http.path_*)."""

    schema: dict[str, Any]
    description: str = ""


UUID_PARAM = PathParam({"type": "string", "format": "uuid"})
ID_PARAM = PathParam({"type": "integer", "minimum": 1, "maximum": 2**31 - 1})
# Path parameters by name, as api.http reads them.
PATH_PARAMS: dict[str, PathParam] = {
    "session_id": UUID_PARAM, "other_id": ID_PARAM, "order_id": ID_PARAM,
    "version_id": ID_PARAM, "recording_id": ID_PARAM, "finding_id": ID_PARAM,
    "rectification_id": ID_PARAM,
    "code": PathParam({"type": "string", "minLength": 1, "maxLength": 32},
                      "the institution's code"),
    "reference": PathParam({"type": "string", "pattern": r"^[A-Za-z0-9\-_]{1,64}$"}),
    "application_no": PathParam({"type": "string", "pattern": r"^[A-Za-z0-9\-]{4,64}$"}),
    "ref": PathParam({"type": "string", "pattern": r"^[A-Za-z0-9_\-]{16,64}$"}),
    "sha256": PathParam({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
    "ticket": PathParam({"type": "string", "pattern": r"^[A-Za-z0-9_\-]{16,128}$"}),
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    auth: AuthKind
    permission: Permission | None
    body: type[BaseModel] | None
    responses: dict[int, ResponseSpec] = field(default_factory=dict)
    query: tuple[Query, ...] = ()
    produces: str = "application/json"
    handler: Handler | None = field(default=None, compare=False)
    extensions: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # False where the body is read raw (a signed body) rather than by api.http.read_json.
    json_content_type: bool = True

    @property
    def path_names(self) -> list[str]:
        return re.findall(r"{([^}:]+)", self.path)

    def statuses(self) -> dict[int, ResponseSpec]:
        """Every status code of the operation: declared, and those of the request plumbing."""
        found: dict[int, ResponseSpec] = {}
        if self.auth != "none":
            found[401] = "not logged in, or the token expired"
        if self.permission is not None:
            found[403] = f"the role lacks the permission {self.permission.value}"
        if self.path_names:
            found[404] = "no such object (or not visible to the caller)"
        if any(type(q) is not Query for q in self.query):  # plain Query: passed on unchecked
            found[422] = "a query parameter is invalid"
        if self.body is not None:
            found[400] = "the body is not JSON"
            found[413] = "the body is too large"
            if self.json_content_type:
                found[415] = "the body is not application/json"
            found[422] = "the body does not match its schema (the fields are named)"
        found.update(self.responses)
        found[500] = "unexpected error (a bug: logged)"
        # api.load_shedding: Redis or the CPU pool saturated, with Retry-After.
        found.setdefault(503, "too busy: try again after Retry-After seconds")
        return found


class UndocumentedResponse(AssertionError):
    """Raised in the test profile when a response is not what the operation declares."""


class Api:
    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.operations: list[Operation] = []

    def endpoint(
        self, method: str, path: str, *, summary: str, tag: str, auth: AuthKind = "staff",
        permission: Permission | None = None, body: type[BaseModel] | None = None,
        returns: type[BaseModel] | None = None, status: int = 200,
        responses: Mapping[int, ResponseSpec] | None = None,
        query: Sequence[str | Query] = (), produces: str = "application/json",
        description: str = "", extensions: Mapping[str, Any] | None = None,
        json_content_type: bool = True,
    ) -> Callable[[Handler], Handler]:
        """`returns` is the model of the JSON body answered with `status`; `responses` holds
        the other status codes: a model for another success body, a reason for an error."""
        declared: dict[int, ResponseSpec] = {}
        if produces == "application/json":
            if returns is None:
                raise TypeError(f"{method} {path}: a JSON operation declares what it returns")
            declared[status] = returns
        elif status != 101:
            declared[status] = produces
        declared.update(responses or {})
        params = tuple(q if isinstance(q, Query) else Query(q) for q in query)

        def register(handler: Handler) -> Handler:
            op = Operation(method.lower(), PREFIX + path, summary, tag, auth, permission, body,
                           declared, params, produces, handler, dict(extensions or {}),
                           description, json_content_type)

            async def guarded(request: web.Request) -> web.StreamResponse:
                checking = request.app[CONFIG].settings.profile == "test"
                try:
                    if auth == "staff":
                        principal = await resolve_staff(request)
                        if permission is not None and not principal.can(permission):
                            raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限",
                                             permission=permission.value)
                        request[PRINCIPAL] = principal
                    elif auth == "customer":
                        request[PRINCIPAL] = await resolve_customer(request)
                    response = await handler(request)
                except (ApiProblem, WorkflowError, DoesNotExist, IntegrityError) as exc:
                    if checking:
                        _check_error(op, exc)
                    raise
                if checking:
                    _check_response(op, response)
                return response

            self.routes.route(method, PREFIX + path)(guarded)
            self.operations.append(op)
            return handler

        return register


def _error_status(exc: Exception) -> int:
    if isinstance(exc, ApiProblem | WorkflowError):
        return exc.status
    return 404 if isinstance(exc, DoesNotExist) else 409


def _check_error(op: Operation, exc: Exception) -> None:
    status = _error_status(exc)
    if status not in op.statuses():
        raise UndocumentedResponse(
            f"{op.method.upper()} {op.path} answered {status} "
            f"({getattr(exc, 'code', type(exc).__name__)}), which its declaration lacks") from exc


def _check_response(op: Operation, response: web.StreamResponse) -> None:
    where = f"{op.method.upper()} {op.path}"
    statuses = op.statuses()
    if response.status not in statuses:
        raise UndocumentedResponse(f"{where} answered {response.status}, which its "
                                   "declaration lacks")
    spec = statuses[response.status]
    if not isinstance(response, web.Response) or not isinstance(spec, type):
        return
    body = response.body
    if response.content_type != "application/json" or not isinstance(body, bytes):
        raise UndocumentedResponse(f"{where} answered {response.status} as "
                                   f"{response.content_type}, not JSON")
    try:
        spec.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise UndocumentedResponse(
            f"{where} answered {response.status} with a body that is not its declared "
            f"{spec.__name__}: {exc}") from exc


def openapi_path(path: str) -> str:
    """aiohttp's `{id:regex}` becomes OpenAPI's `{id}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _path_param(op: Operation, name: str) -> dict[str, Any]:
    enum = re.search(r"{" + re.escape(name) + r":([^}]+)}", op.path)
    if enum is not None:  # aiohttp's {kind:a|b|c}
        schema: dict[str, Any] = {"type": "string", "enum": enum.group(1).split("|")}
        described = PathParam(schema)
    else:
        described = PATH_PARAMS.get(name, PathParam({"type": "string", "minLength": 1,
                                                     "maxLength": 200}))
    param = {"name": name, "in": "path", "required": True, "schema": described.schema}
    if described.description:
        param["description"] = described.description
    return param


class _Schemas:
    """components/schemas, filled from the pydantic models the operations name."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.models: dict[str, type[BaseModel]] = {}

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]
            ) -> dict[str, str]:
        name = model.__name__
        known = self.models.get(name)
        if known is not None and known is not model:
            raise TypeError(f"two models named {name}: {known} and {model}")
        if known is None:
            self.models[name] = model
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}",
                                             mode=mode)
            for sub, definition in schema.pop("$defs", {}).items():
                self.items.setdefault(sub, definition)
            self.items[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


def _response(op: Operation, status: int, spec: ResponseSpec,
              schemas: _Schemas) -> dict[str, Any]:
    if status == 101:
        return {"description": spec if isinstance(spec, str) else "Switching Protocols"}
    if isinstance(spec, type):
        return {"description": spec.__doc__.strip().splitlines()[0] if spec.__doc__ else "OK",
                "content": {"application/json": {"schema": schemas.ref(spec, "serialization")}}}
    if status < 400:  # one or more media types, comma-separated
        return {"description": "OK",
                "content": {media: {"schema": BINARY} for media in spec.split(",")}}
    return {"description": spec, "content": {PROBLEM_TYPE: {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}


def openapi_document(operations: list[Operation], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas = _Schemas()
    schemas.ref(ProblemDocument, "serialization")
    for op in operations:
        params = [_path_param(op, name) for name in op.path_names]
        params += [q.parameter() for q in op.query]
        responses = {str(status): _response(op, status, spec, schemas)
                     for status, spec in sorted(op.statuses().items())}
        entry: dict[str, Any] = {
            "summary": op.summary, "tags": [op.tag], "operationId": _operation_id(op),
            "parameters": params, "responses": responses,
        }
        if op.description:
            entry["description"] = op.description
        if op.auth != "none":
            entry["security"] = [{"staffToken" if op.auth == "staff" else "customerToken": []}]
        if op.permission is not None:
            entry["x-permission"] = op.permission.value
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": schemas.ref(op.body, "validation")}}}
        entry.update(op.extensions)
        paths.setdefault(openapi_path(op.path), {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "远程双录 API", "version": version,
                 "description": "Remote double-recording of insurance sales. Errors are "
                                "problem documents (RFC 9457): an English `code`, a Chinese "
                                "`detail`."},
        "paths": paths,
        "components": {
            "schemas": schemas.items,
            "securitySchemes": {
                "staffToken": {"type": "http", "scheme": "bearer",
                               "description": "from POST /api/v1/auth/login"},
                "customerToken": {"type": "http", "scheme": "bearer",
                                  "description": "from POST /api/v1/invitations/open"},
            },
        },
    }


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}:\\[\]\-+.*|]", "", openapi_path(op.path).removeprefix(PREFIX))
    return op.method + "_" + "_".join(w for w in words.strip("/").split("/") if w)
