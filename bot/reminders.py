"""Reminders before an invitation expires: a customer who has not opened their WeChat or
mini-program invitation is reminded once, some time before it lapses (default two hours),
unless they unsubscribed from reminders in the chat ("退订")."""

from __future__ import annotations

from datetime import timedelta

from bot import dialogue, outbox
from bot import invitations as channel_invitations
from bot.runtime import Channels
from models.channels import ChannelInvitation, ChannelKind, OutboxKind, WechatUser
from models.sessions import Invitation


async def sweep(channels: Channels) -> int:
    now = channels.now()
    wx = channels.config.wechat
    due = await ChannelInvitation.filter(
        revoked_at__isnull=True, reminder_sent_at__isnull=True, opened_at__isnull=True,
        bound_openid__isnull=False, expires_at__gt=now,
        expires_at__lte=now + timedelta(seconds=wx.reminder_lead_seconds),
        channel__in=[ChannelKind.WECHAT, ChannelKind.MINIPROGRAM],
    ).order_by("expires_at").limit(200)
    sent = 0
    for invitation in due:
        # Claim it first: with several workers only one sends the reminder.
        claimed = await ChannelInvitation.filter(
            id=invitation.id, reminder_sent_at__isnull=True).update(reminder_sent_at=now)
        if not claimed:
            continue
        workflow_invitation = await Invitation.get(id=invitation.invitation_id)
        if workflow_invitation.used_at is not None or workflow_invitation.revoked_at is not None:
            continue
        user = await WechatUser.get_or_none(app_id=invitation.bound_app_id,
                                            openid=invitation.bound_openid)
        if user is not None and user.reminders_opt_out:
            continue
        assert invitation.bound_openid is not None
        expires = invitation.expires_at.astimezone(channel_invitations.CHINA)
        if invitation.bound_app_id == channels.config.app_id:
            link = channel_invitations.wechat_link(
                channels, channel_invitations.ref_of(channels, invitation))
            text = dialogue.DIALOGUE.texts["reminder_text"].format(
                expires=f"{expires:%m月%d日%H:%M}", link=link)
            await outbox.enqueue(
                channels, OutboxKind.WECHAT_TEMPLATE, f"reminder:{invitation.id}",
                invitation.bound_openid,
                {"purpose": "reminder", "template_id": wx.reminder_template_id, "url": link,
                 "audience": "customer", "app_id": channels.config.app_id, "via": "template",
                 "text": text,
                 "data": {"first": {"value": dialogue.DIALOGUE.texts["reminder_first"]},
                          "keyword1": {"value": "保险远程双录"},
                          "keyword2": {"value": f"{expires:%Y-%m-%d %H:%M}"},
                          "remark": {"value": "回复“退订”不再接收提醒。"}}},
                session_id=invitation.session_id,
            )
        elif invitation.bound_app_id == channels.config.mp_app_id:
            await outbox.enqueue(
                channels, OutboxKind.MP_SUBSCRIBE, f"reminder:{invitation.id}",
                invitation.bound_openid,
                {"purpose": "reminder", "template_id": wx.mp_reminder_template_id,
                 "page": wx.mp_invitation_page, "audience": "customer",
                 "app_id": channels.config.mp_app_id, "via": "subscribe",
                 "text": "双录邀请即将过期提醒",
                 "data": {"thing1": {"value": "保险远程双录邀请即将过期"},
                          "time2": {"value": f"{expires:%Y-%m-%d %H:%M}"}}},
                session_id=invitation.session_id,
            )
        else:
            continue
        sent += 1
    return sent
