"""The insurer's core system (R-43, R-42): signed status queries by application number, policy
status and disputes, and signed webhooks on change retried with backoff; replays refused."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from api.routes_qa import AFTER_CALL
from archive import insurer
from archive.settings import InsurerClient, InsurerSettings
from models.archive import PolicyStatus, RetentionRecord, WebhookDelivery, WebhookStatus
from models.audit import AuditEntry
from models.sales import Order
from models.sessions import RecordingSession
from security.audit import RefusalLog
from security.partner_signing import NonceStore, SignatureError, signed_headers, verify_request
from tests.harness import Harness, Response
from tests.qa.simulate import FakeClock

API_SECRET = "core-api-secret-0123456789"
HOOK_SECRET = "core-hook-secret-0123456789"


@dataclass
class Receiver:
    """The insurer's webhook endpoint: verifies like a real insurer would (the reference
    `verify_request`), and fails the first `fail_first` deliveries."""

    redis: Any
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    captured: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    calls: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        self.captured.append((dict(request.headers), body))
        try:
            await verify_request(request.headers, request.method, request.path_qs, body,
                                 HOOK_SECRET, NonceStore(self.redis, "test-insurer", 900), 300,
                                 int(time.time()))
        except SignatureError as exc:
            self.refused.append(exc.code)
            return web.Response(status=401)
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        self.received.append(json.loads(body))
        return web.Response(status=204)


@pytest_asyncio.fixture
async def insurer_kit(harness: Harness) -> AsyncIterator[tuple[Receiver, TestServer]]:
    receiver = Receiver(harness.redis)
    app = web.Application()
    app.router.add_post("/shuanglu/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    harness.app[AFTER_CALL].insurer = InsurerSettings(clients={
        "core": InsurerClient(institution="DEMO-LIFE", api_secret=API_SECRET,
                              webhook_secret=HOOK_SECRET,
                              webhook_url=str(server.make_url("/shuanglu/hook"))),
        "other": InsurerClient(institution="DEMO-BANK", api_secret=API_SECRET + "x",
                               webhook_secret=HOOK_SECRET + "x"),
    })
    try:
        yield receiver, server
    finally:
        await server.close()


async def _signed(h: Harness, method: str, path: str, body: dict[str, Any] | None = None,
                  client: str = "core", secret: str = API_SECRET, skew: int = 0,
                  headers: dict[str, str] | None = None) -> tuple[Response, dict[str, str]]:
    raw = json.dumps(body).encode() if body is not None else b""
    full = "/api/v1" + path
    sent = headers or signed_headers(client, secret, method, full, raw,
                                     int(h.deps.clock().timestamp()) + skew)
    if body is not None:
        sent = {**sent, "Content-Type": "application/json"}
    return await h.request(method, full, data=raw, headers=sent), sent


async def _application(h: Harness, sid: str) -> str:
    session = await RecordingSession.get(id=sid)
    return (await Order.get(id=session.order_id)).application_no


async def test_status_by_application_number_signed_and_replay_refused_R43(
        harness: Harness, insurer_kit: tuple[Receiver, TestServer]) -> None:
    h = harness
    created = (await h.walk_to("created")).session_id
    r, _ = await _signed(h, "GET", f"/insurer/applications/{await _application(h, created)}"
                         "/status")
    assert r.status == 200, r.body
    assert (r.body["recording_complete"], r.body["qa_complete"]) == (False, False)

    sid = (await h.walk_to("qa_pending")).session_id
    app_no = await _application(h, sid)
    path = f"/insurer/applications/{app_no}/status"
    r, sent = await _signed(h, "GET", path)
    assert r.status == 200, r.body
    assert r.body["application_no"] == app_no
    assert (r.body["recording_complete"], r.body["qa_complete"],
            r.body["underwriting_may_proceed"]) == (True, False, False)
    assert r.body["sessions"][0]["manifest_chain"]

    r, _ = await _signed(h, "GET", path, headers=sent)  # the same request again
    assert (r.status, r.body["code"]) == (401, "nonce_replayed")
    r, _ = await _signed(h, "GET", path, skew=-900)
    assert (r.status, r.body["code"]) == (401, "timestamp_out_of_window")
    r, _ = await _signed(h, "GET", path, secret="wrong-secret-0123456789")
    assert (r.status, r.body["code"]) == (401, "signature_invalid")
    r, _ = await _signed(h, "GET", path, client="nobody")
    assert (r.status, r.body["code"]) == (401, "client_unknown")
    # Another institution's client: the application does not exist for it.
    r, _ = await _signed(h, "GET", path, client="other", secret=API_SECRET + "x")
    assert (r.status, r.body["code"]) == (404, "application_not_found")
    # Refusals are aggregated per address and minute (issue 14): the first is written at
    # once, the others are counted and written as one entry once the minute is over.
    await RefusalLog(h.redis).flush(now=time.time() + 120)
    refused = await AuditEntry.filter(action="insurer.request.refused")
    assert sum(e.details["count"] if e.details.get("aggregated") else 1 for e in refused) == 4

    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict", json={"verdict": "pass"})
    assert r.status == 404  # not in the queue yet: the checks have not run
    from tests.qa.verdict_kit import queue_with_findings

    _, (silence,) = await queue_with_findings(h, sid, ["silence_gap"])
    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict", json={"verdict": "pass"})
    assert (r.status, r.body["code"]) == (409, "qa_pass_blocked")  # the major is open
    r, _ = await _signed(h, "GET", path)
    assert (r.body["qa_complete"], r.body["underwriting_may_proceed"]) == (False, False)
    r = await h.as_("qa01", "POST", f"/qa/sessions/{sid}/verdict", json={
        "verdict": "pass", "decisions": [{
            "finding_id": silence.id, "decision": "dismissed", "reason_code": "detector_error",
            "note": "回放 00:01 客户低声作答，能量检测误判为静音"}]})
    assert r.status == 201, r.body
    r, _ = await _signed(h, "GET", path)
    assert (r.body["qa_complete"], r.body["qa_result"], r.body["qa_pass_basis"],
            r.body["underwriting_may_proceed"]) == (True, "pass", "inspector", True)


async def test_webhooks_on_change_signed_retried_with_backoff_R43(
        harness: Harness, insurer_kit: tuple[Receiver, TestServer]) -> None:
    h = harness
    receiver, _ = insurer_kit
    receiver.fail_first = 2
    clock = FakeClock()
    h.deps.clock = clock
    rt = h.app[AFTER_CALL]
    sid = (await h.walk_to("qa_pending")).session_id
    assert await insurer.sync(h.deps, rt.insurer, h.redis) == 1
    assert await insurer.sync(h.deps, rt.insurer, h.redis) == 0  # nothing changed
    row = await WebhookDelivery.get(client_id="core")
    assert row.body["recording_complete"] is True and row.body["version"] == 1

    async with ClientSession() as http:
        sent = []
        for wait in (0, 0, 2, 3, 1):  # backoff 2 s, then 4 s
            clock.advance(wait * 1000)
            sent.append(await insurer.deliver_due(h.deps, rt.insurer, http))
            await row.refresh_from_db()
            if row.status == WebhookStatus.DELIVERED:
                break
    assert sent == [0, 0, 0, 0, 1]
    assert receiver.calls == 3 and row.attempts == 3
    assert receiver.refused == []  # every attempt correctly signed, each with its own nonce
    assert receiver.received[0]["application_no"] == await _application(h, sid)
    nonces = {headers["X-Shuanglu-Nonce"] for headers, _ in receiver.captured}
    assert len(nonces) == 3
    assert {headers["X-Shuanglu-Delivery"] for headers, _ in receiver.captured} == {str(row.id)}

    # A captured delivery sent again is refused by the receiver (replay).
    headers, body = receiver.captured[-1]
    async with ClientSession() as http, http.post(
            str(insurer_kit[1].make_url("/shuanglu/hook")), data=body,
            headers={k: v for k, v in headers.items()
                     if k.startswith("X-Shuanglu") or k == "Content-Type"}) as resp:
        assert resp.status == 401
    assert receiver.refused == ["nonce_replayed"]


async def test_webhook_gives_up_after_the_configured_attempts_R43(
        harness: Harness, insurer_kit: tuple[Receiver, TestServer]) -> None:
    h = harness
    receiver, _ = insurer_kit
    receiver.fail_first = 100
    rt = h.app[AFTER_CALL]
    rt.insurer = rt.insurer.model_copy(update={"webhook_max_attempts": 3})
    clock = FakeClock()
    h.deps.clock = clock
    await h.walk_to("qa_pending")
    await insurer.sync(h.deps, rt.insurer, h.redis)
    async with ClientSession() as http:
        for _ in range(4):
            await insurer.deliver_due(h.deps, rt.insurer, http)
            clock.advance(60_000)
    row = await WebhookDelivery.get(client_id="core")
    assert (row.status, row.attempts, row.last_error) == (WebhookStatus.GAVE_UP, 3, "HTTP 503")
    assert await AuditEntry.filter(action="insurer.webhook_gave_up").exists()
    assert insurer.backoff_seconds(rt.insurer, 20) == rt.insurer.webhook_backoff_max_seconds


async def test_policy_status_and_disputes_from_the_insurer_R42_R43(
        harness: Harness, insurer_kit: tuple[Receiver, TestServer]) -> None:
    h = harness
    sid = (await h.walk_to("qa_pending")).session_id
    base = f"/insurer/applications/{await _application(h, sid)}"
    r, _ = await _signed(h, "POST", base + "/policy-status", {"state": "terminated"})
    assert (r.status, r.body["code"]) == (422, "ended_on_required")
    r, _ = await _signed(h, "POST", base + "/policy-status", {"state": "bogus"})
    assert (r.status, r.body["code"]) == (422, "validation_failed")
    r, _ = await _signed(h, "POST", base + "/policy-status", {
        "state": "terminated", "policy_no": "P-9", "effective_on": "2012-01-01",
        "ended_on": "2013-05-01", "reason": "退保"})
    assert r.status == 200, r.body
    status = await PolicyStatus.get(order__application_no=await _application(h, sid))
    assert (status.state, str(status.ended_on)) == ("terminated", "2013-05-01")
    record = await RetentionRecord.get(session_id=sid)
    assert str(record.retain_until) == "2023-05-01"
    r, _ = await _signed(h, "POST", base + "/disputes", {"reference": "C-1",
                                                          "opened_on": "2020-01-01"})
    assert r.status == 201, r.body
    await record.refresh_from_db()
    assert (record.on_hold, record.retain_until) == (True, None)
    r, _ = await _signed(h, "POST", base + "/disputes/C-1/close", {"closed_on": "2024-03-01"})
    assert r.status == 200, r.body
    await record.refresh_from_db()
    assert (record.on_hold, str(record.retain_until)) == (False, "2026-03-01")
    assert await AuditEntry.filter(action="dispute.closed").exists()
    assert await AuditEntry.filter(action="policy.status_reported").count() == 1
