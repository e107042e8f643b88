"""Several app nodes behind a load balancer: which node holds a session's call room, and what
happens when a request for the call reaches another node or the holding node dies (R-30).

* Every node announces itself in Redis (``shuanglu:node:<id>`` = its internal URL, with a
  short expiry refreshed by a heartbeat). A node whose key expired is dead.
* The node that opens a session's call room records itself as the room's owner
  (``shuanglu:call-owner:<session>``), atomically: an owner that is alive is never replaced.
  The record is removed when the room closes.
* Call requests carry the session in their URL (``/api/v1/calls/<session>/…``), so a load
  balancer can hash on it (HAProxy ``balance uri`` over the path with ``hash-type consistent``,
  see ``deploy/haproxy.cfg``) and both parties reach the same node. A call request that still
  reaches a node that does not own the room is forwarded to the owner over HTTP (its internal
  URL); the caller sees the owner's answer. Nothing else about a call needs the owner: actions
  that must close the room there (complete, abort) send a command on Redis and wait for it.
* A node watches the others: the room of a dead owner is gone, so its session is interrupted
  (within the heartbeat expiry plus one check), the owner record dropped and the dead node's
  unfinished recording files salvaged; the parties rejoin through any live node, which becomes
  the new owner, and the call resumes (断点续录).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from workflow.events import RESUBSCRIBED, subscribe

log = logging.getLogger(__name__)

NODE_KEY = "shuanglu:node:"
OWNER_KEY = "shuanglu:call-owner:"
COMMANDS = "shuanglu:node-commands:"
RECOVERY_LOCK = "shuanglu:call-recovery:"
FORWARDED_HEADER = "X-Shuanglu-Forwarded-By"
# Hop-by-hop and length headers are not copied when a request is forwarded or answered.
_SKIP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                           "keep-alive", "content-encoding"})

# Claims the room for ARGV[1] unless another node holds it (a dead owner's room is recovered
# and released first, `Rooms.recover`); returns the owner.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
# Drops the owner record only if it still names ARGV[1].
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    url: str  # where other nodes reach this one (internal)


def default_node(host: str, port: int, node_id: str | None, node_url: str | None) -> NodeInfo:
    """This process's identity: configured, else host name and process id (a restarted process
    is a new node; the rooms of the old one are recovered like those of any dead node)."""
    name = node_id or f"{socket.gethostname()}-{os.getpid()}"
    wildcard = host in ("0.0.0.0", "::", "")  # noqa: S104 - recognising it, not binding
    reachable = socket.gethostname() if wildcard else host
    return NodeInfo(name, (node_url or f"http://{reachable}:{port}").rstrip("/"))


class Cluster:
    """This node's membership: heartbeat, room ownership, forwarding and commands."""

    def __init__(self, redis: Redis, node: NodeInfo, *, ttl_seconds: float = 6.0) -> None:
        self.redis = redis
        self.node = node
        self.ttl = ttl_seconds
        self._http: aiohttp.ClientSession | None = None

    # -- membership ---------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        await self.redis.set(NODE_KEY + self.node.node_id, self.node.url,
                             px=int(self.ttl * 1000))

    async def leave(self) -> None:
        await self.redis.delete(NODE_KEY + self.node.node_id)

    async def node_url(self, node_id: str) -> str | None:
        url = await self.redis.get(NODE_KEY + node_id)
        return url.decode() if isinstance(url, bytes) else url

    # -- room ownership -----------------------------------------------------------------------

    async def owner(self, session_id: str) -> str | None:
        value = await self.redis.get(OWNER_KEY + session_id)
        return value.decode() if isinstance(value, bytes) else value

    async def claim(self, session_id: str) -> str:
        """Takes the room for this node unless a node holds it; returns the owner."""
        owner = await self.redis.eval(_CLAIM, 1, OWNER_KEY + session_id,  # type: ignore[misc]
                                      self.node.node_id)
        return owner.decode() if isinstance(owner, bytes) else str(owner)

    async def release(self, session_id: str, node_id: str | None = None) -> None:
        await self.redis.eval(_RELEASE, 1, OWNER_KEY + session_id,  # type: ignore[misc]
                              node_id or self.node.node_id)

    async def owned_rooms(self) -> dict[str, str]:
        """Every owner record in the cluster: session → node."""
        rooms: dict[str, str] = {}
        async for key in self.redis.scan_iter(match=OWNER_KEY + "*", count=500):
            name = key.decode() if isinstance(key, bytes) else key
            owner = await self.redis.get(name)
            if owner is not None:
                rooms[name[len(OWNER_KEY):]] = owner.decode() if isinstance(owner, bytes) \
                    else owner
        return rooms

    # -- requests for a room held elsewhere --------------------------------------------------

    async def forward(self, request: web.Request, owner: str) -> web.Response:
        """Sends the request to the node that owns the room and answers with its response."""
        url = await self.node_url(owner)
        if url is None:
            raise OwnerGone(owner)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS}
        headers[FORWARDED_HEADER] = self.node.node_id
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            async with self._http.request(request.method, url + request.path_qs, data=body,
                                          headers=headers) as response:
                payload = await response.read()
                answer = {k: v for k, v in response.headers.items()
                          if k.lower() not in _SKIP_HEADERS}
                return web.Response(status=response.status, body=payload, headers=answer)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise OwnerGone(owner) from error

    # -- commands to the owner ------------------------------------------------------------------

    async def command(self, owner: str, op: str, session_id: str,
                      wait_seconds: float = 20.0) -> bool:
        """Asks the owner node to do `op` on its room (e.g. close it) and waits for it to say
        it did; False when it did not answer in time."""
        reply = f"shuanglu:node-reply:{uuid.uuid4().hex}"
        message = json.dumps({"op": op, "session_id": session_id, "reply": reply})
        if not await self.redis.publish(COMMANDS + owner, message):
            return False  # nobody listens: the node is gone
        answer = await self.redis.blpop([reply], timeout=wait_seconds)  # type: ignore[arg-type]
        return answer is not None

    async def serve_commands(self, handle: Callable[[str, str], Awaitable[None]]) -> None:
        """Runs `handle(op, session_id)` for each command sent to this node, then replies.
        Subscribed again after a Redis outage (a command sent meanwhile got no reply: its
        sender gave up and treats the node as gone, as it must)."""
        async for message in subscribe(self.redis, channels=(COMMANDS + self.node.node_id,)):
            if message is RESUBSCRIBED:
                continue
            try:
                command = json.loads(message["data"])
                await handle(str(command["op"]), str(command["session_id"]))
            except Exception:
                log.exception("node command %r failed", message.get("data"))
                continue
            try:
                await self.redis.lpush(command["reply"], "done")
                await self.redis.expire(command["reply"], 60)
            except (RedisError, OSError) as error:  # the sender times out and gives up
                log.warning("could not reply to node command %s: %s", command, error)

    async def try_recovery_lock(self, session_id: str, seconds: int = 60) -> bool:
        """One node recovers a dead owner's room."""
        return bool(await self.redis.set(RECOVERY_LOCK + session_id, self.node.node_id,
                                         nx=True, ex=seconds))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class OwnerGone(RuntimeError):
    """The node that owns the room did not answer (it died meanwhile)."""


async def beat(cluster: Cluster, interval: float, stop: asyncio.Event) -> None:
    """Keeps this node announced until `stop` is set. (A stop event, not only cancellation:
    a cancellation that arrives during the Redis call can be swallowed by the client, and
    a heartbeat loop that missed it would keep the app from shutting down.)"""
    while not stop.is_set():
        try:
            await cluster.heartbeat()
        except Exception as error:  # Redis away for a moment: the next beat may succeed
            log.warning("node heartbeat failed: %s", error)
        try:
            async with asyncio.timeout(interval):
                await stop.wait()
        except TimeoutError:
            pass
