"""The channel worker running in the server process: session events published by the workflow
wake it at once (no waiting for the next poll), and queued messages go out by themselves."""

from __future__ import annotations

import asyncio

import pytest

from models.sales import Order
from tests.channels.conftest import Kit, openid


@pytest.fixture
def channel_env() -> dict[str, str]:
    # A long poll interval: anything delivered quickly was woken, not polled.
    return {"SHUANGLU_CHANNELS_RUN_WORKER": "true",
            "SHUANGLU_CHANNELS_WORKER_INTERVAL_SECONDS": "30"}


async def _until(check: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not delivered in time")


async def test_a_session_event_reaches_the_bank_without_polling(kit: Kit) -> None:
    walk = await kit.h.create_session()
    order = await Order.get(id=walk.order_id)
    await asyncio.sleep(0.2)  # the worker's first pass is over; it now sleeps for 30 s
    status, _ = await kit.bank_call("POST", "/bank/invitations", {
        "application_no": order.application_no, "bank_customer_ref": "BC-1"})
    assert status == 201
    await _until(lambda: kit.bank.received)
    assert kit.bank.received[0]["body"]["state"] == "invited"


async def test_a_queued_customer_message_goes_out_by_itself(kit: Kit) -> None:
    user = openid("worker-user")
    kit.fake.recent.add(user)
    await asyncio.sleep(0.2)
    await kit.say(user, "人工")  # no session: answered passively, nothing queued
    walk = await kit.h.create_session()
    await kit.follower_customer(walk.session_id, user)
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                        json={})
    assert r.status == 201
    await _until(lambda: kit.fake.sent("template/send"))
    assert kit.fake.sent("template/send")[0]["touser"] == user
