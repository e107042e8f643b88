"""RFC 9457 problem documents: an English `code` for developers, a Chinese `detail` for users."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

PROBLEM_TYPE = "application/problem+json"

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 413: "Content Too Large",
    415: "Unsupported Media Type", 416: "Range Not Satisfiable", 422: "Unprocessable Content",
    426: "Upgrade Required", 429: "Too Many Requests",
    500: "Internal Server Error", 503: "Service Unavailable",
}


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def json_response(data: Any, status: int = 200, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> web.Response:
    """JSON with Chinese kept readable (not \\u-escaped)."""
    return web.json_response(data, status=status, content_type=content_type, dumps=_dumps,
                             headers=headers)


def problem(
    status: int, code: str, detail: str, extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Extra members never replace the standard ones (a domain error may carry any names)."""
    body = {**(extra or {}), "type": f"urn:shuanglu:problem:{code}",
            "title": TITLES.get(status, "Error"), "status": status, "code": code,
            "detail": detail}
    return json_response(body, status=status, content_type=PROBLEM_TYPE, headers=headers)


class ProblemDocument(BaseModel):
    """The body of every error response (RFC 9457); a problem may carry more members (`errors`
    for a 422 of validation, `field`, `retry_after`, ...)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="urn:shuanglu:problem:<code>")
    title: str
    status: int = Field(ge=400, le=599)
    code: str = Field(description="English, stable: for programs")
    detail: str = Field(description="Chinese message for the user")


class ApiProblem(Exception):
    """Raised by handlers and helpers; the middleware turns it into a problem response."""

    def __init__(self, status: int, code: str, detail: str,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        return problem(self.status, self.code, self.detail, self.extra, self.headers)
