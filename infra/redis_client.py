"""Redis clients from REDIS_URL: a plain `redis://` / `rediss://` / `unix://` URL, or Sentinel.

A Sentinel URL names the sentinels and the master's service name; the client asks the
sentinels where the master is and follows a failover (redis-py's `Sentinel`):

    redis+sentinel://[[user]:password@]host:26379[,host2:26379,...]/service_name[/db]
        [?sentinel_password=...&sentinel_username=...&socket_timeout=...]

`password` (and `user`) authenticate with the master; `sentinel_password` with the sentinels
themselves when they require it. `rediss+sentinel://` uses TLS to the master. Redis Cluster is
not supported (the job stream, Lua scripts and pub/sub assume one keyspace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
# What a taskiq broker is built with when the real pool is a Sentinel one (never connected).
BROKER_PLACEHOLDER_URL = "redis://sentinel-managed.invalid:6379/0"


def is_sentinel_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service_name: str
    db: int = 0
    tls: bool = False
    connection: dict[str, Any] = field(default_factory=dict)
    sentinel_auth: dict[str, Any] = field(default_factory=dict)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Splits a `redis+sentinel://` URL; raises ValueError for a malformed one."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL: {parts.scheme}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    connection: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            connection["username"] = unquote(user)
        if password:
            connection["password"] = unquote(password)
    sentinels: list[tuple[str, int]] = []
    for host in filter(None, hosts.split(",")):
        name, sep, port = host.rpartition(":")
        if not sep:
            name, port = host, "26379"
        if not port.isdigit():
            raise ValueError(f"bad sentinel address {host!r} in REDIS_URL")
        sentinels.append((name.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError("a Sentinel URL needs host:port[,host:port...]/service_name[/db]")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("the path of a Sentinel URL is /service_name[/db]")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sentinel_auth = {k.removeprefix("sentinel_"): query.pop(k)
                     for k in ("sentinel_password", "sentinel_username") if k in query}
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key in query:
            connection[key] = float(query.pop(key))
    if query:
        raise ValueError(f"unknown Sentinel URL parameters: {sorted(query)}")
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                          parts.scheme.lower().startswith("rediss"), connection, sentinel_auth)


class _OwningSentinelPool(SentinelConnectionPool):
    """Closes the sentinel connections too when the pool is closed (the client owns both)."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        await self.sentinel_manager.aclose()


class _BoundedSentinelPool(_OwningSentinelPool, BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection (BlockingConnectionPool's
    get_connection and release) instead of failing at its size."""


@dataclass(frozen=True)
class PoolLimits:
    """How many connections a pool may open, how long a caller waits for a free one, and how
    long a command may go unanswered (None: as redis-py, unbounded or no timeout)."""

    max_connections: int | None = None
    wait_seconds: float | None = None
    socket_timeout: float | None = None

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.socket_timeout is not None:
            kwargs["socket_timeout"] = self.socket_timeout
            kwargs["socket_connect_timeout"] = min(self.socket_timeout, 5.0)
        if self.max_connections is not None:
            kwargs["max_connections"] = self.max_connections
        return kwargs


def redis_pool(url: str, limits: PoolLimits | None = None) -> ConnectionPool:
    """A connection pool for REDIS_URL (plain or Sentinel-managed master). With a size and a
    wait in `limits` the pool is bounded: a caller waits up to `wait_seconds` for a free
    connection, then redis-py raises ConnectionError("No connection available.")."""
    limits = limits or PoolLimits()
    bounded = limits.max_connections is not None and limits.wait_seconds is not None
    extra = limits.kwargs()
    if bounded:
        extra["timeout"] = limits.wait_seconds
    if not is_sentinel_url(url):
        if bounded:
            return BlockingConnectionPool.from_url(url, **extra)
        return ConnectionPool.from_url(url, **extra)
    target = parse_sentinel_url(url)
    timeouts = {k: v for k, v in target.connection.items() if k.startswith("socket_")}
    sentinel = Sentinel(target.sentinels, sentinel_kwargs={**timeouts, **target.sentinel_auth})
    kwargs: dict[str, Any] = {
        **extra, **target.connection, "db": target.db, "is_master": True,
        "connection_class": (SentinelManagedSSLConnection if target.tls
                             else SentinelManagedConnection),
    }
    pool_class = _BoundedSentinelPool if bounded else _OwningSentinelPool
    return pool_class(target.service_name, sentinel, **kwargs)


class AppRedis(aioredis.Redis):
    """The app's client: commands share a bounded pool; subscriptions (live pages, node
    commands, the call follower), which hold a connection for as long as they listen, get
    their own pool so that they can never take the connections requests wait for."""

    subscriber_pool: ConnectionPool | None = None

    def pubsub(self, **kwargs: Any) -> PubSub:
        pool = self.subscriber_pool or self.connection_pool
        return PubSub(pool, event_dispatcher=self._event_dispatcher, **kwargs)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.subscriber_pool is not None and close_connection_pool is not False:
            await self.subscriber_pool.aclose()


# Subscriptions are long-lived but few per page; this only guards against a leak.
SUBSCRIBER_CONNECTIONS = 10_000


def redis_client(url: str, limits: PoolLimits | None = None) -> aioredis.Redis:
    """The app's Redis client for REDIS_URL; closing it closes its pools. Without `limits`
    one pool as redis-py makes it (the CLI, the worker's helpers)."""
    if limits is None:
        return aioredis.Redis.from_pool(redis_pool(url))
    client = cast(AppRedis, AppRedis.from_pool(redis_pool(url, limits)))
    client.subscriber_pool = redis_pool(url, PoolLimits(max_connections=SUBSCRIBER_CONNECTIONS))
    return client


def broker_url(url: str) -> str:
    """The URL to build a taskiq Redis broker with; see `use_sentinel_pool`."""
    return BROKER_PLACEHOLDER_URL if is_sentinel_url(url) else url


def use_sentinel_pool(broker: Any, url: str) -> None:
    """Points a taskiq Redis broker at the Sentinel-managed master (no-op for a plain URL).

    taskiq-redis builds its pool from a URL it can parse; a Sentinel URL is not one, so the
    broker is built with `broker_url(url)` and its (unused, unconnected) pool replaced here."""
    if is_sentinel_url(url):
        broker.connection_pool = redis_pool(url)
