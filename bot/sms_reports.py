"""Delivery reports of invitation texts: the channel worker pulls the operators' reports
(`SmsSender.pull_reports`) while a sent text is still waiting for one, at most once per
`report_pull_seconds` across all workers, and records them on the outbox row and the
invitation (已送达, or 发送失败 with the operator's reason). Explicit dependencies, no Channels:
the worker passes what it needs."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from redis.asyncio import Redis

from bot.sms import AwaitedText, SmsError, SmsReport, SmsSender
from models.channels import (
    ChannelInvitation,
    DeliveryStatus,
    OutboundMessage,
    OutboxKind,
    OutboxStatus,
)
from security.crypto import FieldCipher

log = logging.getLogger(__name__)
CONTEXT_PREFIX = "outbox:"
WAIT_HOURS = 72  # operators report within minutes; a report older than this is not awaited


def context_of(row_id: int) -> str:
    return f"{CONTEXT_PREFIX}{row_id}"


async def sweep(sms: SmsSender | None, redis: Redis, now: datetime,
                pull_seconds: float, cipher: FieldCipher, limit: int = 100) -> int:
    """Pulls and records reports when a sent text awaits one; returns how many were new. The
    texts awaited are read from the outbox (oldest first), never from a process's memory."""
    if sms is None:
        return 0
    rows = await OutboundMessage.filter(
        kind=OutboxKind.SMS, status=OutboxStatus.SENT, delivery_report="",
        sent_at__gte=now - timedelta(hours=WAIT_HOURS)).order_by("sent_at").limit(limit)
    if not rows or not await redis.set("sms:reports:pull", 1, nx=True,
                                       px=max(int(pull_seconds * 1000), 1)):
        return 0
    awaited = [AwaitedText(context_of(row.id),
                           cipher.decrypt(row.payload["phone_enc"], "outbound_message.sms_phone"),
                           str(row.result.get("message_id", "")), row.sent_at)
               for row in rows if row.sent_at is not None and "phone_enc" in row.payload]
    try:
        reports = await sms.pull_reports(awaited, limit)
    except SmsError as exc:
        log.warning("sms delivery reports not pulled: %s", exc)
        return 0
    recorded = 0
    for report in reports:
        recorded += await record(report)
    return recorded


async def record(report: SmsReport) -> int:
    """One report onto its outbox row and invitation; 0 when it is not one of ours."""
    raw = report.context.removeprefix(CONTEXT_PREFIX)
    if not report.context.startswith(CONTEXT_PREFIX) or not raw.isdigit():
        return 0
    row = await OutboundMessage.get_or_none(id=int(raw), kind=OutboxKind.SMS)
    if row is None or row.delivery_report:
        return 0
    row.delivery_report = ("DELIVRD" if report.delivered
                           else f"FAIL {report.description}")[:64]
    await row.save(update_fields=["delivery_report"])
    invitation_id = row.payload.get("channel_invitation_id")
    if invitation_id:
        waiting = ChannelInvitation.filter(id=invitation_id, delivery_status=DeliveryStatus.SENT)
        if report.delivered:
            await waiting.update(delivery_status=DeliveryStatus.DELIVERED)
        else:
            await waiting.update(delivery_status=DeliveryStatus.FAILED,
                                 delivery_detail=f"SmsNotDelivered: {report.description}"[:200])
    return 1
