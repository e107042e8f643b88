"""Signalling for the H5 video call (R-20): each party posts its WebRTC offer (after ICE
gathering: aiortc has no trickle ICE) and gets the server's answer; the server relays media
between the parties, plays the script's speech and records everything."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from api.auth import customer, staff
from api.http import path_uuid, read_json
from api.keys import CALL_HUB
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.schemas import Body
from media.call import SignallingError
from models.sessions import RecordingSession
from security.roles import Permission
from workflow.sessions import get_visible
from workflow.states import CALL_STATES

api = Api()


class OfferBody(Body):
    sdp: str = Field(min_length=10, max_length=30_000)
    type: Literal["offer"]


async def _answer(request: web.Request, session: RecordingSession,
                  role: Literal["customer", "agent"]) -> web.Response:
    # Media flows only in a started call, which needs consent first.
    if session.state not in CALL_STATES:
        raise ApiProblem(409, "call_not_started", "通话尚未开始或已中断，请稍候")
    body = await read_json(request, OfferBody)
    try:
        sdp, type_ = await request.app[CALL_HUB].join(str(session.id), role, body.sdp, body.type)
    except SignallingError as exc:
        raise ApiProblem(422, "offer_refused",
                         "浏览器不支持本次视频通话所需的格式，请更换浏览器后重试",
                         reason=str(exc)) from exc
    return json_response({"sdp": sdp, "type": type_})


@api.endpoint("POST", "/customer/call/offer",
              summary="The customer's WebRTC offer; answers with the server's SDP",
              tag="call", auth="customer", body=OfferBody,
              responses={409: "call not started", 422: "offer not usable"})
async def post_customer_offer(request: web.Request) -> web.Response:
    session = await RecordingSession.get(id=customer(request).session_id)
    return await _answer(request, session, "customer")


@api.endpoint("POST", "/sessions/{session_id}/call/offer",
              summary="The agent's WebRTC offer; answers with the server's SDP",
              tag="call", permission=Permission.RECORD, body=OfferBody,
              responses={409: "call not started", 422: "offer not usable"})
async def post_agent_offer(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    if session.agent_id != principal.agent_id:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    return await _answer(request, session, "agent")
