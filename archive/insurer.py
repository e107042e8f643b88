"""The insurer's view of an application (R-43): is the recording complete, is QA done and with
what result — so underwriting waits for both — and signed webhooks when that changes.

Requests and webhooks are signed the way the bank app's are (`security.partner_signing`: HMAC-SHA256
over timestamp, nonce, method, path and body; the receiver refuses stale timestamps and
replayed nonces). Webhooks are queued in the database, claimed by one worker at a time
(`infra.claims.claim_due`, as the channels' outbox), and retried with exponential backoff until
the insurer answers 2xx, or given up (and audited) after the configured attempts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from redis.asyncio import Redis

from archive.settings import InsurerClient, InsurerSettings
from infra.claims import claim_due
from models.archive import InsurerStatusSnapshot, PolicyStatus, WebhookDelivery, WebhookStatus
from models.org import Institution
from models.qa import Rectification, RectificationStatus
from models.sales import Order, Product
from models.sessions import RecordingSession, SessionState
from qa.verdicts import pass_standing
from security import audit
from security.audit import Actor
from security.partner_signing import signed_headers
from workflow.core import WorkflowDeps
from workflow.states import STATE_LABELS_ZH

log = logging.getLogger(__name__)
S = SessionState
RECORDED = frozenset({S.COMPLETED, S.SEALED, S.QA_PENDING, S.QA_PASSED, S.QA_REJECTED})
SYNC_CURSOR = "insurer:sync-cursor"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def application_status(order: Order) -> dict[str, Any]:
    """The status body for one application (no timestamps of the query itself, so that equal
    facts give an equal digest)."""
    sessions = await RecordingSession.filter(order_id=order.id).order_by("created_at")
    rects = {r.original_session_id: r for r in await Rectification.filter(order_id=order.id)}
    latest = sessions[-1] if sessions else None
    policy = await PolicyStatus.get_or_none(order_id=order.id)
    state = latest.state if latest else None
    rectification = None
    if latest is not None and latest.id in rects:
        rectification = rects[latest.id].status.value
    elif latest is not None and latest.state == S.QA_REJECTED:
        rectification = RectificationStatus.REQUIRED.value
    # A pass counts only through the QA verdict path with its rules (an inspector's pass with
    # every critical/major finding dismissed in effect, or a clean automatic pass).
    standing = await pass_standing(latest) if latest is not None else None
    passed = standing is not None and standing.recognised
    return {
        "application_no": order.application_no,
        "recording_complete": state in RECORDED,
        "qa_complete": passed or state == S.QA_REJECTED,
        "qa_result": "pass" if passed else "reject" if state == S.QA_REJECTED else None,
        "qa_pass_basis": standing.basis if passed and standing is not None else None,
        # Passed in a way the rules do not recognise (e.g. the retired plain review endpoint):
        # the application waits as if QA were not done.
        "qa_pass_unrecognised": state == S.QA_PASSED and not passed,
        # Underwriting may go on only when the latest recording passed QA.
        "underwriting_may_proceed": passed,
        "rectification": rectification,
        "state": state.value if state else None,
        "state_label": STATE_LABELS_ZH[state] if state else "未录制",
        "policy_state": policy.state.value if policy else None,
        "sessions": [{
            "session_id": str(s.id), "state": s.state.value,
            "state_label": STATE_LABELS_ZH[s.state], "created_at": _iso(s.created_at),
            "completed_at": _iso(s.completed_at), "sealed_at": _iso(s.sealed_at),
            "manifest_chain": (s.manifest or {}).get("chain"),
            "rectified_by": str(rects[s.id].new_session_id)
            if s.id in rects and rects[s.id].new_session_id else None,
        } for s in sessions],
    }


def digest(body: dict[str, Any]) -> str:
    raw = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


async def insurer_code(order: Order) -> str:
    product = await Product.get(id=order.product_id)
    insurer = await Institution.get(id=product.insurer_id)
    return insurer.code


def clients_of(settings: InsurerSettings, code: str) -> list[tuple[str, InsurerClient]]:
    return [(cid, c) for cid, c in sorted(settings.clients.items())
            if c.institution == code and c.webhook_url]


async def note_change(deps: WorkflowDeps, order: Order, settings: InsurerSettings) -> bool:
    """Compares the order's status with the last one sent; queues webhooks when it changed."""
    body = await application_status(order)
    value = digest(body)
    now = deps.clock()
    snapshot = await InsurerStatusSnapshot.get_or_none(order_id=order.id)
    if snapshot is not None and snapshot.digest == value:
        return False
    if snapshot is None:
        snapshot = InsurerStatusSnapshot(order_id=order.id, version=0)
    snapshot.digest = value
    snapshot.body = body
    snapshot.version += 1
    snapshot.updated_at = now
    await snapshot.save()
    for client_id, _ in clients_of(settings, await insurer_code(order)):
        await WebhookDelivery.create(
            client_id=client_id, order_id=order.id, event="application.status_changed",
            body={"type": "application.status_changed", "version": snapshot.version,
                  "at": now.isoformat(), **body},
            next_attempt_at=now, created_at=now,
        )
    return True


async def sync(deps: WorkflowDeps, settings: InsurerSettings, redis: Redis) -> int:
    """Looks at sessions changed since the last run (a cursor in Redis, with a few seconds of
    overlap: looking twice is harmless, the digest decides)."""
    if not settings.clients:
        return 0
    now = deps.clock()
    raw = await redis.get(SYNC_CURSOR)
    text = raw.decode() if isinstance(raw, bytes) else raw
    since = datetime.fromisoformat(text) if text else now - timedelta(days=30)
    order_ids = await RecordingSession.filter(updated_at__gte=since).distinct().values_list(
        "order_id", flat=True)
    changed = 0
    for order in await Order.filter(id__in=list(order_ids)):
        changed += await note_change(deps, order, settings)
    await redis.set(SYNC_CURSOR, (now - timedelta(seconds=10)).isoformat())
    return changed


def backoff_seconds(settings: InsurerSettings, attempts: int) -> float:
    return float(min(settings.webhook_backoff_base_seconds * 2 ** max(attempts - 1, 0),
                     settings.webhook_backoff_max_seconds))


async def deliver_due(deps: WorkflowDeps, settings: InsurerSettings,
                      http: aiohttp.ClientSession, limit: int = 50) -> int:
    """Sends what is due, oldest first; returns how many were delivered."""
    now = deps.clock()
    delivered = 0
    # Claimed first (SKIP LOCKED, a lease covering the whole batch's timeouts), so two workers
    # never post the same delivery; a worker that dies leaves its rows due after the lease.
    lease = timedelta(seconds=limit * settings.webhook_timeout_seconds + 60)

    def mark(row: WebhookDelivery) -> list[str]:
        row.next_attempt_at = now + lease
        return ["next_attempt_at"]

    due = await claim_due(WebhookDelivery.filter(status=WebhookStatus.PENDING,
                                                 next_attempt_at__lte=now),
                          ("id",), limit, mark)
    for row in due:
        client = settings.clients.get(row.client_id)
        if client is None or not client.webhook_url:
            await _give_up(row, "client no longer configured")
            continue
        ok, error = await _post(deps, client, row, http, settings)
        row.attempts += 1
        if ok:
            row.status = WebhookStatus.DELIVERED
            row.delivered_at = deps.clock()
            row.last_error = ""
            delivered += 1
            await row.save()
        elif row.attempts >= settings.webhook_max_attempts:
            await _give_up(row, error)
        else:
            row.last_error = error[:300]
            row.next_attempt_at = now + timedelta(seconds=backoff_seconds(settings,
                                                                          row.attempts))
            await row.save()
    return delivered


async def _post(deps: WorkflowDeps, client: InsurerClient, row: WebhookDelivery,
                http: aiohttp.ClientSession, settings: InsurerSettings) -> tuple[bool, str]:
    assert client.webhook_url is not None
    body = json.dumps(row.body, ensure_ascii=False, separators=(",", ":")).encode()
    parts = urlsplit(client.webhook_url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # A fresh timestamp and nonce per attempt (a retry is not a replay); the delivery id stays.
    headers = signed_headers(row.client_id, client.webhook_secret, "POST", path, body,
                             int(deps.clock().timestamp()))
    headers.update({"Content-Type": "application/json", "X-Shuanglu-Delivery": str(row.id),
                    "X-Shuanglu-Event": row.event})
    try:
        timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
        async with http.post(client.webhook_url, data=body, headers=headers,
                             timeout=timeout) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return True, ""
            return False, f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f"transport: {type(exc).__name__}"


async def _give_up(row: WebhookDelivery, error: str) -> None:
    row.status = WebhookStatus.GAVE_UP
    row.last_error = error[:300]
    await row.save()
    await audit.record_alone(Actor.system("insurer-webhooks"), "insurer.webhook_gave_up",
                             object_type="order", object_id=str(row.order_id or ""),
                             outcome="failure",
                             details={"delivery": row.id, "client": row.client_id,
                                      "attempts": row.attempts, "error": error[:200]})


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    return {"id": row.id, "client_id": row.client_id, "event": row.event,
            "status": row.status.value, "attempts": row.attempts,
            "next_attempt_at": _iso(row.next_attempt_at), "last_error": row.last_error,
            "delivered_at": _iso(row.delivered_at)}
