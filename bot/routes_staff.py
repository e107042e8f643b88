"""Staff endpoints of the channels: an agent sends the invitation through WeChat and follows
its delivery, answers a customer who asked for a person (hand-off), binds their own WeChat for
notifications; QA replays a session's conversation (R-41, every replay audited)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Literal

from aiohttp import web
from pydantic import Field

from api.auth import staff
from api.http import path_uuid, read_json
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import (
    BindingCode,
    ChannelInvitationView,
    Conversation,
    Inbox,
    InvitationChannels,
    OutboxView,
    Unbound,
)
from api.schemas import Body
from bot import channel_send, outbox
from bot import invitations as channel_invitations
from bot.routes_wechat import channels_of
from bot.runtime import CHANNELS
from bot.wechat_api import WeChatApiError
from models.channels import (
    ChannelInvitation,
    ConversationMessage,
    OutboxKind,
    WechatUser,
)
from models.sessions import RecordingSession
from security import audit
from security.roles import Permission
from workflow import conversations
from workflow.sessions import get_visible

api = Api()
P = Permission


class WeChatInvitationBody(Body):
    mode: Literal["auto", "template", "subscribe", "qrcode"] = "auto"


class SendInvitationBody(Body):
    """The agent's choice in the console's 发送邀请 (issue 17 item 4)."""

    channel: Literal["wechat", "miniprogram", "bank_app", "sms", "qrcode", "link"]
    # For "wechat": template / subscribe message to a known follower, or the account's QR code.
    mode: Literal["auto", "template", "subscribe", "qrcode"] = "auto"
    # For "sms": another mobile number than the one in the application (kept encrypted).
    phone: str | None = Field(default=None, pattern=r"^1[3-9][0-9]{9}$")


class AgentMessageBody(Body):
    text: str = Field(min_length=1, max_length=600)


@api.endpoint("POST", "/sessions/{session_id}/wechat/invitation",
              summary="Send the invitation through WeChat (template, subscribe message or QR "
                      "code); returns delivery status and the fallback link / SMS text",
              tag="channels", permission=P.RECORD, body=WeChatInvitationBody,
              returns=ChannelInvitationView, status=201,
              responses={409: "customer not following / no subscription / too many"})
async def post_wechat_invitation(request: web.Request) -> web.Response:
    channels = channels_of(request)
    body = await read_json(request, WeChatInvitationBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    view = await channel_invitations.send_via_wechat(channels, principal, session, body.mode)
    return json_response(view, status=201)


@api.endpoint("GET", "/sessions/{session_id}/invitation-channels",
              summary="The channels that can reach this session's customer now (WeChat, "
                      "mini-program card, bank app, SMS, QR code, link), with the reason when "
                      "one cannot", tag="channels", permission=P.RECORD,
              returns=InvitationChannels)
async def get_invitation_channels(request: web.Request) -> web.Response:
    session = await _own_session(request)
    return json_response(await channel_send.options(request.app[CHANNELS], session))


@api.endpoint("POST", "/sessions/{session_id}/channel-invitations",
              summary="Send the invitation through the chosen channel (through the outbox, "
                      "audited); returns the delivery status, QR image and texts to copy",
              tag="channels", permission=P.RECORD, body=SendInvitationBody,
              returns=ChannelInvitationView, status=201,
              responses={409: "the channel cannot reach this customer / session state / too "
                              "many invitations"})
async def post_channel_invitation(request: web.Request) -> web.Response:
    channels = request.app[CHANNELS]
    body = await read_json(request, SendInvitationBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    view = await channel_send.send(channels, principal, session, body.channel, mode=body.mode,
                                   phone=body.phone)
    return json_response(view, status=201)


async def _own_session(request: web.Request) -> RecordingSession:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    if principal.agent_id is None or session.agent_id != principal.agent_id:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    return session


@api.endpoint("GET", "/sessions/{session_id}/channel-invitation",
              summary="The latest channel invitation: delivery status, opens, fallback texts",
              tag="channels", permission=P.RECORD, returns=ChannelInvitationView)
async def get_channel_invitation(request: web.Request) -> web.Response:
    channels = request.app[CHANNELS]
    session = await _own_session(request)
    invitation = await ChannelInvitation.filter(session_id=session.id).order_by("-id").first()
    if invitation is None:
        raise ApiProblem(404, "channel_invitation_not_found", "该会话尚未通过渠道发送邀请")
    return json_response(await channel_send.console_view(channels, invitation))


@api.endpoint("POST", "/sessions/{session_id}/wechat/messages",
              summary="The agent answers the customer in WeChat (customer-service message)",
              tag="channels", permission=P.RECORD, body=AgentMessageBody, returns=OutboxView,
              status=202, responses={409: "the customer has no WeChat binding"})
async def post_agent_message(request: web.Request) -> web.Response:
    channels = channels_of(request)
    body = await read_json(request, AgentMessageBody)
    session = await _own_session(request)
    invitation = await ChannelInvitation.filter(
        session_id=session.id, bound_app_id=channels.config.app_id,
    ).order_by("-id").first()
    if invitation is None or invitation.bound_openid is None:
        raise ApiProblem(409, "customer_not_on_wechat", "该客户尚未通过微信办理，无法发送微信消息")
    principal = staff(request)
    message = await outbox.enqueue(
        channels, OutboxKind.WECHAT_CUSTOM, f"console:{session.id}:{secrets.token_hex(8)}",
        invitation.bound_openid,
        {"purpose": "agent_reply", "text": f"【{principal.display_name}】{body.text}",
         "audience": "customer", "app_id": channels.config.app_id, "via": "console"},
        session_id=session.id,
    )
    return json_response(outbox.view(message), status=202)


@api.endpoint("GET", "/channels/agent/inbox",
              summary="Customer messages handed off to the calling agent (newest first)",
              tag="channels", permission=P.RECORD, returns=Inbox,
              responses={403: "not an agent"})
async def get_inbox(request: web.Request) -> web.Response:
    principal = staff(request)
    if principal.agent_id is None:
        raise ApiProblem(403, "not_an_agent", "只有销售人员可以查看客户留言")
    channels = request.app[CHANNELS]
    since = channels.now() - timedelta(days=7)
    session_ids = await RecordingSession.filter(
        agent_id=principal.agent_id, updated_at__gte=since).values_list("id", flat=True)
    rows = await ConversationMessage.filter(
        session_id__in=list(session_ids), direction="in",
        intent__in=["handoff", "handoff_message"], at__gte=since,
    ).order_by("-at").limit(100)
    return json_response({"items": [
        {**conversations.replay_view(m), "session_id": str(m.session_id)} for m in rows
    ]})


@api.endpoint("GET", "/sessions/{session_id}/conversation",
              summary="The stored WeChat conversation of a session, for QA replay (R-41)",
              tag="qa", permission=P.VIEW_RECORDING, returns=Conversation)
async def get_conversation(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    rows = await ConversationMessage.filter(session_id=session.id).order_by("at", "id")
    await audit.record_alone(
        principal.actor, "session.conversation.viewed", object_type="session",
        object_id=str(session.id), details={"messages": len(rows)},
    )
    return json_response({"session_id": str(session.id),
                          "messages": [conversations.replay_view(m) for m in rows]})


@api.endpoint("POST", "/channels/agent/wechat-binding",
              summary="A one-time code (and QR code) that binds the agent's WeChat",
              tag="channels", permission=P.RECORD, returns=BindingCode, status=201,
              responses={403: "not an agent", 404: "the channel is off"})
async def post_binding(request: web.Request) -> web.Response:
    channels = channels_of(request)
    principal = staff(request)
    if principal.agent_id is None:
        raise ApiProblem(403, "not_an_agent", "只有销售人员可以绑定微信")
    ttl = channels.config.wechat.binding_code_ttl_seconds
    while True:
        code = f"{secrets.randbelow(10**8):08d}"
        if await channels.redis.set(f"bot:bind:{code}", principal.user_id, nx=True, ex=ttl):
            break
    qrcode: dict[str, str] | None = None
    try:
        qr = await channels.wechat.create_qrcode(f"bind_{code}", ttl)
        qrcode = {"url": f"{channels.config.wechat.qrcode_show_url}?ticket={qr['ticket']}"}
    except WeChatApiError:
        qrcode = None  # the typed code still works
    await audit.record_alone(principal.actor, "wechat.agent.binding_code", object_type="user",
                             object_id=str(principal.user_id))
    return json_response({"code": code, "expires_in": ttl, "qrcode": qrcode,
                          "instructions": f"请用微信关注公众号后发送“绑定 {code}”，或扫描二维码。"},
                         status=201)


@api.endpoint("DELETE", "/channels/agent/wechat-binding",
              summary="Unbind the agent's WeChat (no more notifications)", tag="channels",
              permission=P.RECORD, returns=Unbound)
async def delete_binding(request: web.Request) -> web.Response:
    principal = staff(request)
    count = await WechatUser.filter(staff_user_id=principal.user_id).update(staff_user_id=None)
    await audit.record_alone(principal.actor, "wechat.agent.unbound", object_type="user",
                             object_id=str(principal.user_id), details={"bindings": count})
    return json_response({"unbound": count})
