"""Invitations delivered through a channel (WeChat template / subscribe message, QR code with a
scene value, mini-program, bank app) and bound to the person they were meant for (R-20).

The workflow issues the single-use token as usual; the channel keeps it encrypted and gives the
customer only a `ref`. A ref is redeemed for a customer token after the opener's identity is
checked: the WeChat openid from web authorisation, the mini-program openid/unionid from
code2session, or the bank's customer reference from a signed deep link. The first opener of an
unbound ref binds it; anyone else is refused, so a forwarded link is useless. The bound person
may come back through the same link while the session is still running (WeChat closes its
in-app browser easily); the workflow still sees exactly one open.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from typing import Any, Literal
from uuid import UUID

from bot import outbox
from bot.runtime import Channels
from bot.wechat_api import WeChatApiError
from models.channels import (
    ChannelFeed,
    ChannelInvitation,
    ChannelKind,
    DeliveryStatus,
    OutboxKind,
    SubscriptionGrant,
    WechatUser,
)
from models.sales import Order
from models.sessions import Invitation, RecordingSession, SessionState
from security import audit
from security.audit import Actor, RefusalLog
from security.tokens import TokenStore, token_digest
from workflow import invitations as workflow_invitations
from workflow.errors import Conflict, Forbidden, Gone, NotFound
from workflow.invitations import IssuedInvitation
from workflow.principals import StaffPrincipal
from workflow.states import STATE_LABELS_ZH, TERMINAL

CHINA = timezone(timedelta(hours=8))
FINISHED = TERMINAL | {SessionState.COMPLETED, SessionState.SEALED, SessionState.QA_PENDING,
                       SessionState.EVIDENCE_INCOMPLETE}
WeChatMode = Literal["auto", "template", "subscribe", "qrcode"]


@dataclass(frozen=True)
class Person:
    """Who opens a link: an app (official account, mini-program, `bank:<client>`) and the
    user's id in it, with the WeChat unionid when known (the same person across apps)."""

    app_id: str
    openid: str
    unionid: str | None = None


def ref_digest(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest()


def same_person(invitation: ChannelInvitation, person: Person) -> bool:
    if invitation.bound_app_id == person.app_id:
        return invitation.bound_openid == person.openid
    return bool(invitation.bound_unionid and person.unionid
                and invitation.bound_unionid == person.unionid)


def h5_wechat_url(channels: Channels, ref: str) -> str:
    return f"{channels.config.public_url}/h5/wx/{ref}"


def wechat_link(channels: Channels, ref: str) -> str:
    """The link in the WeChat message: web authorisation first, so that the page gets a code
    that proves the opener's openid, then the H5 page with the ref."""
    return channels.wechat.authorize_url(h5_wechat_url(channels, ref), state="shuanglu")


def sms_text(channels: Channels, url: str, expires_at: Any) -> str:
    until = expires_at.astimezone(CHINA).strftime("%m月%d日%H:%M")
    return (f"{channels.config.wechat.sms_signature}您好，您的保险远程双录邀请已生成，请于{until}前"
            f"打开链接完成：{url} 链接仅限本人使用，请勿转发。")


def ref_of(channels: Channels, invitation: ChannelInvitation) -> str:
    return channels.deps.cipher.decrypt(invitation.ref_enc, "channel_invitation.ref")


def token_of(channels: Channels, invitation: ChannelInvitation) -> str:
    return channels.deps.cipher.decrypt(invitation.token_enc, "channel_invitation.token")


async def issue(
    channels: Channels, principal: StaffPrincipal, session_id: UUID, channel: ChannelKind,
    delivery: str, *, bank_client: str | None = None,
) -> tuple[ChannelInvitation, IssuedInvitation, str]:
    """Issues a workflow invitation (which revokes older links) and its channel ref."""
    issued = await workflow_invitations.issue(channels.deps, principal, session_id,
                                              channel.value)
    workflow_invitation = await Invitation.get(token_hash=token_digest(issued.token))
    now = channels.now()
    await ChannelInvitation.filter(session_id=session_id, revoked_at__isnull=True).update(
        revoked_at=now)
    ref = secrets.token_urlsafe(24)
    cipher = channels.deps.cipher
    invitation = await ChannelInvitation.create(
        ref_hash=ref_digest(ref), ref_enc=cipher.encrypt(ref, "channel_invitation.ref"),
        token_enc=cipher.encrypt(issued.token, "channel_invitation.token"),
        session_id=session_id, invitation_id=workflow_invitation.id, channel=channel,
        delivery=delivery, expires_at=issued.expires_at, created_by_id=principal.user_id,
        bank_client=bank_client,
    )
    await follow(session_id, bank_client)
    # The "invited" event was published before the feed existed: look at it now.
    await channels.poke()
    return invitation, issued, ref


async def follow(session_id: UUID | str, bank_client: str | None = None) -> None:
    """The channel worker follows this session's events (notifications, webhooks)."""
    feed = await ChannelFeed.get_or_none(session_id=session_id)
    if feed is None:
        session = await RecordingSession.get(id=session_id)
        await ChannelFeed.create(session_id=session_id, last_seq=session.event_seq - 1,
                                 bank_client=bank_client)
    elif (bank_client and feed.bank_client != bank_client) or not feed.active:
        feed.bank_client = bank_client or feed.bank_client
        feed.active = True
        await feed.save(update_fields=["bank_client", "active", "updated_at"])


async def bind(channels: Channels, invitation: ChannelInvitation, person: Person) -> bool:
    """Binds an unbound invitation to `person`; true when it is (now or already) theirs."""
    if invitation.bound_openid is None:
        updated = await ChannelInvitation.filter(
            id=invitation.id, bound_openid__isnull=True
        ).update(bound_app_id=person.app_id, bound_openid=person.openid,
                 bound_unionid=person.unionid, bound_at=channels.now())
        await invitation.refresh_from_db()
        if updated:
            return True
    return same_person(invitation, person)


async def find(ref: str) -> ChannelInvitation:
    invitation = (await ChannelInvitation.get_or_none(ref_hash=ref_digest(ref))
                  if 16 <= len(ref) <= 64 else None)
    if invitation is None:
        raise NotFound("invitation_not_found", "邀请链接无效，请向销售人员索取新的链接")
    return invitation


@dataclass(frozen=True)
class Redeemed:
    session: RecordingSession
    customer_token: str
    reentry: bool


async def redeem(
    channels: Channels, ref: str, person: Person, ip: str, user_agent: str,
    tokens: TokenStore,
) -> Redeemed:
    """Opens a channel invitation for `person`, or lets the bound person back in (R-20)."""
    invitation = await find(ref)
    actor = Actor("customer", str(invitation.session_id), "customer", ip)
    if invitation.revoked_at is not None:
        raise Gone("invitation_revoked", "该邀请链接已作废，请使用最新收到的链接")
    if not await bind(channels, invitation, person):
        await audit.record_alone(
            actor, "channel.invitation.refused", object_type="channel_invitation",
            object_id=str(invitation.id), outcome="denied",
            details={"reason": "bound_to_other_user", "channel": invitation.channel.value,
                     "app_id": person.app_id},
        )
        raise Forbidden("invitation_bound_to_other_user",
                        "该邀请链接仅限受邀客户本人使用。如需办理，请联系您的销售人员。")
    workflow_invitation = await Invitation.get(id=invitation.invitation_id)
    reentry = False
    if workflow_invitation.used_at is None:
        session = await workflow_invitations.open_invitation(
            channels.deps, token_of(channels, invitation), ip, user_agent,
            RefusalLog(channels.redis))
    else:
        session = await RecordingSession.get(id=invitation.session_id)
        if not channels.config.wechat.allow_reentry or invitation.opened_at is None:
            raise Gone("invitation_used", "该邀请链接已被使用，不能重复打开")
        if session.state in FINISHED:
            raise Gone("session_finished",
                       f"本次双录已{STATE_LABELS_ZH[session.state]}，无需再次进入")
        reentry = True
        await audit.record_alone(
            actor, "channel.invitation.reentered", object_type="session",
            object_id=str(session.id), details={"channel": invitation.channel.value},
        )
        # On the timeline as well: the agent's console sees the customer come back, in the
        # call too (the page then rejoins it, 断点续录 when it was interrupted).
        await workflow_invitations.record_reentry(channels.deps, session.id,
                                                  invitation.channel.value, ip)
    now = channels.now()
    invitation.opened_at = invitation.opened_at or now
    invitation.open_count += 1
    if invitation.delivery_status in (DeliveryStatus.PENDING, DeliveryStatus.SENT,
                                      DeliveryStatus.WAITING_SCAN):
        invitation.delivery_status = DeliveryStatus.DELIVERED
    await invitation.save(update_fields=["opened_at", "open_count", "delivery_status"])
    if not person.app_id.startswith("bank:"):
        order = await Order.get(id=session.order_id)
        await remember_customer(person, order.customer_id, now)
    # The token names its invitation: re-issuing revokes it with the link.
    token = await tokens.issue(workflow_invitations.customer_claims(
        session.id, workflow_invitation.id, channel=invitation.channel.value,
        app_id=person.app_id, openid=person.openid))
    return Redeemed(session, token, reentry)


async def remember_customer(person: Person, customer_id: int, now: Any) -> WechatUser:
    """After a verified open, this WeChat user is known to be this customer: the next
    invitation can go to them directly as a template message."""
    user, _ = await WechatUser.get_or_create(app_id=person.app_id, openid=person.openid)
    user.customer_id = customer_id
    if person.unionid:
        user.unionid = person.unionid
    await user.save(update_fields=["customer_id", "unionid"])
    return user


async def latest_for(app_id: str, openid: str) -> ChannelInvitation | None:
    """The newest unrevoked invitation bound to this user."""
    return await ChannelInvitation.filter(
        bound_app_id=app_id, bound_openid=openid, revoked_at__isnull=True
    ).order_by("-id").first()


def invitation_template(channels: Channels, session: RecordingSession, agent_name: str,
                        expires_at: Any, first: str) -> dict[str, Any]:
    until = expires_at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")
    return {
        "first": {"value": first},
        "keyword1": {"value": "保险远程双录"},
        "keyword2": {"value": agent_name},
        "keyword3": {"value": until},
        "remark": {"value": "点击进入，按页面提示完成同意、身份核验和视频双录。链接仅限本人使用。"},
    }


async def send_via_wechat(
    channels: Channels, principal: StaffPrincipal, session: RecordingSession, mode: WeChatMode,
) -> dict[str, Any]:
    """The agent's invitation through the official account, with the fallback texts."""
    if principal.agent_id is None or session.agent_id != principal.agent_id:
        raise NotFound("session_not_found", "找不到该录制会话")
    if await channels.limits.agent_invitations.hit(str(principal.user_id)) > \
            channels.limits.agent_invitations.limit:
        raise Conflict("too_many_invitations", "发送邀请过于频繁，请稍后再试")
    order = await Order.get(id=session.order_id)
    app_id = channels.config.app_id
    follower = await WechatUser.filter(
        app_id=app_id, customer_id=order.customer_id, subscribed=True
    ).order_by("-id").first()
    if mode == "auto":
        mode = "template" if follower else "qrcode"
    wx = channels.config.wechat
    if mode in ("template", "subscribe") and follower is None:
        raise Conflict("customer_not_following",
                       "该客户尚未关注公众号或尚未通过微信办理过，请改用二维码邀请")
    if mode == "subscribe":
        assert follower is not None
        grant = await SubscriptionGrant.get_or_none(
            app_id=app_id, openid=follower.openid, template_id=wx.subscribe_template_id)
        if grant is None or grant.remaining <= 0:
            raise Conflict("no_subscription", "该客户未订阅邀请通知，请改用模板消息或二维码")

    invitation, issued, ref = await issue(channels, principal, session.id, ChannelKind.WECHAT,
                                          mode)
    link = wechat_link(channels, ref)
    agent_name = principal.display_name
    if mode in ("template", "subscribe"):
        assert follower is not None
        await bind(channels, invitation, Person(app_id, follower.openid, follower.unionid))
        data = invitation_template(channels, session, agent_name, issued.expires_at,
                                   "您好，您的保险远程双录邀请已送达。")
        kind = OutboxKind.WECHAT_TEMPLATE if mode == "template" else OutboxKind.WECHAT_SUBSCRIBE
        template_id = (wx.invitation_template_id if mode == "template"
                       else wx.subscribe_template_id)
        await outbox.enqueue(
            channels, kind, f"invitation:{invitation.id}", follower.openid,
            {"purpose": "invitation", "channel_invitation_id": invitation.id,
             "template_id": template_id, "data": data, "url": link, "page": link,
             "audience": "customer", "app_id": app_id, "via": mode,
             "text": f"远程双录邀请（{agent_name}）：{link}"},
            session_id=session.id,
        )
    else:
        scene = "inv_" + secrets.token_hex(12)
        seconds = min(wx.qrcode_max_seconds, max(int(
            (issued.expires_at - channels.now()).total_seconds()), 60))
        invitation.qr_scene = scene
        try:
            qr = await channels.wechat.create_qrcode(scene, seconds)
            invitation.qr_url = f"{wx.qrcode_show_url}?ticket={qr['ticket']}"[:500]
            invitation.delivery_status = DeliveryStatus.WAITING_SCAN
        except WeChatApiError as exc:
            invitation.delivery_status = DeliveryStatus.FAILED
            invitation.delivery_detail = str(exc)[:200]
        await invitation.save(update_fields=["qr_scene", "qr_url", "delivery_status",
                                             "delivery_detail"])
    await audit.record_alone(
        principal.actor, "channel.invitation.sent", object_type="session",
        object_id=str(session.id),
        details={"channel": "wechat", "mode": mode, "channel_invitation_id": invitation.id},
    )
    return await agent_view(channels, invitation, issued.url, link)


async def agent_view(
    channels: Channels, invitation: ChannelInvitation, plain_url: str | None = None,
    link: str | None = None,
) -> dict[str, Any]:
    """What the agent sees about a delivery, with the fallback texts to copy (link, SMS)."""
    if plain_url is None:
        plain_url = (f"{channels.config.public_url}/h5/invite/"
                     f"{token_of(channels, invitation)}")
    if link is None:
        link = wechat_link(channels, ref_of(channels, invitation))
    expired = invitation.expires_at <= channels.now()
    return {
        "id": invitation.id, "channel": invitation.channel.value,
        "mode": invitation.delivery, "delivery_status": invitation.delivery_status.value,
        "delivery_detail": invitation.delivery_detail,
        "expires_at": invitation.expires_at.astimezone(UTC).isoformat(),
        "expired": expired, "revoked": invitation.revoked_at is not None,
        "bound": invitation.bound_openid is not None,
        "opened_at": invitation.opened_at.isoformat() if invitation.opened_at else None,
        "open_count": invitation.open_count,
        "reminder_sent_at": (invitation.reminder_sent_at.isoformat()
                             if invitation.reminder_sent_at else None),
        "qrcode": ({"url": invitation.qr_url, "scene": invitation.qr_scene}
                   if invitation.qr_scene else None),
        "wechat_link": link,
        "fallback": {"link": plain_url, "sms_text": sms_text(channels, plain_url,
                                                             invitation.expires_at)},
    }


async def claim_by_scene(channels: Channels, scene: str, person: Person) -> str:
    """A QR code scan (subscribe with qrscene_ / SCAN): bind and answer with the link."""
    invitation = await ChannelInvitation.get_or_none(qr_scene=scene)
    texts = channels.texts
    if invitation is None or invitation.revoked_at is not None:
        return texts["scan_revoked"]
    if invitation.expires_at <= channels.now():
        return texts["scan_expired"]
    if not await bind(channels, invitation, person):
        await audit.record_alone(
            Actor("customer", str(invitation.session_id), "customer", ""),
            "channel.invitation.refused", object_type="channel_invitation",
            object_id=str(invitation.id), outcome="denied",
            details={"reason": "qrcode_scanned_by_other_user"},
        )
        return texts["scan_other_user"]
    if invitation.delivery_status == DeliveryStatus.WAITING_SCAN:
        invitation.delivery_status = DeliveryStatus.DELIVERED
        invitation.delivery_detail = "scanned"
        await invitation.save(update_fields=["delivery_status", "delivery_detail"])
    link = wechat_link(channels, ref_of(channels, invitation))
    return texts["scan_link"].format(link=link)
