"""Typed application keys: everything a request handler needs hangs off the app, not a global."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from tortoise.context import TortoiseContext

from infra.call_rooms import Rooms
from infra.config import Config
from infra.jobs import Jobs
from media.call import CallHub
from security.ratelimit import LoginThrottle
from security.tokens import TokenStore
from workflow.core import WorkflowDeps
from workflow.principals import CustomerPrincipal, StaffPrincipal

CONFIG = web.AppKey("config", Config)
REDIS = web.AppKey("redis", Redis)
DATABASE = web.AppKey("database", TortoiseContext)
DEPS = web.AppKey("workflow_deps", WorkflowDeps)
JOBS = web.AppKey("jobs", Jobs)
# The identity engines load lazily (seconds of start-up); one instance per app, made on demand.
IDENTITY: web.AppKey[Callable[[], Any]] = web.AppKey("identity_engines")
CALL_HUB = web.AppKey("call_hub", CallHub)
ROOMS = web.AppKey("call_rooms", Rooms)
STAFF_TOKENS = web.AppKey("staff_tokens", TokenStore)
CUSTOMER_TOKENS = web.AppKey("customer_tokens", TokenStore)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
PRINCIPAL: web.RequestKey[StaffPrincipal | CustomerPrincipal] = web.RequestKey(
    "principal", StaffPrincipal | CustomerPrincipal  # type: ignore[arg-type]
)
