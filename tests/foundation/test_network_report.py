"""The customer's network reports (issue 17 item 2, R-30) through the API: only in the call; a
poor reading puts `network_poor` on the timeline once (with the reasons and measures) and gives
the page the Chinese hint, readings between the thresholds change nothing, a good one records
`network_recovered`. The server's own measures of the incoming video are tested with real
aiortc in tests/media_call/test_network_quality.py, the browsers in tests/h5."""

from __future__ import annotations

from uuid import UUID

import pytest

from models.sessions import SessionEvent
from tests.harness import HERE, Harness
from workflow.network_quality import HINT

pytestmark = pytest.mark.timeout(60)

POOR = {"loss_pct": 22.5, "rtt_ms": 120, "send_fps": 14, "send_height": 480}
BETWEEN = {"loss_pct": 6, "rtt_ms": 120, "send_fps": 14, "send_height": 480}
GOOD = {"loss_pct": 0.5, "rtt_ms": 60, "send_fps": 15, "send_height": 480}


async def test_poor_is_recorded_once_hinted_and_cleared_when_it_recovers(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("identity_verified")
    token = walk.customer_token
    r = await harness.request("POST", "/customer/network", token=token, json=GOOD)
    assert r.status == 409 and r.body["code"] == "not_in_call", r.body
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/start",
                          json={"location": HERE})
    assert r.status == 200, r.body

    r = await harness.request("POST", "/customer/network", token=token, json=POOR)
    assert r.status == 200, r.body
    assert r.body["poor"] and r.body["hint"] == HINT and r.body["recorded"]
    for body in (POOR, BETWEEN):  # still poor, or not clearly better: nothing new
        r = await harness.request("POST", "/customer/network", token=token, json=body)
        assert r.body["poor"] and not r.body["recorded"], r.body
    r = await harness.request("POST", "/customer/network", token=token, json=GOOD)
    assert r.body == {"poor": False, "hint": "", "verdict": "good", "reasons": [],
                      "recorded": True}
    events = await SessionEvent.filter(session_id=walk.session_id,
                                       type__startswith="network_").order_by("seq")
    assert [e.type for e in events] == ["network_poor", "network_recovered"]
    assert events[0].data["reasons"] == ["客户上行丢包 22%"]
    assert events[0].data["measures"]["loss_pct"] == 22.5 and events[0].actor_kind == "customer"
    r = await harness.request("POST", "/customer/network", token=token,
                              json={"loss_pct": 140})
    assert r.status == 422

    # The QA replay marks where it was poor and when it recovered.
    from qa.replay import replay_view

    marks = [m for m in (await replay_view(UUID(walk.session_id), "ticket"))["marks"]
             if m["kind"] == "network"]
    assert [m["label"] for m in marks] == ["客户网络信号较弱（客户上行丢包 22%）", "客户网络恢复"]
