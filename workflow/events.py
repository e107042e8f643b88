"""Live session events on Redis pub/sub, published after the transaction that wrote them commits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any, Protocol
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError


def channel_for(session_id: UUID | str) -> str:
    return f"session-events:{session_id}"


class EventPublisher(Protocol):
    async def publish(self, session_id: UUID, event: dict[str, Any]) -> None: ...

    async def publish_all(self, session_id: UUID, events: list[dict[str, Any]]) -> None:
        """The events of one transaction, in their order."""
        ...


class RedisEventPublisher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def publish(self, session_id: UUID, event: dict[str, Any]) -> None:
        await self.redis.publish(channel_for(session_id), json.dumps(event, ensure_ascii=False))

    async def publish_all(self, session_id: UUID, events: list[dict[str, Any]]) -> None:
        """One round trip for a transaction's events (a pipeline, in order; issue 14)."""
        if len(events) == 1:
            await self.publish(session_id, events[0])
            return
        channel = channel_for(session_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.publish(channel, json.dumps(event, ensure_ascii=False))
            await pipe.execute()


# -- listening ------------------------------------------------------------------------------

ALL_SESSIONS = "session-events:*"
RESUBSCRIBED: dict[str, Any] = {"type": "resubscribed"}
RETRY_SECONDS = 1.0
log = logging.getLogger(__name__)


async def subscribe(redis: Redis, *, channels: tuple[str, ...] = (),
                    patterns: tuple[str, ...] = (),
                    retry_seconds: float = RETRY_SECONDS
                    ) -> AsyncGenerator[dict[str, Any], None]:
    """The messages published on `channels` and `patterns`, for as long as the caller iterates,
    across Redis outages: a lost connection is logged and subscribed again (every
    `retry_seconds` until Redis answers), and then `RESUBSCRIBED` is yielded, because pub/sub is
    not durable: whatever was published meanwhile is gone, and the listener must catch up from
    the database (the timeline is durable, the notification is not). The one listening
    mechanism of the app: the call's step follower, the node commands, the live pages and the
    channels' wake-up all use it."""
    lost = False
    while True:
        pubsub = redis.pubsub()
        try:
            if channels:
                await pubsub.subscribe(*channels)
            if patterns:
                await pubsub.psubscribe(*patterns)
            if lost:
                log.info("subscribed again to %s", channels + patterns)
                yield RESUBSCRIBED
                lost = False
            async for message in pubsub.listen():
                if message.get("type") in ("message", "pmessage"):
                    yield message
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            if not lost:
                log.warning("lost the subscription to %s (%s); subscribing again",
                            channels + patterns, error)
            lost = True
        finally:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await pubsub.aclose()
        await asyncio.sleep(retry_seconds)
