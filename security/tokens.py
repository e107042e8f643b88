"""Bearer tokens kept in Redis with an expiry: staff logins and customer H5 sessions (R-50)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenStore:
    """Stores only the SHA-256 of each token, so a Redis dump does not reveal live tokens."""

    redis: Redis
    namespace: str
    ttl_seconds: int

    def _key(self, token: str) -> str:
        return f"{self.namespace}:{token_digest(token)}"

    async def issue(self, claims: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        await self.redis.set(self._key(token), json.dumps(claims), ex=self.ttl_seconds)
        return token

    async def resolve(self, token: str) -> dict[str, Any] | None:
        if not token or len(token) > 200:
            return None
        raw = await self.redis.get(self._key(token))
        return json.loads(raw) if raw else None

    async def revoke(self, token: str) -> None:
        await self.redis.delete(self._key(token))
