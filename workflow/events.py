"""Live session events on Redis pub/sub, published after the transaction that wrote them commits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Protocol
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
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

RESUBSCRIBED: dict[str, Any] = {"type": "resubscribed"}
RETRY_SECONDS = 1.0
log = logging.getLogger(__name__)


class ChannelSet:
    """The channels a `subscribe_to` listener wants, changed while it listens (the step
    follower's: the sessions whose call room is on this node, instead of every session's events
    on every node, issue 14). `add` returns once Redis has made the subscription (at most
    `wait_seconds`: during an outage the next connection makes it, and the listener is told
    `RESUBSCRIBED`)."""

    def __init__(self) -> None:
        self.channels: set[str] = set()
        self._pubsub: PubSub | None = None  # the listener's current connection
        self._confirmed: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Event()

    async def add(self, channel: str, wait_seconds: float = 2.0) -> None:
        await self.add_all((channel,), wait_seconds)

    async def add_all(self, channels: Iterable[str], wait_seconds: float = 2.0) -> None:
        """`add` for several channels: one SUBSCRIBE, one wait for all of them."""
        new = [channel for channel in dict.fromkeys(channels) if channel not in self.channels]
        if not new:
            return
        self.channels.update(new)
        confirmed = [self._confirmed.setdefault(channel, asyncio.Event()) for channel in new]
        self._changed.set()
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):  # lost: subscribed on reconnecting
                await self._pubsub.subscribe(*new)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                for event in confirmed:
                    await event.wait()

    async def discard(self, channel: str) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        self._confirmed.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    def _connected(self, pubsub: PubSub | None) -> None:
        self._pubsub = pubsub
        if pubsub is None:  # confirmations are per connection
            for confirmed in self._confirmed.values():
                confirmed.clear()

    def _subscribed(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        confirmed = self._confirmed.get(name)
        if confirmed is not None:
            confirmed.set()

    async def _wait_for_channels(self) -> None:
        while not self.channels:
            self._changed.clear()
            await self._changed.wait()


async def subscribe(redis: Redis, *, channels: tuple[str, ...] = (),
                    patterns: tuple[str, ...] = (),
                    retry_seconds: float = RETRY_SECONDS
                    ) -> AsyncGenerator[dict[str, Any], None]:
    """The messages published on `channels` and `patterns`, for as long as the caller iterates,
    across Redis outages: a lost connection is logged and subscribed again (every
    `retry_seconds` until Redis answers), and then `RESUBSCRIBED` is yielded, because pub/sub is
    not durable: whatever was published meanwhile is gone, and the listener must catch up from
    the database (the timeline is durable, the notification is not). The one listening
    mechanism of the app: the call's step follower (`subscribe_to`), the node commands, the
    live pages and the channels' wake-up all use it."""
    async for message in _listen(redis, channels, patterns, None, retry_seconds):
        yield message


async def subscribe_to(redis: Redis, wanted: ChannelSet, retry_seconds: float = RETRY_SECONDS
                       ) -> AsyncGenerator[dict[str, Any], None]:
    """`subscribe` for a set of channels that changes while listening (`ChannelSet`); with no
    channel wanted, no connection is held."""
    async for message in _listen(redis, (), (), wanted, retry_seconds):
        yield message


async def _listen(redis: Redis, channels: tuple[str, ...], patterns: tuple[str, ...],
                  wanted: ChannelSet | None, retry_seconds: float
                  ) -> AsyncGenerator[dict[str, Any], None]:
    lost = False
    while True:
        if wanted is not None:
            await wanted._wait_for_channels()
        pubsub = redis.pubsub()
        names = channels + patterns
        try:
            if wanted is not None:
                names = tuple(wanted.channels)
                await pubsub.subscribe(*names)  # connects
                # From here `add` subscribes on this connection itself; what was added while
                # connecting is subscribed now.
                wanted._connected(pubsub)
                added = wanted.channels.difference(names)
                if added:
                    await pubsub.subscribe(*added)
            if channels:
                await pubsub.subscribe(*channels)
            if patterns:
                await pubsub.psubscribe(*patterns)
            if lost:
                log.info("subscribed again to %s", names)
                yield RESUBSCRIBED
                lost = False
            async for message in pubsub.listen():
                kind = message.get("type")
                if kind in ("message", "pmessage"):
                    yield message
                elif kind == "subscribe" and wanted is not None:
                    wanted._subscribed(message["channel"])
            if wanted is not None:
                continue  # every channel was let go: wait for the next one (in `finally` first)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            if not lost:
                log.warning("lost the subscription to %s (%s); subscribing again", names, error)
            lost = True
        finally:
            if wanted is not None:
                wanted._connected(None)
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await pubsub.aclose()
        await asyncio.sleep(retry_seconds)
