"""The mini-program backend: `code2session` login gives a short-lived customer token for the
same session API as the H5 pages, bound to the invitation like a WeChat link (R-20); the
customer's accepted subscribe-message templates are recorded so reminders and status updates
can be sent as subscribe messages."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from api.auth import bearer_token, client_ip
from api.http import read_json
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import Accepted, ChannelCustomerToken
from api.schemas import Body
from api.views import customer_session_view
from bot import invitations as channel_invitations
from bot.routes_wechat import channels_of
from bot.wechat_api import WeChatApiError
from models.channels import ChannelInvitation, SubscriptionGrant

api = Api()


class MiniProgramLoginBody(Body):
    code: str = Field(min_length=1, max_length=128)
    ref: str | None = Field(default=None, min_length=16, max_length=64,
                            pattern=r"^[A-Za-z0-9_\-]+$")


class SubscriptionsBody(Body):
    accepted: list[str] = Field(min_length=1, max_length=3)


@api.endpoint("POST", "/miniprogram/login",
              summary="Mini-program login (code2session) into the invited session: a "
                      "short-lived customer token",
              tag="miniprogram", auth="none", body=MiniProgramLoginBody,
              returns=ChannelCustomerToken,
              responses={401: "code invalid", 403: "bound to another user",
                         404: "no invitation for this user, or the channel is off",
                         409: "the session cannot be opened now",
                         410: "used, revoked or expired",
                         429: "too many opens from this address", 503: "WeChat unavailable"})
async def post_login(request: web.Request) -> web.Response:
    channels = channels_of(request)
    body = await read_json(request, MiniProgramLoginBody)
    ip = client_ip(request)
    if await channels.limits.ip_opens.hit(ip) > channels.limits.ip_opens.limit:
        raise ApiProblem(429, "too_many_requests", "操作过于频繁，请稍后再试")
    try:
        identity = await channels.mp.code_to_session(body.code)
    except WeChatApiError as exc:
        if exc.errcode == 40226:
            raise ApiProblem(403, "wechat_user_blocked",
                             "当前微信账号暂不能办理，请联系销售人员") from exc
        if exc.transient:
            raise ApiProblem(503, "wechat_unavailable", "微信服务暂时不可用，请稍后重试") from exc
        raise ApiProblem(401, "wechat_code_invalid", "登录已失效，请重新进入小程序") from exc
    app_id = channels.config.mp_app_id
    person = channel_invitations.Person(app_id, identity.openid, identity.unionid)
    ref = body.ref
    if ref is None:
        # Opened from a subscribe message or the menu: the invitation already bound to them.
        bound = await channel_invitations.latest_for(app_id, identity.openid)
        if bound is None and identity.unionid:
            bound = await ChannelInvitation.filter(
                bound_unionid=identity.unionid, revoked_at__isnull=True).order_by("-id").first()
        if bound is None:
            raise ApiProblem(404, "invitation_not_found",
                             "暂未查到您的双录邀请，请使用销售人员发送的链接进入")
        ref = channel_invitations.ref_of(channels, bound)
    redeemed = await channel_invitations.redeem(
        channels, ref, person, ip, request.headers.get("User-Agent", ""), channels.short_tokens)
    return json_response({
        "customer_token": redeemed.customer_token,
        "expires_in": channels.short_tokens.ttl_seconds, "reentry": redeemed.reentry,
        "session": await customer_session_view(redeemed.session),
    })


@api.endpoint("POST", "/miniprogram/subscriptions",
              summary="Record the subscribe-message templates the customer accepted "
                      "(wx.requestSubscribeMessage)",
              tag="miniprogram", auth="customer", body=SubscriptionsBody, returns=Accepted,
              status=201, responses={403: "not this customer's invitation",
                                     404: "the channel is off",
                                     422: "a template that is not configured"})
async def post_subscriptions(request: web.Request) -> web.Response:
    channels = channels_of(request)
    body = await read_json(request, SubscriptionsBody)
    claims = await channels.customer_tokens.resolve(bearer_token(request)) or {}
    if claims.get("app_id") != channels.config.mp_app_id or not claims.get("openid"):
        raise ApiProblem(403, "not_a_miniprogram_login", "请在小程序内操作")
    wx = channels.config.wechat
    known = {wx.mp_reminder_template_id, wx.mp_status_template_id}
    unknown = [t for t in body.accepted if t not in known]
    if unknown:
        raise ApiProblem(422, "validation_failed", "订阅的消息模板无效", unknown=unknown)
    for template_id in body.accepted:
        grant, _ = await SubscriptionGrant.get_or_create(
            app_id=channels.config.mp_app_id, openid=claims["openid"], template_id=template_id)
        # A one-time subscription allows one message per acceptance (WeChat's own rule).
        grant.remaining = min(grant.remaining + 1, 50)
        await grant.save(update_fields=["remaining", "updated_at"])
    return json_response({"accepted": body.accepted}, status=201)
