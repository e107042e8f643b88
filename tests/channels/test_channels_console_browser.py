"""The agent's console sends a mini-program card and a bank-app push, in a real headless
Chromium (issue 17 item 4, R-20), against the channel fakes (WeChat's customer-service API, the
bank's server verifying our signed push): the channel buttons become available once the customer
is known there, a click sends, the channel worker delivers, and the console shows the delivery
status (已发送), then 客户已打开 when the customer opens it in the mini-program or the bank app.
The WeChat template/SMS/QR-code flows are in tests/h5/test_console_invitations.py.
Screenshots: console-channel-*.png."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from models.sales import Order
from tests.channels.conftest import Kit, openid
from tests.h5.conftest import SCREENSHOTS, chromium_context
from tests.h5.test_reentry import _until
from tests.harness import HERE

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(90)]


async def _status(page: Any, text: str) -> None:
    await page.wait_for_function(
        f"document.querySelector('#inviteStatus').textContent === {text!r}", timeout=15000)


async def _sent_as(page: Any, kit: Kit, session_id: str, channel: str) -> None:
    """The console's click reached the server (the invitation of that channel is shown)."""
    await page.locator("#inviteStatus").wait_for()
    await _until(f"the {channel} invitation created", lambda: _chosen(kit, session_id, channel),
                 10)


async def _chosen(kit: Kit, session_id: str, channel: str) -> bool:
    r = await kit.h.as_("agent01", "GET", f"/sessions/{session_id}/channel-invitation")
    return r.status == 200 and r.body["choice"] == channel


async def _view(kit: Kit, session_id: str) -> dict[str, Any]:
    r = await kit.h.as_("agent01", "GET", f"/sessions/{session_id}/channel-invitation")
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


async def test_console_sends_a_mini_program_card_and_a_bank_app_push_R20(kit: Kit) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    walk = await kit.h.create_session()
    sid = walk.session_id
    customer = openid("console-mp-card")
    await kit.follower_customer(sid, customer)
    kit.fake.recent.add(customer)  # wrote to the account within 48 hours
    order = await Order.get(id=walk.order_id)
    status, _ = await kit.bank_call("POST", "/bank/invitations", {
        "application_no": order.application_no, "bank_customer_ref": "BC-30001"})
    assert status == 201

    async with chromium_context() as desktop:
        await desktop.grant_permissions(["geolocation"])
        await desktop.set_geolocation({"latitude": HERE["lat"], "longitude": HERE["lng"],
                                       "accuracy": 15})
        page = await desktop.new_page()
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.goto(str(kit.h.client.make_url("/console")))
        await page.fill("#username", "agent01")
        await page.fill("#password", "demo-agent-01")
        await page.get_by_role("button", name="登录").click()
        await page.get_by_role("button", name="获取定位并检查").click()
        await page.locator("#sessions tr").first.click()
        await page.get_by_role("button", name="发送邀请").click()
        card = page.locator("[data-channel=miniprogram]")
        await card.wait_for()
        assert await card.is_enabled()
        assert await page.locator("[data-channel=bank_app]").is_enabled()

        # The mini-program card: queued, delivered by the worker, shown as sent.
        await card.click()
        await _sent_as(page, kit, sid, "miniprogram")
        await kit.run_worker()
        label = (await _view(kit, sid))["status"]["label"]
        await _status(page, label)
        message = kit.fake.sent("custom/send")[-1]
        assert message["touser"] == customer and message["msgtype"] == "miniprogrampage"
        await page.screenshot(path=SCREENSHOTS / "console-channel-01-card-sent.png",
                              full_page=True)
        ref = message["miniprogrampage"]["pagepath"].split("ref=", 1)[1]
        code = kit.fake.code_for(openid("mp-openid-of-console-customer"))
        r = await kit.h.request("POST", "/miniprogram/login", json={"code": code, "ref": ref})
        assert r.status == 200, r.body
        await _status(page, "客户已打开")

        # Send again as a push through the bank's app: signed, verified by the bank's server.
        await page.get_by_role("button", name="重新发送邀请").click()
        await page.locator("[data-channel=bank_app]").click()
        await _sent_as(page, kit, sid, "bank_app")
        await kit.run_worker()
        view = await _view(kit, sid)
        assert view["choice"] == "bank_app" and view["status"]["code"] == "sent"
        await _status(page, view["status"]["label"])
        pushes = [m for m in kit.bank.received if m["body"]["type"] == "invitation"]
        assert len(pushes) == 1 and kit.bank.rejected == []
        push = pushes[0]["body"]
        assert push["bank_customer_ref"] == "BC-30001"
        await page.screenshot(path=SCREENSHOTS / "console-channel-02-bank-push-sent.png",
                              full_page=True)
        parts = urlsplit(push["h5_url"])
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        r = await kit.h.request("POST", "/bank/invitations/open", json={
            "ref": parts.path.rsplit("/", 1)[-1], "cu": q["cu"], "exp": int(q["exp"]),
            "n": q["n"], "sig": q["sig"]})
        assert r.status == 200, r.body
        await _status(page, "客户已打开")
        await page.screenshot(path=SCREENSHOTS / "console-channel-03-bank-opened.png",
                              full_page=True)
