"""Live pages: a WebSocket that forwards a session's events from Redis, and the agent's
pre-check of licence, position and network before anything else (R-03)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any
from uuid import UUID

from aiohttp import WSMsgType, web

from api.auth import client_ip, customer_from_token, staff, staff_from_token
from api.http import read_json
from api.keys import DEPS, REDIS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import LiveHello, LiveMessage, PrecheckResult
from api.schemas import LocationOnlyBody
from api.views import customer_session_view, session_summary
from infra.tasks import cancel_and_wait
from models.sessions import RecordingSession
from security.roles import Permission
from workflow.errors import WorkflowError
from workflow.events import RESUBSCRIBED, channel_for, subscribe
from workflow.gates import Location
from workflow.sessions import get_visible, precheck

log = logging.getLogger(__name__)

api = Api()
AUTH_TIMEOUT_SECONDS = 10


@api.endpoint("POST", "/agent/precheck",
              summary="Check licence, training, position and network before recording (R-03)",
              tag="sessions", permission=Permission.RECORD, body=LocationOnlyBody,
              returns=PrecheckResult, responses={403: "not an agent",
                                                 404: "the agent's profile is missing"})
async def post_precheck(request: web.Request) -> web.Response:
    body = await read_json(request, LocationOnlyBody)
    location = (Location(body.location.lat, body.location.lng, body.location.accuracy_m)
                if body.location else None)
    result = await precheck(request.app[DEPS], staff(request), location)
    premises = result.premises
    return json_response({
        "passed": not result.failures, "ip": client_ip(request),
        "failures": [{"code": f.code, "message": f.message} for f in result.failures],
        "premises": {"id": premises.id, "name": premises.name, "address": premises.address}
        if premises else None,
        "licence_expires": result.licence_expires.isoformat(),
        "training_expires": result.training_expires.isoformat(),
    })


async def _authenticate(request: web.Request, first: dict[str, Any]) -> tuple[UUID, str]:
    """The first message carries the token: tokens never go into URLs (they end up in logs)."""
    token = str(first.get("token", ""))
    if first.get("role") == "customer":
        principal = await customer_from_token(request, token)
        return principal.session_id, "customer"
    principal_staff = await staff_from_token(request, token)
    if not principal_staff.can(Permission.VIEW_SESSIONS):
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    try:
        session_id = UUID(str(first.get("session_id", "")))
    except ValueError as exc:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话") from exc
    await get_visible(principal_staff, session_id)
    return session_id, "staff"


async def _snapshot(session_id: UUID, role: str) -> dict[str, Any]:
    session = await RecordingSession.get(id=session_id)
    view = (await customer_session_view(session) if role == "customer"
            else session_summary(session))
    return {"type": "snapshot", "session": view}


LIVE_PROTOCOL = {
    "x-websocket": {
        "client_sends_first": LiveHello.model_json_schema(),
        "server_sends": LiveMessage.model_json_schema(),
        "close_codes": {"4401": "authentication failed (an error message is sent first)"},
    },
}


@api.endpoint("GET", "/live",
              summary="WebSocket of live session events; the first message must be "
              '{"role": "customer"|"staff", "token": ..., "session_id": (staff)}',
              description="A WebSocket (RFC 6455): connect with an Upgrade request; the first "
              "message authenticates (tokens never go into URLs). A request that is not a "
              "WebSocket handshake is answered 426 with `Upgrade: websocket`. The messages are "
              "described under x-websocket.",
              tag="live", auth="none", produces="websocket", status=101,
              responses={101: "WebSocket handshake accepted (then see x-websocket)",
                         400: "a malformed WebSocket handshake",
                         426: "not a WebSocket handshake"},
              extensions=LIVE_PROTOCOL)
async def live(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise ApiProblem(426, "websocket_required", "请以 WebSocket 方式连接",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    await ws.prepare(request)
    try:
        first = await ws.receive_json(timeout=AUTH_TIMEOUT_SECONDS)
        session_id, role = await _authenticate(request, first if isinstance(first, dict) else {})
    except (TimeoutError, ValueError, TypeError, ApiProblem, WorkflowError) as exc:
        # The socket is open already: errors go over it, not as an HTTP problem response.
        detail = (exc.detail if isinstance(exc, ApiProblem)
                  else exc.message if isinstance(exc, WorkflowError) else "连接认证失败")
        await ws.send_json({"type": "error", "detail": detail}, dumps=_dumps)
        await ws.close(code=4401)
        return ws
    events = subscribe(request.app[REDIS], channels=(channel_for(session_id),))
    forward = asyncio.create_task(_forward(events, ws, session_id, role))
    try:
        await ws.send_json(await _snapshot(session_id, role), dumps=_dumps)
        async for message in ws:  # the client only pings; anything else is ignored
            if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
    finally:
        await cancel_and_wait(forward, f"the live events of session {session_id}")
        await events.aclose()
    return ws


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


async def _forward(events: AsyncGenerator[dict[str, Any], None], ws: web.WebSocketResponse,
                   session_id: UUID, role: str) -> None:
    """Each event of the session, then the page's new snapshot; after a Redis outage (events
    may have been missed) a fresh snapshot at once. If forwarding fails, the socket is closed:
    the page reconnects and gets a snapshot, rather than staying open and silent."""
    try:
        async for message in events:
            if message is RESUBSCRIBED:
                await ws.send_json(await _snapshot(session_id, role), dumps=_dumps)
                continue
            await _send_event(ws, session_id, role, json.loads(message["data"]))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("live events of session %s stopped; closing the socket", session_id)
        await ws.close(code=1011)


async def _send_event(ws: web.WebSocketResponse, session_id: UUID, role: str,
                      event: dict[str, Any]) -> None:
    if role == "customer":
        if "seq" not in event:  # staff alerts (QA deadline, missing evidence): not theirs
            return
        # Customers see their progress, not who did what from which address.
        event = {k: event[k] for k in ("seq", "type", "to_state", "at")}
    await ws.send_json({"type": "event", "event": event}, dumps=_dumps)
    await ws.send_json(await _snapshot(session_id, role), dumps=_dumps)
