"""The live WebSocket (events pushed to the pages) and the agent's pre-check (R-03)."""

from __future__ import annotations

from typing import Any

from tests.harness import HERE, Harness


async def _receive(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = await ws.receive_json(timeout=5)
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def test_the_customer_page_is_pushed_each_transition(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    async with harness.client.ws_connect("/api/v1/live") as ws:
        await ws.send_json({"role": "customer", "token": walk.customer_token})
        snapshot = await _receive(ws, "snapshot")
        assert snapshot["session"]["state"] == "opened"
        await harness.walk_to("consented", walk=walk)
        event = await _receive(ws, "event")
        assert event["event"]["to_state"] == "consented"
        assert "ip" not in event["event"] and "data" not in event["event"]
        assert (await _receive(ws, "snapshot"))["session"]["state"] == "consented"


async def test_staff_follow_a_session_they_may_see(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    token = await harness.login("agent01")
    async with harness.client.ws_connect("/api/v1/live") as ws:
        await ws.send_json({"role": "staff", "token": token, "session_id": walk.session_id})
        assert (await _receive(ws, "snapshot"))["session"]["state"] == "invited"
    other = await harness.login("agent02")
    async with harness.client.ws_connect("/api/v1/live") as ws:
        await ws.send_json({"role": "staff", "token": other, "session_id": walk.session_id})
        error = await _receive(ws, "error")
        assert error["detail"] == "找不到该录制会话"


async def test_a_socket_without_a_valid_token_is_closed(harness: Harness) -> None:
    async with harness.client.ws_connect("/api/v1/live") as ws:
        await ws.send_json({"role": "customer", "token": "forged"})
        assert (await _receive(ws, "error"))["type"] == "error"
        closing = await ws.receive(timeout=5)
        assert closing.type.name in ("CLOSE", "CLOSED")
    async with harness.client.ws_connect("/api/v1/live") as ws:
        await ws.send_str("not json")
        assert (await _receive(ws, "error"))["type"] == "error"


async def test_the_precheck_reports_location_network_and_licence_R03(harness: Harness) -> None:
    r = await harness.as_("agent01", "POST", "/agent/precheck", json={"location": HERE})
    assert r.status == 200 and r.body["passed"] is True
    assert r.body["premises"]["name"] == "海曙支行营业厅" and r.body["ip"] == "127.0.0.1"
    r = await harness.as_("agent01", "POST", "/agent/precheck",
                          json={"location": {"lat": 39.9, "lng": 116.4}})
    assert r.body["passed"] is False
    assert [f["code"] for f in r.body["failures"]] == ["outside_premises"]
    r = await harness.as_("qa01", "POST", "/agent/precheck", json={"location": HERE})
    assert r.status == 403
