"""Request plumbing: the error middleware (never a 500 for bad input), the database context,
JSON body parsing into pydantic models, and path parameters."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ValidationError
from tortoise.exceptions import DoesNotExist, IntegrityError

from api.keys import DATABASE
from api.problems import ApiProblem, problem
from app.database import activate, deactivate
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
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, "malformed_json", "提交的内容不是有效的 JSON") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"],
             "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ApiProblem(422, "validation_failed", "提交的内容有误，请检查后重试",
                         errors=errors) from exc


def path_uuid(request: web.Request, name: str = "session_id") -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError as exc:
        raise ApiProblem(404, "not_found", "找不到请求的对象") from exc


def path_int(request: web.Request, name: str) -> int:
    value = request.match_info[name]
    if not value.isdigit() or len(value) > 18:
        raise ApiProblem(404, "not_found", "找不到请求的对象")
    return int(value)
