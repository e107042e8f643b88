"""Load shedding and the limits on anonymous callers (issue 14).

- `shed_load`: when the Redis pool has no free connection within its wait, Redis does not
  answer within the socket timeout, or the CPU pool's line is full, the request gets 503 with
  Retry-After (a problem document) instead of a 500: the client may simply try again.
- `limit_anonymous`: anonymous endpoints are limited per address: the cheap public ones
  (consent texts, invitation open, seal keys) in requests per minute, the signed and
  token-bearing ones (insurer and bank server calls, channel opens, invitation open) in
  refusals per minute; past the limit they are refused with 429 and Retry-After before any
  signature is checked or anything is written. /health is never limited.
- `refusal_flusher`: writes the aggregated audit entries of anonymous refusals
  (security.audit.RefusalLog) every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth import client_ip
from api.keys import DATABASE, REDIS
from api.problems import ApiProblem, problem
from api.registry import PREFIX
from infra.database import activate, deactivate
from infra.tasks import cancel_and_wait
from security.audit import RefusalLog
from security.cpu import CpuBusy
from security.ratelimit import RateLimiter
from workflow.errors import WorkflowError

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER = 2


def _with_retry_after(status: int, code: str, detail: str, retry_after: int) -> web.Response:
    response = problem(status, code, detail, {"retry_after": retry_after})
    response.headers["Retry-After"] = str(retry_after)
    return response


def _unavailable(retry_after: int, code: str) -> web.Response:
    return _with_retry_after(503, code, "系统繁忙，请稍后再试", retry_after)


def too_many(wait: int, code: str = "too_many_requests",
             detail: str | None = None) -> web.Response:
    """429 with Retry-After: the seconds until the counting window frees."""
    return _with_retry_after(429, code, detail or f"请求过于频繁，请在{wait}秒后重试", wait)


@web.middleware
async def shed_load(request: web.Request, handler: Any) -> web.StreamResponse:
    """503 + Retry-After for a saturated Redis pool or server, or a full CPU line."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except CpuBusy as exc:
        log.warning("CPU pool saturated: 503 for %s %s", request.method, request.path)
        return _unavailable(exc.retry_after, "server_busy")
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # MaxConnectionsError and "No connection available." are ConnectionErrors too.
        log.warning("Redis unavailable (%s): 503 for %s %s", exc, request.method, request.path)
        return _unavailable(REDIS_RETRY_AFTER, "service_unavailable")


@dataclass(frozen=True)
class AnonymousLimits:
    requests: RateLimiter  # per address and minute, on REQUEST_LIMITED routes
    refusals: RateLimiter  # refused anonymous requests per address and minute


ANONYMOUS_LIMITS = web.AppKey("anonymous_limits", AnonymousLimits)
REFUSALS = web.AppKey("refusal_log", RefusalLog)

REQUEST_LIMITED = frozenset({
    f"{PREFIX}/consent-texts", f"{PREFIX}/invitations/open",
    f"{PREFIX}/invitations/preview", f"{PREFIX}/invitations/resume",
    f"{PREFIX}/institutions/{{code}}/seal-keys",
})
REFUSAL_LIMITED_PREFIXES = (f"{PREFIX}/insurer/", f"{PREFIX}/bank/")
REFUSAL_LIMITED = frozenset({
    f"{PREFIX}/invitations/open", f"{PREFIX}/wechat/open", f"{PREFIX}/miniprogram/login",
})
REFUSED = frozenset({401, 403, 404, 410})


def anonymous_limits(redis: Any, requests_per_minute: int,
                     refusals_per_minute: int) -> AnonymousLimits:
    return AnonymousLimits(RateLimiter(redis, "anonymous", requests_per_minute, 60),
                           RateLimiter(redis, "anonymous-refused", refusals_per_minute, 60))


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@web.middleware
async def limit_anonymous(request: web.Request, handler: Any) -> web.StreamResponse:
    route = _route(request)
    by_refusals = route in REFUSAL_LIMITED or route.startswith(REFUSAL_LIMITED_PREFIXES)
    if route not in REQUEST_LIMITED and not by_refusals:
        response: web.StreamResponse = await handler(request)
        return response
    limits = request.app[ANONYMOUS_LIMITS]
    ip = client_ip(request)
    if route in REQUEST_LIMITED and (wait := await limits.requests.take(ip)):
        return too_many(wait)
    if by_refusals and (wait := await limits.refusals.blocked_for(ip)):
        return too_many(wait)
    try:
        response = await handler(request)
    except (ApiProblem, WorkflowError) as exc:
        if by_refusals and exc.status in REFUSED:
            await limits.refusals.hit(ip)
        raise
    if by_refusals and response.status in REFUSED:
        await limits.refusals.hit(ip)
    return response


def refusal_flusher(interval: float = 10.0) -> Any:
    """A cleanup context that flushes aggregated refusals while the app runs."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        refusals = app[REFUSALS] = RefusalLog(app[REDIS])

        async def loop() -> None:
            token = activate(app[DATABASE])
            try:
                while True:
                    await asyncio.sleep(interval)
                    try:
                        await refusals.flush()
                    except Exception:
                        log.exception("flushing aggregated refusals failed; retrying")
            finally:
                deactivate(token)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            await cancel_and_wait(task, "the refusal aggregation loop")
            with contextlib.suppress(Exception):
                token = activate(app[DATABASE])
                try:
                    await refusals.flush()  # windows that are over
                finally:
                    deactivate(token)

    return context
