"""Fixed-window counters in Redis, shared by every worker process (login throttling, R-50, and
the limits on anonymous endpoints).

`take` counts an attempt *before* the work it guards, in one Lua script: either every counter
is below its limit and all are incremented, or none is and the caller gets the seconds until
the first blocking window ends (the Retry-After). So 30 concurrent wrong passwords check at
most the limit, where a read-then-count let them all through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

# KEYS: the counters; ARGV: limit and window (ms) for each key, in order. Returns 0 when the
# attempt was counted on every key, else the milliseconds until the longest blocking window
# ends (nothing counted then).
_TAKE = """
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[2 * i]) end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
end
return 0
"""
# Gives back one attempt on each key that still exists (never below zero).
_REFUND = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 0 then redis.call('DECR', key) end
end
return 0
"""


# One round trip and one reply to parse, where SET NX + INCR in MULTI took four replies.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_SHAS: dict[str, str] = {}


async def run_script(redis: Redis, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA of a Lua script (its text is sent only the first time a server sees it)."""
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    try:
        return await redis.evalsha(sha, len(keys), *keys, *args)  # type: ignore[misc]
    except NoScriptError:
        return await redis.eval(script, len(keys), *keys, *args)  # type: ignore[misc]


def _seconds(ms: int) -> int:
    return max(1, -(-int(ms) // 1000))


@dataclass(frozen=True)
class RateLimiter:
    redis: Redis
    namespace: str
    limit: int
    window_seconds: int

    def key(self, subject: str) -> str:
        return f"ratelimit:{self.namespace}:{subject}"

    async def blocked_for(self, subject: str) -> int:
        """Seconds until `subject` may try again, 0 when it is not blocked."""
        key = self.key(subject)
        count = await self.redis.get(key)
        if count is None or int(count) < self.limit:
            return 0
        ttl = await self.redis.ttl(key)
        return max(int(ttl), 1)

    async def hit(self, subject: str) -> int:
        """Counts one request and returns the window's count (compare it with `limit`)."""
        return int(await run_script(self.redis, _HIT, [self.key(subject)],
                                    [self.window_seconds * 1000]))

    async def take(self, subject: str) -> int:
        """Counts one attempt unless the limit is reached: 0, or the seconds to wait."""
        return await take_all(self.redis, [(self, subject)])

    async def reset(self, subject: str) -> None:
        await self.redis.delete(self.key(subject))


async def take_all(redis: Redis, counters: Sequence[tuple[RateLimiter, str]]) -> int:
    """Counts one attempt on every (limiter, subject) at once, or on none when any is at its
    limit: 0 when counted, else the seconds until the longest blocking window ends."""
    keys = [limiter.key(subject) for limiter, subject in counters]
    args: list[int] = []
    for limiter, _ in counters:
        args += [limiter.limit, limiter.window_seconds * 1000]
    wait = int(await run_script(redis, _TAKE, keys, args))
    return _seconds(wait) if wait > 0 else 0


async def refund_all(redis: Redis, counters: Sequence[tuple[RateLimiter, str]]) -> None:
    """Gives back an attempt counted by `take_all` (one that was not really made)."""
    keys = [limiter.key(subject) for limiter, subject in counters]
    await run_script(redis, _REFUND, keys, [])


@dataclass(frozen=True)
class LoginThrottle:
    """Login attempts, counted before the password is checked: per user name and address
    (the classic limit), per address (one source trying many names) and per user name (many
    sources trying one account). Unknown names count like known ones."""

    per_user_ip: RateLimiter
    per_ip: RateLimiter
    per_user: RateLimiter

    def _counters(self, username: str, ip: str) -> list[tuple[RateLimiter, str]]:
        name = username.lower()[:64]
        return [(self.per_user_ip, f"{name}|{ip}"), (self.per_ip, ip), (self.per_user, name)]

    async def take(self, username: str, ip: str) -> int:
        """0 when this attempt may go ahead (it is counted), else the seconds to wait."""
        return await take_all(self.per_ip.redis, self._counters(username, ip))

    async def refund(self, username: str, ip: str) -> None:
        """The attempt was never judged (the server was too busy): it does not count."""
        await refund_all(self.per_ip.redis, self._counters(username, ip))

    async def succeeded(self, username: str, ip: str) -> None:
        """A correct password clears the name+address counter and gives back the attempt on
        the others (an office behind one address logs in all day)."""
        user_ip, *others = self._counters(username, ip)
        await user_ip[0].reset(user_ip[1])
        await refund_all(self.per_ip.redis, others)
