"""Signalling for the H5 video call (R-20): each party posts its WebRTC offer (after ICE
gathering: aiortc has no trickle ICE) and gets the server's answer; the server relays media
between the parties, plays the script's speech and records everything.

A node without headroom for one more call refuses a new call with 503 and Retry-After (the
pages say 当前线路繁忙 and try again after it; a balancer may retry on another node); a party
joining a call already open on the node is always admitted (issue 16, R-32)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from aiohttp import web
from pydantic import Field

from api.auth import customer, staff
from api.http import path_uuid, read_json
from api.keys import ROOMS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import SdpAnswer
from api.schemas import Body
from infra.call_rooms import CallMoved
from media.call import SignallingError
from media.call.admission import CallRefused
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
    # The room lives on one node; another node forwards the offer there (infra/cluster.py).
    try:
        forwarded = await request.app[ROOMS].route(request, str(session.id))
    except CallMoved as moved:
        raise ApiProblem(503, "call_node_unavailable", "通话服务器正在切换，请稍候重试",
                         reason=str(moved)) from moved
    if forwarded is not None:
        return forwarded
    try:
        sdp, type_ = await request.app[ROOMS].join(str(session.id), role, body.sdp, body.type)
    except CallRefused as refused:
        wait = refused.retry_after
        raise ApiProblem(503, "call_capacity_full", "当前线路繁忙，请稍后重试",
                         headers={"Retry-After": str(wait)}, retry_after=wait,
                         reason=refused.headroom.reason) from refused
    except SignallingError as exc:
        raise ApiProblem(422, "offer_refused",
                         "浏览器不支持本次视频通话所需的格式，请更换浏览器后重试",
                         reason=str(exc)) from exc
    return json_response({"sdp": sdp, "type": type_})


async def _customer_offer(request: web.Request, session_id: UUID | None) -> web.Response:
    own = customer(request).session_id
    if session_id is not None and session_id != own:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    return await _answer(request, await RecordingSession.get(id=own), "customer")


async def _agent_offer(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    if session.agent_id != principal.agent_id:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    return await _answer(request, session, "agent")


@api.endpoint("POST", "/calls/{session_id}/customer/offer",
              summary="The customer's WebRTC offer; answers with the server's SDP (the session "
              "in the path lets a load balancer send both parties to the node of the call)",
              tag="call", auth="customer", body=OfferBody,
              returns=SdpAnswer,
              responses={409: "call not started", 422: "offer not usable",
                         503: "the call's node is changing, or it has no headroom for "
                              "another call (Retry-After)"})
async def post_call_customer_offer(request: web.Request) -> web.Response:
    return await _customer_offer(request, path_uuid(request))


@api.endpoint("POST", "/calls/{session_id}/agent/offer",
              summary="The agent's WebRTC offer; answers with the server's SDP",
              tag="call", permission=Permission.RECORD, body=OfferBody,
              returns=SdpAnswer,
              responses={409: "call not started", 422: "offer not usable",
                         503: "the call's node is changing, or it has no headroom for "
                              "another call (Retry-After)"})
async def post_call_agent_offer(request: web.Request) -> web.Response:
    return await _agent_offer(request)


@api.endpoint("POST", "/customer/call/offer",
              summary="The customer's WebRTC offer (older path without the session; behind a "
              "load balancer use /calls/{session_id}/customer/offer)",
              tag="call", auth="customer", body=OfferBody,
              returns=SdpAnswer,
              responses={404: "the session is gone", 409: "call not started",
                         422: "offer not usable",
                         503: "the call's node is changing, or it has no headroom for another "
                              "call (Retry-After)"})
async def post_customer_offer(request: web.Request) -> web.Response:
    return await _customer_offer(request, None)


@api.endpoint("POST", "/sessions/{session_id}/call/offer",
              summary="The agent's WebRTC offer (older path; behind a load balancer use "
              "/calls/{session_id}/agent/offer)",
              tag="call", permission=Permission.RECORD, body=OfferBody,
              returns=SdpAnswer,
              responses={409: "call not started", 422: "offer not usable",
                         503: "the call's node is changing, or it has no headroom for "
                              "another call (Retry-After)"})
async def post_agent_offer(request: web.Request) -> web.Response:
    return await _agent_offer(request)
