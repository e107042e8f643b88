"""The agent's invitation through a channel of their choice (issue 17 item 4, R-20): WeChat
(template / subscribe message), a mini-program card, a push into the bank's app, a text
message, a QR code to scan, or the plain link to copy; and what the console shows about it
(the delivery status, the QR image, the texts to copy, the fallbacks when a delivery failed).

Every send goes through the outbox (retries, final failures recorded on the invitation), is
rate-limited per agent and audited. Phone numbers are kept encrypted in the outbox and shown
masked (R-52).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bot import bank as bank_links
from bot import invitations as channel_invitations
from bot import outbox, qr
from bot.invitations import CHINA, Person
from bot.runtime import Channels
from models.channels import (
    ChannelInvitation,
    ChannelKind,
    DeliveryStatus,
    OutboundMessage,
    OutboxKind,
    WechatUser,
)
from models.people import Customer
from models.sales import Channel, Order, Product
from models.sessions import Invitation, RecordingSession
from security import audit
from security.masking import mask_phone
from workflow.errors import Conflict, NotFound
from workflow.invitations import IssuedInvitation
from workflow.principals import StaffPrincipal

ChannelChoice = Literal["wechat", "miniprogram", "bank_app", "sms", "qrcode", "link"]
MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
PHONE_PURPOSE = "outbound_message.sms_phone"

LABELS: dict[str, str] = {
    "wechat": "微信（公众号模板/订阅消息，自动选择）",
    "miniprogram": "小程序卡片",
    "bank_app": "银行App推送",
    "sms": "短信",
    "qrcode": "二维码（客户扫码）",
    "link": "复制链接",
}
# What the console offers when a delivery failed, in this order.
FALLBACKS: tuple[ChannelChoice, ...] = ("sms", "qrcode", "link")


@dataclass(frozen=True)
class Option:
    channel: ChannelChoice
    available: bool
    reason: str = ""

    def view(self) -> dict[str, Any]:
        return {"channel": self.channel, "label": LABELS[self.channel],
                "available": self.available, "reason": self.reason}


def own_session(principal: StaffPrincipal, session: RecordingSession) -> None:
    """Agents invite for their own sessions only (least privilege)."""
    if principal.agent_id is None or session.agent_id != principal.agent_id:
        raise NotFound("session_not_found", "找不到该录制会话")


async def _follower(channels: Channels, customer_id: int) -> WechatUser | None:
    return await WechatUser.filter(
        app_id=channels.config.app_id, customer_id=customer_id, subscribed=True,
    ).order_by("-id").first()


async def _bank_ref(customer_id: int) -> ChannelInvitation | None:
    """The newest bank-app invitation of this customer (any order): it names the bank client
    and the bank's own customer reference, which a push needs."""
    return await ChannelInvitation.filter(
        session__order__customer_id=customer_id, bank_customer_ref__isnull=False,
        bank_client__isnull=False,
    ).order_by("-id").first()


def _phone_on_record(channels: Channels, customer: Customer) -> str | None:
    if not customer.phone_enc:
        return None
    return channels.deps.cipher.decrypt(customer.phone_enc, "customer.phone")


async def options(channels: Channels, session: RecordingSession) -> dict[str, Any]:
    """Which channels can reach this session's customer now, and why not when they cannot."""
    order = await Order.get(id=session.order_id)
    customer = await Customer.get(id=order.customer_id)
    product = await Product.get(id=order.product_id)
    wx_on = channels.config.wechat.enabled
    follower = await _follower(channels, order.customer_id) if wx_on else None
    found: list[Option] = []
    if not wx_on:
        found.append(Option("wechat", False, "微信渠道未开通"))
    else:
        found.append(Option("wechat", True, "" if follower else
                            "客户尚未关注公众号：将生成公众号二维码，请客户用微信扫码"))
    found.append(Option("miniprogram", follower is not None, "" if follower else
                        ("微信渠道未开通" if not wx_on else
                         "客户尚未关注公众号或尚未通过微信办理过，无法发送小程序卡片")))
    reference = await _bank_ref(order.customer_id) if channels.config.bank.enabled else None
    client = (channels.config.bank_clients.get(reference.bank_client or "")
              if reference else None)
    if reference is None or client is None:
        reason = ("该保单来自银行渠道，但尚无客户的银行App客户号（客户需先从银行App进入过一次）"
                  if product.channel == Channel.BANK
                  else "仅适用于银行渠道且已知银行App客户号的客户")
        found.append(Option("bank_app", False, reason))
    elif not client.webhook_url:
        found.append(Option("bank_app", False, "银行未配置推送地址"))
    else:
        found.append(Option("bank_app", True))
    phone = _phone_on_record(channels, customer)
    if channels.sms is None:
        found.append(Option("sms", False, "短信渠道未开通"))
    else:
        found.append(Option("sms", True, "" if phone and MOBILE.match(phone) else
                            "投保信息中没有手机号，请填写客户手机号"))
    found.append(Option("qrcode", True))
    found.append(Option("link", True))
    return {"channels": [o.view() for o in found],
            "phone_masked": mask_phone(phone) if phone else None}


async def _limit(channels: Channels, principal: StaffPrincipal) -> None:
    limiter = channels.limits.agent_invitations
    if await limiter.hit(str(principal.user_id)) > limiter.limit:
        raise Conflict("too_many_invitations", "发送邀请过于频繁，请稍后再试")


async def send(
    channels: Channels, principal: StaffPrincipal, session: RecordingSession,
    channel: ChannelChoice, *, mode: channel_invitations.WeChatMode = "auto",
    phone: str | None = None,
) -> dict[str, Any]:
    """Sends (or, for a QR code or a link, prepares) the invitation through `channel`."""
    own_session(principal, session)
    if channel == "wechat":
        if not channels.config.wechat.enabled:
            raise Conflict("channel_disabled", "微信渠道未开通")
        # Rate limit, audit and the WeChat delivery are in send_via_wechat.
        view = await channel_invitations.send_via_wechat(channels, principal, session, mode)
        invitation = await ChannelInvitation.get(id=view["id"])
        return await console_view(channels, invitation)
    order = await Order.get(id=session.order_id)
    # Checked before anything is issued: a refused channel must not revoke the last link.
    target = await _check(channels, channel, order, phone)
    await _limit(channels, principal)
    kind = {"miniprogram": ChannelKind.MINIPROGRAM, "bank_app": ChannelKind.BANK_APP,
            "sms": ChannelKind.SMS}.get(channel, ChannelKind.LINK)
    delivery = {"miniprogram": "mp_card", "bank_app": "bank_push"}.get(channel, channel)
    bank_client = target.bank_client if isinstance(target, ChannelInvitation) else None
    invitation, issued, ref = await channel_invitations.issue(
        channels, principal, session.id, kind, delivery, bank_client=bank_client)
    details: dict[str, Any] = {"channel": channel, "channel_invitation_id": invitation.id}
    if channel == "sms":
        assert isinstance(target, str)
        details["phone"] = mask_phone(target)
        await _queue_sms(channels, session, invitation, issued, target)
    elif channel == "miniprogram":
        assert isinstance(target, WechatUser)
        details["openid"] = target.openid[:8] + "…"
        await _queue_mp_card(channels, session, invitation, ref, target)
    elif channel == "bank_app":
        assert isinstance(target, ChannelInvitation)
        await _queue_bank_push(channels, principal, session, order, invitation, ref, target)
    else:
        invitation.delivery_status = (DeliveryStatus.WAITING_SCAN if channel == "qrcode"
                                      else DeliveryStatus.PENDING)
        await invitation.save(update_fields=["delivery_status"])
    await audit.record_alone(principal.actor, "channel.invitation.sent", object_type="session",
                             object_id=str(session.id), details=details)
    return await console_view(channels, invitation)


async def _check(channels: Channels, channel: ChannelChoice, order: Order,
                 phone: str | None) -> str | WechatUser | ChannelInvitation | None:
    """The recipient of `channel`, or a 409 saying why this channel cannot reach them."""
    if channel == "sms":
        if channels.sms is None:
            raise Conflict("channel_disabled", "短信渠道未开通，请改用二维码或复制链接")
        if phone is None:
            phone = _phone_on_record(channels, await Customer.get(id=order.customer_id))
        if not phone or not MOBILE.match(phone):
            raise Conflict("phone_missing", "投保信息中没有有效的手机号，请填写客户手机号")
        return phone
    if channel == "miniprogram":
        follower = (await _follower(channels, order.customer_id)
                    if channels.config.wechat.enabled else None)
        if follower is None:
            raise Conflict("customer_not_following",
                           "该客户尚未关注公众号或尚未通过微信办理过，无法发送小程序卡片，请改用短信或二维码")
        return follower
    if channel == "bank_app":
        reference = (await _bank_ref(order.customer_id)
                     if channels.config.bank.enabled else None)
        client = (channels.config.bank_clients.get(reference.bank_client or "")
                  if reference else None)
        if reference is None or client is None or not client.webhook_url:
            raise Conflict("bank_customer_unknown",
                           "该客户没有可推送的银行App账户，请改用短信或二维码")
        return reference
    return None


async def _queue_sms(channels: Channels, session: RecordingSession,
                     invitation: ChannelInvitation, issued: IssuedInvitation, phone: str) -> None:
    """The template's parameters are the deadline and the invitation token only: operators
    refuse a link in a variable (Tencent and Aliyun alike), so the approved template writes the
    link's fixed start `<public URL>/h5/invite/` itself (docs/channels.md)."""
    sms = channels.config.sms
    until = invitation.expires_at.astimezone(CHINA).strftime("%m月%d日%H:%M")
    await outbox.enqueue(
        channels, OutboxKind.SMS, f"invitation:{invitation.id}", mask_phone(phone),
        {"purpose": "invitation", "channel_invitation_id": invitation.id,
         "phone_enc": channels.deps.cipher.encrypt(phone, PHONE_PURPOSE),
         "template_id": sms.invitation_template_id, "params": [until, issued.token],
         "text": channel_invitations.sms_text(channels, issued.url, invitation.expires_at),
         "audience": "customer_sms"},
        session_id=session.id,
    )


async def _queue_mp_card(channels: Channels, session: RecordingSession,
                         invitation: ChannelInvitation, ref: str, follower: WechatUser) -> None:
    wx = channels.config.wechat
    if follower.unionid:
        # The mini-program login proves the same unionid: only this person can open it.
        await channel_invitations.bind(channels, invitation,
                                       Person(follower.app_id, follower.openid, follower.unionid))
    card = {"title": wx.mp_card_title, "appid": channels.config.mp_app_id,
            "pagepath": f"{wx.mp_invitation_page}?ref={ref}",
            "thumb_media_id": wx.mp_card_thumb_media_id}
    await outbox.enqueue(
        channels, OutboxKind.MP_CARD, f"invitation:{invitation.id}", follower.openid,
        {"purpose": "invitation", "channel_invitation_id": invitation.id, "card": card,
         "audience": "customer", "app_id": channels.config.app_id, "via": "mp_card",
         "text": f"小程序卡片：{wx.mp_card_title}"},
        session_id=session.id,
    )


async def _queue_bank_push(
    channels: Channels, principal: StaffPrincipal, session: RecordingSession, order: Order,
    invitation: ChannelInvitation, ref: str, reference: ChannelInvitation,
) -> None:
    client_id = reference.bank_client or ""
    client = channels.config.bank_clients[client_id]
    customer_ref = reference.bank_customer_ref or ""
    invitation.bank_customer_ref = customer_ref
    invitation.bound_app_id = f"bank:{client_id}"
    invitation.bound_openid = customer_ref
    invitation.bound_at = channels.now()
    await invitation.save(update_fields=["bank_customer_ref", "bound_app_id", "bound_openid",
                                         "bound_at"])
    link = bank_links.deep_link(channels, client, ref, customer_ref, invitation.expires_at)
    product = await Product.get(id=order.product_id)
    body = {
        "type": "invitation", "application_no": order.application_no,
        "session_id": str(session.id), "invitation_id": invitation.id,
        "bank_customer_ref": customer_ref, "title": "保险远程双录邀请",
        "text": f"{principal.display_name}邀请您完成《{product.name}》的远程双录，请点击进入。",
        **link,
    }
    await outbox.enqueue(
        channels, OutboxKind.BANK_PUSH, f"invitation:{invitation.id}", client_id,
        {"purpose": "invitation", "channel_invitation_id": invitation.id, "body": body,
         "audience": "bank_app"},
        session_id=session.id,
    )


# -- what the console shows -------------------------------------------------------------------

STATUS_LABELS = {
    "pending": "发送中", "waiting_scan": "等待客户扫码", "sent": "已发送",
    "delivered": "已送达", "failed": "发送失败", "opened": "客户已打开",
    "ready": "链接已生成，请复制发送给客户",
    "revoked": "已作废（已重新发送）", "expired": "已过期，请重新发送邀请",
}


# Why a delivery failed, in words the agent can act on; the provider's code follows it.
REASONS_ZH: tuple[tuple[str, str], ...] = (
    ("SmsNotDelivered", "短信未送达客户手机（运营商回执）"),
    ("PhoneNumberInBlacklist", "该号码已退订或在短信黑名单中"),
    ("IncorrectPhoneNumber", "手机号码有误"),
    ("PhoneNumberDailyLimit", "该号码今日接收短信已达上限"),
    ("TemplateIncorrectOrUnapproved", "短信模板未审核通过"),
    ("SignatureIncorrectOrUnapproved", "短信签名未审核通过"),
    ("AuthFailure", "短信服务鉴权失败，请联系管理员"),
    ("wechat error 45015", "客户48小时内未与公众号互动，无法发送客服消息"),
    ("wechat error 43004", "客户未关注公众号"),
    ("wechat error 43101", "客户未订阅或已拒收该消息"),
    ("user block", "客户已拒收公众号消息"),
    ("no accepted subscription", "客户未订阅邀请通知"),
    ("bank answered HTTP", "银行服务器未确认收到"),
    ("has no webhook_url", "银行未配置推送地址"),
    ("transport", "网络异常"),
    ("Transport", "网络异常"),
)


def reason_zh(detail: str) -> str:
    """`detail` with a Chinese explanation in front when the code is a known one."""
    code = detail.split(": ", 1)[0]
    for needle, words in REASONS_ZH:
        if needle in detail:
            return f"{words}；{code}"
    return code


def _status(invitation: ChannelInvitation, opened: bool, rows: list[OutboundMessage],
            now: datetime) -> dict[str, str]:
    code = invitation.delivery_status.value
    if opened:
        code = "opened"
    elif invitation.revoked_at is not None:
        code = "revoked"
    elif invitation.expires_at <= now:
        code = "expired"
    elif invitation.delivery == "link" and code == "pending":
        code = "ready"
    label = STATUS_LABELS[code]
    if invitation.delivery == "qrcode" and invitation.channel == ChannelKind.WECHAT \
            and code == "delivered":
        label = "客户已扫码"
    detail = reason_zh(invitation.delivery_detail) if code == "failed" else ""
    if code == "pending" and rows and rows[-1].attempts and rows[-1].last_error:
        detail = (f"第 {rows[-1].attempts} 次发送未成功，稍后重试："
                  f"{reason_zh(rows[-1].last_error[:80])}")
    return {"code": code, "label": label + (f"（{detail}）" if detail else ""),
            "detail": detail}


async def console_view(channels: Channels, invitation: ChannelInvitation) -> dict[str, Any]:
    """The agent's view of one invitation (ChannelInvitationView) plus what the console
    needs: a status to show, the recipient (masked), the QR image, the deliveries and the
    fallbacks after a failure."""
    view = await channel_invitations.agent_view(channels, invitation)
    workflow = await Invitation.get(id=invitation.invitation_id)
    opened = invitation.opened_at is not None or workflow.used_at is not None
    rows = [r for r in await OutboundMessage.filter(session_id=invitation.session_id)
            .order_by("id") if r.payload.get("channel_invitation_id") == invitation.id]
    view["opened_at"] = view["opened_at"] or (workflow.used_at.isoformat()
                                              if workflow.used_at else None)
    view["status"] = _status(invitation, opened, rows, channels.now())
    view["recipient"] = next((r.target for r in rows if r.kind == OutboxKind.SMS), None)
    view["deliveries"] = [{**outbox.view(r), "report": r.delivery_report} for r in rows]
    view["choice"] = _choice(invitation)
    view["link"] = view["fallback"]["link"]
    view["qr_image"] = None
    if invitation.delivery == "qrcode" and invitation.channel == ChannelKind.LINK:
        view["qr_image"] = qr.svg_data_uri(view["fallback"]["link"])
    failed = invitation.delivery_status == DeliveryStatus.FAILED and not opened
    view["fallbacks"] = ([{"channel": c, "label": LABELS[c]} for c in FALLBACKS
                          if c != view["choice"]] if failed else [])
    return view


def _choice(invitation: ChannelInvitation) -> str:
    if invitation.channel == ChannelKind.WECHAT:
        return "wechat"
    if invitation.channel == ChannelKind.MINIPROGRAM:
        return "miniprogram"
    if invitation.channel == ChannelKind.BANK_APP:
        return "bank_app"
    if invitation.channel == ChannelKind.SMS:
        return "sms"
    return "qrcode" if invitation.delivery == "qrcode" else "link"
