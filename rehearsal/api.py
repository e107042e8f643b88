"""The two ways a page talks to the server: JSON over HTTP (`ApiClient`, problem documents
become `Refused` with the server's Chinese reason) and the live socket (`LiveFeed`: the
session's snapshots and events as GET /api/v1/live pushes them, with a periodic HTTP refresh so a
lost socket message never stalls a party)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from infra.tasks import cancel_and_wait

log = logging.getLogger(__name__)
Snapshot = dict[str, Any]


# Tries of a request whose connection broke (see ApiClient.call).
CONNECTION_TRIES = 5


class RehearsalError(Exception):
    """The rehearsal cannot go on; the message says what happened (and what to do)."""


class Refused(RehearsalError):
    """The server refused a request: its HTTP status, English code and Chinese reason."""

    def __init__(self, method: str, path: str, status: int, code: str, detail: str,
                 body: Any) -> None:
        self.method, self.path, self.status = method, path, status
        self.code, self.detail, self.body = code, detail, body
        super().__init__(f"{method} {path} refused: {status} {code}「{detail}」")


class ApiClient:
    """JSON calls to /api/v1 of one server, as one party (its own connection pool)."""

    def __init__(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api = self.base_url + "/api/v1"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, *, token: str | None = None,
                   json_body: Any = None, data: bytes | None = None,
                   content_type: str | None = None) -> Any:
        """The response's JSON; a problem document raises `Refused`.

        A connection that breaks (the node behind the load balancer died, a network blip) is
        tried again a few times, as a person taps again when a page says the network failed:
        the server's writes are safe to repeat (answers carry their client event id; anything
        that already happened is refused with a reason the party handles)."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in range(1, CONNECTION_TRIES + 1):
            try:
                async with self._session.request(method, self.api + path, json=json_body,
                                                 data=data, headers=headers) as response:
                    text = await response.text()
                    body: Any = json.loads(text) if text else None
                break
            except aiohttp.ClientConnectionError as error:
                if attempt == CONNECTION_TRIES:
                    raise RehearsalError(
                        f"{method} {self.api}{path}: the server does not answer ({error}); "
                        "is it running (bin/serve) at this address?") from error
                log.info("%s %s: %s; trying again", method, path, error)
                await asyncio.sleep(attempt)
            except TimeoutError as error:
                raise RehearsalError(f"{method} {self.api}{path}: the server did not answer "
                                     "in time") from error
            except json.JSONDecodeError as error:
                raise RehearsalError(f"{method} {path}: not JSON ({response.status})") from error
        if response.status >= 400:
            problem = body if isinstance(body, dict) else {}
            raise Refused(method, path, response.status, str(problem.get("code", "")),
                          str(problem.get("detail") or problem.get("title") or text[:200]),
                          body)
        return body

    async def get_bytes(self, path: str, *, token: str | None = None) -> bytes:
        """A binary resource (e.g. a document page the customer's page shows)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._session.get(self.api + path, headers=headers) as response:
                data = await response.read()
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise RehearsalError(f"GET {self.api}{path}: the server does not answer") from error
        if response.status >= 400:
            raise Refused("GET", path, response.status, "", data[:200].decode(errors="replace"),
                          None)
        return data

    async def socket(self) -> aiohttp.ClientWebSocketResponse:
        url = self.api.replace("http", "ws", 1) + "/live"
        return await self._session.ws_connect(url, heartbeat=20)


class LiveFeed:
    """The session as a page sees it: the latest snapshot and the events since the feed
    started, pushed by the live socket (reconnected when it drops) and refreshed over HTTP
    every `refresh_s` in case a message was lost. `wait_for` is how a party waits: always
    bounded, naming what did not happen."""

    def __init__(self, client: ApiClient, auth: dict[str, Any],
                 refresh: Callable[[], Awaitable[Snapshot]], *, refresh_s: float = 5.0,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._client = client
        self._auth = auth
        self._refresh = refresh
        self._refresh_s = refresh_s
        self._on_event = on_event
        self.snapshot: Snapshot = {}
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None

    async def start(self) -> Snapshot:
        self.update(await self._refresh())
        self._task = asyncio.create_task(self._follow())
        return self.snapshot

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, "rehearsal follower")

    def update(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.poke()

    def poke(self) -> None:
        """Wake every waiter (a new snapshot, or something a party did on its side)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def next_change(self, timeout_s: float) -> bool:
        """Waits for the next snapshot (or poke); refreshes over HTTP when none came."""
        changed = self._changed
        try:
            async with asyncio.timeout(timeout_s):
                await changed.wait()
            return True
        except TimeoutError:
            return False

    async def wait_for(self, what: str, predicate: Callable[[Snapshot], bool],
                       timeout_s: float) -> Snapshot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self._fatal is not None:
                raise RehearsalError(str(self._fatal))
            if self.snapshot and predicate(self.snapshot):
                return self.snapshot
            left = deadline - loop.time()
            if left <= 0:
                state = self.snapshot.get("state_label") or self.snapshot.get("state")
                raise RehearsalError(f"waited {timeout_s:.0f} s for {what}; the session is "
                                     f"still「{state}」")
            if not await self.next_change(min(left, self._refresh_s)):
                self.update(await self._refresh())

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                ws = await self._client.socket()
            except (aiohttp.ClientError, TimeoutError) as error:
                log.info("live socket: %s; again in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                await ws.send_json(self._auth)
                delay = 0.5
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    self._on_message(json.loads(message.data))
            finally:
                await ws.close()
            if self._fatal is not None:
                self.poke()
                return
            await asyncio.sleep(delay)

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == "snapshot":
            self.update(message["session"])
        elif message.get("type") == "event":
            self.events.append(message["event"])
            if self._on_event is not None:
                self._on_event(message["event"])
        elif message.get("type") == "error":
            self._fatal = RehearsalError(f"the live socket refused us:「{message.get('detail')}」")
