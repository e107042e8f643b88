"""Request plumbing: the error middleware (never a 500 for bad input), the database context,
JSON body parsing into pydantic models, and path parameters."""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, TypeAdapter, ValidationError
from tortoise.exceptions import DoesNotExist, IntegrityError

from api.keys import DATABASE
from api.problems import ApiProblem, problem
from infra.database import activate, deactivate
from workflow.errors import WorkflowError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


@web.middleware
async def database_context(request: web.Request, handler: Any) -> web.StreamResponse:
    token = activate(request.app[DATABASE])
    try:
        response: web.StreamResponse = await handler(request)
        return response
    finally:
        deactivate(token)


@web.middleware
async def problems(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiProblem as exc:
        return exc.response()
    except WorkflowError as exc:
        return problem(exc.status, exc.code, exc.message, exc.extra)
    except DoesNotExist:
        return problem(404, "not_found", "找不到请求的对象")
    except IntegrityError:
        log.info("integrity error on %s %s", request.method, request.path)
        return problem(409, "conflict", "数据与已有记录冲突，请刷新后重试")
    except web.HTTPRequestEntityTooLarge:
        return problem(413, "body_too_large", "提交的内容过大")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        detail = {404: "找不到该地址", 405: "不支持该请求方法"}.get(exc.status, "请求无法处理")
        return problem(exc.status, code, detail)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal_error", "系统繁忙，请稍后再试")


async def read_json(request: web.Request, model: type[M]) -> M:
    """Parses the body into `model`: 415 wrong type, 400 malformed, 422 invalid, 413 too big."""
    if request.content_type != "application/json":
        raise ApiProblem(415, "unsupported_media_type", "请以 JSON 格式提交（application/json）")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiProblem(413, "body_too_large", "提交的内容过大") from exc
    return parse_json(raw, model)


def parse_json(raw: bytes, model: type[M]) -> M:
    """The one JSON decoder of request bodies: pydantic's parser in strict JSON mode, so a
    boolean is no number, a number no date and a string no integer (as the OpenAPI document
    says). Its parser refuses nesting deeper than 200 and numbers beyond Python's 4,300-digit
    limit (each a 422, never the 500 of a RecursionError or ValueError)."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        broken = next((e for e in errors if e["type"] == "json_invalid"), None)
        if broken is not None:
            message = str(broken.get("ctx", {}).get("error", broken["msg"]))
            if "recursion limit" in message:
                raise ApiProblem(422, "json_too_deep", "提交的内容嵌套层级过深") from exc
            if "number out of range" in message:
                raise ApiProblem(422, "number_too_large", "提交的数字过长") from exc
            raise ApiProblem(400, "malformed_json", "提交的内容不是有效的 JSON") from exc
        raise ApiProblem(422, "validation_failed", "提交的内容有误，请检查后重试", errors=[
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"],
             "type": e["type"]} for e in errors
        ]) from exc


# Primary keys are 32-bit integers (Tortoise's IntField): a larger id names nothing, and
# PostgreSQL would refuse to compare it (a 500).
ID_MAX = 2**31 - 1
_ASCII_INT = re.compile(r"[0-9]{1,30}")
NOT_FOUND = ("not_found", "找不到请求的对象")


def path_uuid(request: web.Request, name: str = "session_id") -> UUID:
    raw = request.match_info[name]
    try:
        if len(raw) > 36:
            raise ValueError(raw)
        return UUID(raw)
    except ValueError as exc:
        raise ApiProblem(404, *NOT_FOUND) from exc


def path_int(request: web.Request, name: str, high: int = ID_MAX) -> int:
    """A path id: ASCII digits only (`str.isdigit` takes ³ and ٣, which `int` refuses) within
    1..high, else 404 (no such object)."""
    value = request.match_info[name]
    if not _ASCII_INT.fullmatch(value) or not 1 <= int(value) <= high:
        raise ApiProblem(404, *NOT_FOUND)
    return int(value)


def path_str(request: web.Request, name: str, max_length: int,
             pattern: re.Pattern[str] | None = None) -> str:
    """A path name (a code, a reference): longer than the column or of the wrong shape names
    nothing (404) — and is never sent to the database."""
    value = request.match_info[name]
    if (not value or len(value) > max_length or "\x00" in value
            or (pattern is not None and not pattern.fullmatch(value))):
        raise ApiProblem(404, *NOT_FOUND)
    return value


def _bad_query(name: str, detail: str | None = None) -> ApiProblem:
    return ApiProblem(422, "validation_failed", detail or f"参数 {name} 无效", field=name)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within low..high: its length is checked before `int()`
    (Python refuses to convert more than 4,300 digits), ASCII digits only; else 422."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _ASCII_INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise _bad_query(name)
    return int(raw)


def query_str(request: web.Request, name: str, max_length: int) -> str | None:
    """A text query parameter (a filter): at most `max_length` characters, no NUL (PostgreSQL
    cannot compare text holding one); else 422. None when absent or empty."""
    raw = request.query.get(name)
    if not raw:
        return None
    if len(raw) > max_length or "\x00" in raw:
        raise _bad_query(name)
    return raw


E = TypeVar("E", bound=enum.Enum)


def query_enum(request: web.Request, name: str, kind: type[E], default: E | None = None
               ) -> E | None:
    """An enumerated query parameter (a state, a status): one of its values, else 422."""
    raw = request.query.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise _bad_query(name, "状态参数无效" if name == "status" or name == "state"
                         else None) from exc


# -- query parameters: one object parses a parameter and describes it in the OpenAPI document --


@dataclass(frozen=True)
class Query:
    """A query parameter; `read` answers 422 for a value the `schema` would refuse."""

    name: str

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def parameter(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query", "required": False, "schema": self.schema()}


@dataclass(frozen=True)
class TextQuery(Query):
    max_length: int = 200

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length}

    def read(self, request: web.Request) -> str | None:
        return query_str(request, self.name, self.max_length)


@dataclass(frozen=True)
class IntQuery(Query):
    default: int = 0
    low: int = 0
    high: int = ID_MAX

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high,
                "default": self.default}

    def read(self, request: web.Request) -> int:
        return query_int(request, self.name, self.default, self.low, self.high)


@dataclass(frozen=True)
class ChoiceQuery(Query):
    """One of a fixed set of values (an enum's values); `several` takes a comma-separated
    list of them."""

    values: tuple[str, ...] = ()
    default: str | None = None
    several: bool = False

    @classmethod
    def of(cls, name: str, kind: type[enum.Enum], default: str | None = None,
           several: bool = False) -> ChoiceQuery:
        return cls(name, tuple(str(m.value) for m in kind), default, several)

    def schema(self) -> dict[str, Any]:
        if self.several:
            one = "|".join(re.escape(v) for v in self.values)
            schema: dict[str, Any] = {"type": "string", "pattern": f"^({one})(,({one}))*$"}
        else:
            schema = {"type": "string", "enum": list(self.values)}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def read(self, request: web.Request) -> str | None:
        raw = request.query.get(self.name)
        if not raw:
            return self.default
        parts = raw.split(",") if self.several else [raw]
        if not all(p in self.values for p in parts):
            detail = "状态参数无效" if self.name in ("state", "status") else None
            raise _bad_query(self.name, detail)
        return raw


@dataclass(frozen=True)
class DateQuery(Query):
    """A calendar day (YYYY-MM-DD), or with `timed` an instant with its UTC offset."""

    timed: bool = False

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time" if self.timed else "date"}

    def read(self, request: web.Request) -> Any:
        raw = request.query.get(self.name)
        if not raw:
            return None
        adapter = _INSTANT if self.timed else _DAY
        try:
            return adapter.validate_strings(raw)
        except ValidationError as exc:
            detail = (f"时间参数 {self.name} 须为带时区的 ISO 8601 时间" if self.timed
                      else f"参数 {self.name} 应为日期（YYYY-MM-DD）")
            raise _bad_query(self.name, detail) from exc


_INSTANT: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)
_DAY: TypeAdapter[date] = TypeAdapter(date)
