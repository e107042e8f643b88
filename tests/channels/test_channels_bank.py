"""The bank app: signed server-to-server calls (HMAC-SHA256, timestamp window, single-use
nonces), signed single-use deep links bound to the bank's customer (R-20), status by
application number (R-43), and status webhooks retried with backoff until acknowledged."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bot import feed
from models.audit import AuditEntry
from models.channels import OutboundMessage, OutboxKind, OutboxStatus
from models.sales import Order
from security.audit import RefusalLog
from security.partner_signing import signed_headers
from tests.channels.conftest import BANK_CLIENT, Kit
from tests.harness import Walk, consent_body
from tests.qa.verdict_kit import pass_clean


async def _bank_invitation(kit: Kit, customer_ref: str = "BC-10001") -> tuple[str, dict]:  # type: ignore[type-arg]
    walk = await kit.h.create_session()
    order = await Order.get(id=walk.order_id)
    status, body = await kit.bank_call("POST", "/bank/invitations", {
        "application_no": order.application_no, "bank_customer_ref": customer_ref})
    assert status == 201, body
    return walk.session_id, body


def _open_params(h5_url: str) -> dict[str, object]:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(h5_url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return {"ref": parts.path.rsplit("/", 1)[-1], "cu": q["cu"], "exp": int(q["exp"]),
            "n": q["n"], "sig": q["sig"]}


async def test_the_bank_creates_an_invitation_and_the_deep_link_opens_once(kit: Kit) -> None:
    _session_id, body = await _bank_invitation(kit)
    assert body["deep_link"].startswith("demobank://shuanglu/open?url=")
    params = _open_params(body["h5_url"])
    r = await kit.h.request("POST", "/bank/invitations/open", json=params)
    assert r.status == 200 and r.body["session"]["state"] == "opened"
    again = await kit.h.request("POST", "/bank/invitations/open", json=params)
    assert again.status == 410 and again.body["code"] == "link_used"
    tampered = {**params, "cu": "BC-99999"}
    r = await kit.h.request("POST", "/bank/invitations/open", json=tampered)
    assert r.status == 403 and r.body["code"] == "link_signature_invalid"
    # the bank app asks for a fresh link for its logged-in customer: let back in
    status, launch = await kit.bank_call("POST", f"/bank/invitations/{params['ref']}/launch",
                                         {"bank_customer_ref": "BC-10001"})
    assert status == 201
    back = await kit.h.request("POST", "/bank/invitations/open",
                               json=_open_params(launch["h5_url"]))
    assert back.status == 200 and back.body["reentry"] is True
    status, _refused = await kit.bank_call("POST", f"/bank/invitations/{params['ref']}/launch",
                                          {"bank_customer_ref": "BC-77777"})
    assert status == 403


async def test_unsigned_forged_stale_and_replayed_calls_are_refused(kit: Kit) -> None:
    walk = await kit.h.create_session()
    order = await Order.get(id=walk.order_id)
    payload = {"application_no": order.application_no, "bank_customer_ref": "BC-1"}
    r = await kit.h.request("POST", "/bank/invitations", json=payload)
    assert r.status == 401 and r.body["code"] == "bank_client_unknown"
    status, body = await kit.bank_call("POST", "/bank/invitations", payload, secret="x" * 40)
    assert status == 401 and body["code"] == "signature_invalid"
    raw = json.dumps(payload).encode()
    stale = signed_headers(BANK_CLIENT, "bank-api-secret-for-tests-0123456789abcdef", "POST",
                           "/api/v1/bank/invitations", raw, int(time.time()) - 3600)
    status, body = await kit.bank_call("POST", "/bank/invitations", payload, headers=stale)
    assert status == 401 and body["code"] == "timestamp_out_of_window"
    fresh = signed_headers(BANK_CLIENT, "bank-api-secret-for-tests-0123456789abcdef", "POST",
                           "/api/v1/bank/invitations", raw, int(time.time()))
    status, _ = await kit.bank_call("POST", "/bank/invitations", payload, headers=fresh)
    assert status == 201
    status, body = await kit.bank_call("POST", "/bank/invitations", payload, headers=fresh)
    assert status == 401 and body["code"] == "nonce_replayed"
    # Refusals are aggregated per address and minute (issue 14): the first is written at
    # once, the others are counted and written as one entry once the minute is over.
    await RefusalLog(kit.h.redis).flush(now=time.time() + 120)
    refused = await AuditEntry.filter(action="bank.request.refused")
    assert sum(e.details["count"] if e.details.get("aggregated") else 1 for e in refused) == 3


async def test_status_by_application_number_R43(kit: Kit) -> None:
    _session_id, body = await _bank_invitation(kit)
    order_no = body["application_no"]
    status, view = await kit.bank_call("GET", f"/bank/orders/{order_no}/status")
    assert status == 200 and view["state"] == "invited"
    assert view["recording_complete"] is False and view["qa_complete"] is False
    status, _ = await kit.bank_call("GET", "/bank/orders/NO-SUCH-APP/status")
    assert status == 404


async def test_webhooks_are_signed_retried_after_a_failure_and_replays_rejected(
    kit: Kit,
) -> None:
    kit.bank.fail_first = 1
    _session_id, body = await _bank_invitation(kit)
    r = await kit.h.request("POST", "/bank/invitations/open", json=_open_params(body["h5_url"]))
    token = r.body["customer_token"]
    await kit.h.request("POST", "/customer/consent", token=token, json=consent_body())

    await kit.run_worker()  # invited: the bank answers 500 the first time
    first = await OutboundMessage.filter(kind=OutboxKind.WEBHOOK).order_by("id").first()
    assert first is not None and first.status == OutboxStatus.PENDING
    assert "HTTP 500" in first.last_error and first.attempts == 1
    for _ in range(40):  # backoff base 0.05 s in the tests
        await kit.run_worker()
        if await OutboundMessage.filter(kind=OutboxKind.WEBHOOK,
                                        status=OutboxStatus.SENT).count() == 3:
            break
        await asyncio.sleep(0.02)
    states = [d["body"]["state"] for d in kit.bank.received]
    assert states == ["invited", "opened", "consented"]
    await first.refresh_from_db()
    assert first.status == OutboxStatus.SENT and first.attempts == 2
    delivery = kit.bank.received[0]
    assert delivery["headers"]["X-Shuanglu-Signature"].startswith("sha256=")
    assert delivery["headers"]["X-Shuanglu-Delivery"] == str(first.id)
    assert delivery["path"] == "/hooks/shuanglu?tenant=demo"

    # someone captures a delivery and sends it again: the bank's verifier refuses it
    async with kit.h.client.session.post(kit.bank.url, data=delivery["raw"], headers={
            k: v for k, v in delivery["headers"].items() if k.startswith("X-Shuanglu")}) as resp:
        assert resp.status == 401
    assert kit.bank.rejected == ["nonce_replayed"]


async def test_a_webhook_never_acknowledged_is_given_up_after_its_window(kit: Kit) -> None:
    kit.bank.fail_first = 10**6
    kit.channels.config.bank.webhook_give_up_after_seconds = 0
    await _bank_invitation(kit)
    await kit.run_worker()
    row = await OutboundMessage.get(kind=OutboxKind.WEBHOOK)
    assert row.status == OutboxStatus.GAVE_UP
    assert await AuditEntry.filter(action="channel.webhook.gave_up").exists()


async def test_full_lifecycle_reaches_the_bank_R43(kit: Kit) -> None:
    session_id, body = await _bank_invitation(kit)
    r = await kit.h.request("POST", "/bank/invitations/open", json=_open_params(body["h5_url"]))
    walk = Walk(session_id, customer_token=r.body["customer_token"])
    await kit.h.walk_to("qa_pending", walk=walk)
    await pass_clean(kit.h, session_id)  # a clean report, then the inspector's pass
    for _ in range(3):
        await kit.run_worker()
    _status, view = await kit.bank_call("GET", f"/bank/orders/{body['application_no']}/status")
    assert view["recording_complete"] and view["qa_complete"] and view["qa_passed"]
    assert kit.bank.received[-1]["body"]["state"] == "qa_passed"
    assert kit.bank.received[-1]["body"]["qa_complete"] is True


async def test_a_pass_reaches_feeds_with_news_beyond_its_batch_of_quiet_ones(
    kit: Kit, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass takes at most `BATCH` feeds: those with events not yet acted on, not the first
    active ones (which, with nothing new, used to fill the batch and leave later sessions'
    webhooks to wait); every active feed's session still wakes the worker (issue 14)."""
    quiet, _ = await _bank_invitation(kit, "BC-QUIET")
    await feed.process(kit.channels)  # the quiet session's 'invited' acted on: nothing new
    monkeypatch.setattr(feed, "BATCH", 1)
    news, _ = await _bank_invitation(kit, "BC-NEWS")
    assert await feed.process(kit.channels) == 1
    assert await OutboundMessage.filter(
        kind=OutboxKind.WEBHOOK, dedup_key__contains=news).exists()
    assert kit.channels.feed_sessions == {quiet, news}
