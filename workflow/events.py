"""Live session events on Redis pub/sub, published after the transaction that wrote them commits."""

from __future__ import annotations

import json
from typing import Any, Protocol
from uuid import UUID

from redis.asyncio import Redis


def channel_for(session_id: UUID | str) -> str:
    return f"session-events:{session_id}"


class EventPublisher(Protocol):
    async def publish(self, session_id: UUID, event: dict[str, Any]) -> None: ...


class RedisEventPublisher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def publish(self, session_id: UUID, event: dict[str, Any]) -> None:
        await self.redis.publish(channel_for(session_id), json.dumps(event, ensure_ascii=False))
