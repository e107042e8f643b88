"""The outbox: every WeChat message and bank webhook the channels send is first written to the
database, then delivered by the channel worker, retried with backoff until WeChat or the bank
acknowledges it, or given up on (and audited) when the error is final or too old.

This is the "job" behind the 5-second rule: the message endpoint never calls WeChat itself, it
answers at once and leaves the sending here. Rows are claimed by `infra.claims.claim_due` (SKIP
LOCKED on PostgreSQL, a lease: `next_attempt_at` moves into the future while a worker sends), so
several worker processes share the queue; a worker that dies mid-send leaves the row to be
retried after the lease.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
from tortoise.exceptions import IntegrityError

from bot.runtime import Channels
from bot.sms import SmsError, SmsMessage
from bot.sms_reports import context_of
from bot.wechat_api import WeChatApiError
from infra.claims import claim_due
from models.channels import (
    ChannelInvitation,
    DeliveryStatus,
    OutboundMessage,
    OutboxKind,
    OutboxStatus,
    SubscriptionGrant,
)
from security import audit
from security.audit import Actor
from security.partner_signing import signed_headers
from workflow import conversations

log = logging.getLogger(__name__)


class Retry(Exception):
    """Worth trying again later (network, WeChat busy, the bank did not acknowledge)."""


class Permanent(Exception):
    """Trying again cannot help (the user blocked us, the 48-hour window is closed, ...)."""


async def enqueue(
    channels: Channels, kind: OutboxKind, dedup_key: str, target: str, payload: dict[str, Any],
    *, session_id: UUID | str | None = None, delay_seconds: float = 0.0,
) -> OutboundMessage:
    """Queues one delivery; the same `dedup_key` is queued once only (idempotent)."""
    existing = await OutboundMessage.get_or_none(dedup_key=dedup_key)
    if existing is not None:
        return existing
    now = channels.now()
    try:
        message = await OutboundMessage.create(
            kind=kind, dedup_key=dedup_key[:200], target=target[:200], payload=payload,
            session_id=session_id, next_attempt_at=now + timedelta(seconds=delay_seconds),
            created_at=now,
        )
    except IntegrityError:
        # Another worker queued the same thing between our check and our insert.
        return await OutboundMessage.get(dedup_key=dedup_key)
    await channels.poke()
    return message


async def _claim(channels: Channels) -> list[OutboundMessage]:
    now = channels.now()
    settings = channels.config.worker
    lease = timedelta(seconds=settings.outbox_lease_seconds)

    def mark(row: OutboundMessage) -> list[str]:
        row.status = OutboxStatus.SENDING
        row.attempts += 1
        row.next_attempt_at = now + lease
        return ["status", "attempts", "next_attempt_at"]

    due = OutboundMessage.filter(status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING],
                                 next_attempt_at__lte=now)
    return await claim_due(due, ("next_attempt_at", "id"), settings.outbox_batch, mark)


async def deliver_due(channels: Channels) -> int:
    """Claims and delivers one batch of due messages; returns how many were claimed."""
    rows = await _claim(channels)
    # In id order, so that an earlier webhook of a session is settled before a later one.
    for row in sorted(rows, key=lambda r: r.id):
        await _deliver(channels, row)
    return len(rows)


async def deliver_all(channels: Channels) -> int:
    """Delivers batch after batch until a batch is not full; returns how many were claimed."""
    delivered = 0
    while True:
        batch = await deliver_due(channels)
        delivered += batch
        if batch < channels.config.worker.outbox_batch:
            return delivered


def _backoff(channels: Channels, row: OutboundMessage) -> float:
    bank = channels.config.bank
    if row.kind == OutboxKind.WEBHOOK:
        base, cap = bank.webhook_backoff_base_seconds, bank.webhook_backoff_max_seconds
    else:
        base, cap = 2.0, 300.0
    delay = min(base * 2 ** max(row.attempts - 1, 0), cap)
    return delay * random.uniform(0.9, 1.1)


def _gives_up(channels: Channels, row: OutboundMessage) -> bool:
    if row.kind == OutboxKind.WEBHOOK:
        age = (channels.now() - row.created_at).total_seconds()
        return age >= channels.config.bank.webhook_give_up_after_seconds
    return row.attempts >= channels.config.worker.wechat_send_max_attempts


async def _earlier_pending(row: OutboundMessage) -> OutboundMessage | None:
    """Webhooks of one session go out in order: a later one waits behind an earlier one that
    is still being retried, so the bank never sees "consented" before "opened"."""
    if row.kind != OutboxKind.WEBHOOK or row.session_id is None:
        return None
    return await OutboundMessage.filter(
        kind=OutboxKind.WEBHOOK, target=row.target, session_id=row.session_id, id__lt=row.id,
        status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING],
    ).order_by("id").first()


async def _deliver(channels: Channels, row: OutboundMessage) -> None:
    handler = HANDLERS[row.kind]
    earlier = await _earlier_pending(row)
    if earlier is not None:
        row.status = OutboxStatus.PENDING
        row.attempts -= 1  # waiting in line is not an attempt
        row.next_attempt_at = max(earlier.next_attempt_at, channels.now())
        await row.save(update_fields=["status", "attempts", "next_attempt_at"])
        return
    try:
        result = await handler(channels, row)
    except Permanent as exc:
        await _finish(channels, row, OutboxStatus.FAILED, str(exc))
    except Retry as exc:
        await _retry_or_give_up(channels, row, str(exc))
    except Exception as exc:
        log.exception("outbox %s (%s) failed unexpectedly", row.id, row.kind)
        await _retry_or_give_up(channels, row, f"unexpected: {type(exc).__name__}")
    else:
        row.status = OutboxStatus.SENT
        row.sent_at = channels.now()
        row.result = result
        row.last_error = ""
        row.wechat_msgid = result.get("msgid") or None
        await row.save(update_fields=["status", "sent_at", "result", "last_error",
                                      "wechat_msgid"])
        await _after_success(channels, row, result)


async def _retry_or_give_up(channels: Channels, row: OutboundMessage, reason: str) -> None:
    if _gives_up(channels, row):
        await _finish(channels, row, OutboxStatus.GAVE_UP, reason)
        return
    row.status = OutboxStatus.PENDING
    row.last_error = reason[:300]
    row.next_attempt_at = channels.now() + timedelta(seconds=_backoff(channels, row))
    await row.save(update_fields=["status", "last_error", "next_attempt_at"])


async def _finish(channels: Channels, row: OutboundMessage, status: OutboxStatus,
                  reason: str) -> None:
    row.status = status
    row.last_error = reason[:300]
    await row.save(update_fields=["status", "last_error"])
    log.warning("outbox %s (%s to %s) %s: %s", row.id, row.kind, row.target, status, reason)
    purpose = row.payload.get("purpose", "")
    if purpose == "invitation" and row.payload.get("channel_invitation_id"):
        await ChannelInvitation.filter(id=row.payload["channel_invitation_id"]).update(
            delivery_status=DeliveryStatus.FAILED, delivery_detail=reason[:200])
    if row.kind == OutboxKind.WEBHOOK or purpose == "invitation":
        await audit.record_alone(
            Actor.system("channels"), f"channel.{row.kind.value}.{status.value}",
            object_type="outbound_message", object_id=str(row.id), outcome="failure",
            details={"purpose": purpose, "reason": reason[:200], "attempts": row.attempts},
        )


async def _after_success(channels: Channels, row: OutboundMessage, result: dict[str, Any]) -> None:
    payload = row.payload
    purpose = payload.get("purpose", "")
    if purpose == "invitation" and payload.get("channel_invitation_id"):
        await ChannelInvitation.filter(id=payload["channel_invitation_id"]).update(
            delivery_status=DeliveryStatus.SENT, template_msgid=result.get("msgid"),
            delivery_detail="")
    if payload.get("audience") == "customer":
        await conversations.store(
            app_id=payload.get("app_id", ""), openid=row.target, direction="out",
            via=payload.get("via", row.kind.value), msg_type=row.kind.value,
            text=payload.get("text", ""), session_id=row.session_id, intent=purpose,
            data={"outbox_id": row.id, **({"msgid": result["msgid"]} if "msgid" in result
                                         else {})},
            at=channels.now(),
        )


def _wechat_error(exc: WeChatApiError) -> Exception:
    if exc.transient:
        return Retry(str(exc))
    return Permanent(str(exc))


async def _send_template(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    p = row.payload
    try:
        result = await channels.wechat.send_template(
            row.target, p["template_id"], p["data"], url=p.get("url"),
            mini_program=p.get("mini_program"),
        )
    except WeChatApiError as exc:
        raise _wechat_error(exc) from exc
    return {"msgid": int(result.get("msgid", 0))}


async def _send_custom(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    try:
        await channels.wechat.send_text(row.target, row.payload["text"])
    except WeChatApiError as exc:
        # 45015: the user has not written to us in the last 48 hours; only templates reach them.
        raise _wechat_error(exc) from exc
    return {}


async def _with_grant(channels: Channels, row: OutboundMessage, app_id: str,
                      send: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """A subscribe message spends one accepted subscription of its template."""
    template_id = row.payload["template_id"]
    grant = await SubscriptionGrant.get_or_none(app_id=app_id, openid=row.target,
                                                template_id=template_id)
    if grant is None or grant.remaining <= 0:
        raise Permanent("no accepted subscription for this template")
    try:
        await send()
    except WeChatApiError as exc:
        if exc.errcode == 43101:  # the user refused or used up the subscription
            grant.remaining = 0
            await grant.save(update_fields=["remaining", "updated_at"])
        raise _wechat_error(exc) from exc
    grant.remaining = max(grant.remaining - 1, 0)
    await grant.save(update_fields=["remaining", "updated_at"])
    return {}


async def _send_subscribe(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    p = row.payload
    return await _with_grant(channels, row, channels.config.app_id, lambda: channels.wechat
                             .send_subscribe(row.target, p["template_id"], p["data"],
                                             page=p.get("page")))


async def _send_mp_subscribe(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    p = row.payload
    return await _with_grant(channels, row, channels.config.mp_app_id, lambda: channels.mp
                             .send_mp_subscribe(row.target, p["template_id"], p["data"],
                                                page=p.get("page")))


async def _send_mp_card(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    try:
        await channels.wechat.send_mp_card(row.target, row.payload["card"])
    except WeChatApiError as exc:
        raise _wechat_error(exc) from exc
    return {}


async def _send_sms(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    """A text message through the configured provider (bot/sms.py); the number is decrypted
    only here, for the call."""
    if channels.sms is None:
        raise Permanent("短信渠道未开通")
    p = row.payload
    phone = channels.deps.cipher.decrypt(p["phone_enc"], "outbound_message.sms_phone")
    try:
        receipt = await channels.sms.send(SmsMessage(phone, p["template_id"],
                                                     tuple(p["params"]), p["text"],
                                                     context=context_of(row.id)))
    except SmsError as exc:
        if exc.transient:
            raise Retry(str(exc)) from exc
        raise Permanent(str(exc)) from exc
    return {"provider": receipt.provider, "message_id": receipt.message_id}


async def _send_webhook(channels: Channels, row: OutboundMessage) -> dict[str, Any]:
    client_id = row.target
    client = channels.config.bank_clients.get(client_id)
    if client is None or not client.webhook_url:
        raise Permanent(f"bank client {client_id} has no webhook_url")
    body = json.dumps(row.payload["body"], ensure_ascii=False, separators=(",", ":")).encode()
    parts = urlsplit(client.webhook_url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # A fresh timestamp and nonce per attempt (a retry is not a replay); the delivery id stays
    # the same so the bank can tell a retry from a new event.
    headers = signed_headers(client_id, client.webhook_secret, "POST", path, body,
                             int(channels.now().timestamp()))
    headers["Content-Type"] = "application/json"
    headers["X-Shuanglu-Delivery"] = str(row.id)
    try:
        async with channels.http.post(client.webhook_url, data=body, headers=headers) as resp:
            status = resp.status
            await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Retry(f"transport: {type(exc).__name__}") from exc
    if not 200 <= status < 300:
        raise Retry(f"bank answered HTTP {status}")
    return {"http_status": status}


HANDLERS: dict[OutboxKind, Callable[[Channels, OutboundMessage], Awaitable[dict[str, Any]]]] = {
    OutboxKind.WECHAT_TEMPLATE: _send_template,
    OutboxKind.WECHAT_CUSTOM: _send_custom,
    OutboxKind.WECHAT_SUBSCRIBE: _send_subscribe,
    OutboxKind.MP_SUBSCRIBE: _send_mp_subscribe,
    OutboxKind.WEBHOOK: _send_webhook,
    # The bank's server shows the invitation in its app: a signed POST like the webhooks, but
    # with the WeChat retry budget (a failure must reach the agent within minutes, not days).
    OutboxKind.BANK_PUSH: _send_webhook,
    OutboxKind.MP_CARD: _send_mp_card,
    OutboxKind.SMS: _send_sms,
}


def view(row: OutboundMessage) -> dict[str, Any]:
    return {
        "id": row.id, "kind": row.kind.value, "status": row.status.value,
        "attempts": row.attempts, "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
    }
