"""The WeChat API client: the access token is shared through Redis by every worker, an expired
or invalid token is refreshed once and the call retried, and final errors are not retried."""

from __future__ import annotations

import asyncio

import pytest

from bot import outbox
from bot.wechat_api import WeChatApi, WeChatApiError
from models.channels import OutboundMessage, OutboxKind, OutboxStatus
from tests.channels.conftest import APP_ID, APP_SECRET, Kit, openid


def second_worker(kit: Kit) -> WeChatApi:
    """Another process's client: same Redis, its own thread pool and wechatpy clients."""
    ch = kit.channels
    return WeChatApi(APP_ID, APP_SECRET, kit.fake.url, "https://open.example/connect/",
                     ch.redis, ch.executor, 5.0)


async def test_the_access_token_is_fetched_once_and_shared_by_workers(kit: Kit) -> None:
    user = openid("shared")
    kit.fake.recent.add(user)
    # Let any fetch the app's start-up began settle, then start from no cached token, so the
    # count below is exactly the fetches of these three concurrent workers.
    wechat = kit.channels.wechat
    await wechat.access_token()
    await wechat.redis.delete(wechat.token_key)
    kit.fake.token_fetches = 0
    await asyncio.gather(kit.channels.wechat.send_text(user, "一"),
                         second_worker(kit).send_text(user, "二"),
                         second_worker(kit).send_text(user, "三"))
    assert kit.fake.token_fetches == 1
    assert len(kit.fake.sent("custom/send")) == 3


@pytest.mark.parametrize("breakage", ["expire_tokens", "invalidate_tokens"])
async def test_an_expired_token_is_refreshed_once_and_the_call_retried(
    kit: Kit, breakage: str
) -> None:
    user = openid("expired")
    kit.fake.recent.add(user)
    await kit.channels.wechat.send_text(user, "第一条")
    getattr(kit.fake, breakage)()  # 42001 access_token expired / 40001 invalid credential
    result = await kit.channels.wechat.send_text(user, "第二条")
    assert result["errcode"] == 0
    assert kit.fake.token_fetches == 2
    assert [b["text"]["content"] for b in kit.fake.sent("custom/send")] == \
        ["第一条", "第二条", "第二条"]
    # the other workers use the new token without fetching again
    await second_worker(kit).send_text(user, "第三条")
    assert kit.fake.token_fetches == 2


async def test_a_token_rejected_twice_is_not_retried_in_a_loop(kit: Kit) -> None:
    kit.fake.always_invalid = True
    with pytest.raises(WeChatApiError) as failed:
        await kit.channels.wechat.send_text(openid("loop"), "你好")
    assert failed.value.errcode == 40001
    assert kit.fake.token_fetches == 2
    assert len(kit.fake.sent("custom/send")) == 2


async def test_a_wrong_app_secret_is_a_clear_error(kit: Kit) -> None:
    api = WeChatApi(APP_ID, "wrong-secret", kit.fake.url, "https://x/", kit.channels.redis,
                    kit.channels.executor, 5.0)
    await kit.channels.redis.delete(api.token_key)
    with pytest.raises(WeChatApiError) as failed:
        await api.send_text(openid("x"), "x")
    assert failed.value.errcode == 40125


async def test_outside_the_48_hour_window_the_message_fails_without_retrying(kit: Kit) -> None:
    user = openid("silent")  # never wrote to us: 45015
    row = await outbox.enqueue(kit.channels, OutboxKind.WECHAT_CUSTOM, "t:45015", user,
                               {"text": "你好", "audience": "customer"})
    await kit.run_worker()
    await row.refresh_from_db()
    assert row.status == OutboxStatus.FAILED and "45015" in row.last_error
    assert row.attempts == 1


async def test_a_wechat_system_error_is_retried_later(kit: Kit) -> None:
    user = openid("busy")
    kit.fake.recent.add(user)
    kit.fake.fail_next["custom/send"] = [-1]
    row = await outbox.enqueue(kit.channels, OutboxKind.WECHAT_CUSTOM, "t:busy", user,
                               {"text": "你好", "audience": "customer"})
    await kit.run_worker()
    await row.refresh_from_db()
    assert row.status == OutboxStatus.PENDING and row.next_attempt_at > kit.channels.now()
    await OutboundMessage.filter(id=row.id).update(next_attempt_at=kit.channels.now())
    await kit.run_worker()
    await row.refresh_from_db()
    assert row.status == OutboxStatus.SENT and row.attempts == 2
