"""Following the sessions the channels invited: each new session event becomes, at most once,
a status webhook for the bank app, a notification to the agent's WeChat (customer consented,
customer waiting for the call, ...) and, on completion, a subscribe message to a mini-program
customer who accepted one.

The events are read from the database by sequence number per session (not from pub/sub, which
may drop messages): a cursor per session records the last one acted on, and every delivery has
a unique outbox key, so two workers reading the same event queue it once.
"""

from __future__ import annotations

import logging

from bot import bank, dialogue, outbox
from bot.runtime import Channels
from models import lean
from models.channels import (
    ChannelFeed,
    ChannelInvitation,
    OutboxKind,
    SubscriptionGrant,
)
from models.sales import Order
from models.sessions import RecordingSession, SessionEvent
from workflow.event_types import EventType
from workflow.states import STATE_LABELS_ZH, TERMINAL

log = logging.getLogger(__name__)
BATCH = 500


# The active feeds whose session has events they have not acted on, oldest feed first: a pass
# takes at most BATCH of them, and those it handled drop out, so the next pass reaches the rest
# (taking the first BATCH active feeds whether or not they had news left every later one to
# wait for nothing).
_DUE = ("SELECT f.* FROM channel_feed f JOIN recording_session s ON s.id = f.session_id "
        "WHERE f.active = ? AND s.event_seq > f.last_seq ORDER BY f.id LIMIT ?")


async def process(channels: Channels) -> int:
    # The sessions whose events wake the worker (bot/runtime.follow_feeds), issue 14: every
    # active feed's, not only those with news now.
    channels.feed_sessions = {str(session_id) for session_id in await ChannelFeed.filter(
        active=True).values_list("session_id", flat=True)}
    if not channels.feed_sessions:
        return 0
    feeds = await lean.fetch(ChannelFeed, _DUE, [lean.param(ChannelFeed, "active", True),
                                                 BATCH])
    handled = 0
    for feed in feeds:
        events = await SessionEvent.filter(
            session_id=feed.session_id, seq__gt=feed.last_seq).order_by("seq")
        if not events:
            continue
        session = await RecordingSession.get(id=feed.session_id)
        order = await Order.get(id=session.order_id)
        for event in events:
            await _on_event(channels, feed, session, order, event)
            handled += 1
        feed.last_seq = events[-1].seq
        feed.active = session.state not in TERMINAL
        if not feed.active:
            channels.feed_sessions.discard(str(feed.session_id))
        await feed.save(update_fields=["last_seq", "active", "updated_at"])
    return handled


async def _on_event(channels: Channels, feed: ChannelFeed, session: RecordingSession,
                    order: Order, event: SessionEvent) -> None:
    if feed.bank_client and event.to_state:
        await outbox.enqueue(
            channels, OutboxKind.WEBHOOK, f"webhook:{feed.bank_client}:{session.id}:{event.seq}",
            feed.bank_client,
            {"purpose": "status_webhook",
             "body": bank.webhook_body(order.application_no, session, event)},
            session_id=session.id,
        )
    notice = dialogue.DIALOGUE.data.agent_notifications.get(event.type)
    if notice:
        await dialogue.notify_agent(
            channels, session.id, dialogue.DIALOGUE.texts["agent_notice_first"],
            f"投保单 {order.application_no}：{notice}", f"agent-notice:{session.id}:{event.seq}")
    if event.type == EventType.COMPLETED:
        await _mp_status(channels, session, event)


async def _mp_status(channels: Channels, session: RecordingSession, event: SessionEvent) -> None:
    wx = channels.config.wechat
    mp = channels.config.mp_app_id
    invitation = await ChannelInvitation.filter(
        session_id=session.id, bound_app_id=mp).order_by("-id").first()
    if invitation is None or invitation.bound_openid is None:
        return
    grant = await SubscriptionGrant.get_or_none(
        app_id=mp, openid=invitation.bound_openid, template_id=wx.mp_status_template_id)
    if grant is None or grant.remaining <= 0:
        return
    await outbox.enqueue(
        channels, OutboxKind.MP_SUBSCRIBE, f"mp-status:{session.id}:{event.seq}",
        invitation.bound_openid,
        {"purpose": "status", "template_id": wx.mp_status_template_id,
         "page": wx.mp_invitation_page, "audience": "customer", "app_id": mp,
         "via": "subscribe", "text": f"双录状态：{STATE_LABELS_ZH[session.state]}",
         "data": {"thing1": {"value": "保险远程双录"},
                  "phrase2": {"value": STATE_LABELS_ZH[session.state][:5]},
                  "time3": {"value": event.at.strftime("%Y-%m-%d %H:%M")}}},
        session_id=session.id,
    )
