"""The one listening mechanism (workflow.events.subscribe, issue 18): a subscription that Redis
drops is made again, and the listener is told so (pub/sub is not durable: it must catch up).
Real Redis; the drop is Redis's own CLIENT KILL of its pub/sub connections."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from workflow.events import RESUBSCRIBED, subscribe

pytestmark = pytest.mark.timeout(60)


async def test_a_dropped_subscription_is_made_again_and_says_so(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    events = subscribe(redis, channels=("test:sub:a",), patterns=("test:pat:*",),
                       retry_seconds=0.05)
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def listen() -> None:
        async for message in events:
            await received.put(message)

    async def publish_until_heard(channel: str, data: bytes) -> dict[str, object]:
        # Publishing before the subscription is made reaches no one: publish until heard.
        while True:
            await redis.publish(channel, data)
            try:
                message = await asyncio.wait_for(received.get(), 0.2)
            except TimeoutError:
                continue
            if message is RESUBSCRIBED or message.get("data") == data:
                return message

    task = asyncio.create_task(listen())
    try:
        first = await publish_until_heard("test:sub:a", b"one")
        assert first["type"] == "message" and first["data"] == b"one"
        assert int(await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) == 1
        assert await asyncio.wait_for(received.get(), 10) is RESUBSCRIBED
        again = await publish_until_heard("test:pat:x", b"two")
        assert again["type"] == "pmessage" and again["data"] == b"two"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await events.aclose()
        numpat = await redis.pubsub_numpat()
        await redis.aclose()
    assert numpat == 0  # the subscription was closed with the listener
