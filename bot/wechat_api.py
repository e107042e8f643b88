"""WeChat's server API through wechatpy, called in a thread pool (wechatpy has no asyncio
client), with the access token cached in Redis and shared by every worker process.

A call that fails with an expired or invalid token (40001, 40014, 42001) drops that token,
fetches a new one (one worker fetches, the others wait for it) and is retried exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from redis.asyncio import Redis
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException, WeChatOAuthException
from wechatpy.oauth import WeChatOAuth
from wechatpy.session.memorystorage import MemoryStorage

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# Errors worth retrying later (WeChat busy, rate limited); everything else is final.
TRANSIENT_ERRORS = frozenset({-1, 45009, 45011, 45047})

# Deletes the token only if it is still the one that failed, so that a burst of failures in
# several workers leads to one refresh, not one per worker.
_DELETE_IF_SAME = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class WeChatApiError(Exception):
    """An error answer from WeChat (`errcode`), or None for a transport failure."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"wechat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def transient(self) -> bool:
        return self.errcode is None or self.errcode in TRANSIENT_ERRORS


class PatchedWeChatClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's client with its base URLs taken from the settings.

    wechatpy hard-codes `https://api.weixin.qq.com` in `fetch_access_token` and in the class
    attributes of some API groups (wxa); a test or a proxy deployment points all of them at
    another host here, in one place.
    """

    def __init__(self, app_id: str, secret: str, base_url: str, timeout: float) -> None:
        super().__init__(app_id, secret, session=MemoryStorage(), timeout=timeout,
                         auto_retry=False)
        base = base_url.rstrip("/")
        self.API_BASE_URL = f"{base}/cgi-bin/"
        # API groups with their own class-level base URL (wxa: jscode2session, subscribe send).
        self.wxa.API_BASE_URL = f"{base}/"

    def fetch_access_token(self) -> dict[str, Any]:
        # wechatpy's own fetch has no timeout: a silent network would hold a pool thread.
        res = self._http.get(
            self.API_BASE_URL + "token", timeout=self.timeout,
            params={"grant_type": "client_credential", "appid": self.appid,
                    "secret": self.secret},
        )
        try:
            res.raise_for_status()
        except requests.RequestException as exc:
            raise WeChatClientException(None, None, client=self, request=exc.request,
                                        response=exc.response) from exc
        result: dict[str, Any] = res.json()
        if int(result.get("errcode", 0) or 0) != 0:
            raise WeChatClientException(result["errcode"], result.get("errmsg", ""),
                                        client=self, request=res.request, response=res)
        return result

    def use_token(self, token: str) -> None:
        # expires_at None makes wechatpy take the stored token as given instead of refreshing.
        self.session.set(self.access_token_key, token)
        self.expires_at = None


class PatchedOAuth(WeChatOAuth):  # type: ignore[misc]
    """wechatpy's web-authorisation (网页授权) client, with a configurable API host."""

    def __init__(
        self, app_id: str, secret: str, base_url: str, oauth_base_url: str, timeout: float,
    ) -> None:
        super().__init__(app_id, secret, redirect_uri="", scope="snsapi_base")
        self.API_BASE_URL = base_url.rstrip("/") + "/"
        self.OAUTH_BASE_URL = oauth_base_url
        self.timeout = timeout

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        # wechatpy's OAuth client sets no timeout of its own.
        kwargs.setdefault("timeout", self.timeout)
        return super()._request(method, url_or_endpoint, **kwargs)


@dataclass(frozen=True)
class OAuthIdentity:
    openid: str
    unionid: str | None


@dataclass(frozen=True)
class MiniProgramIdentity:
    openid: str
    unionid: str | None
    session_key: str


class WeChatApi:
    """Async facade over one WeChat app (official account or mini-program)."""

    def __init__(
        self, app_id: str, secret: str, base_url: str, oauth_base_url: str, redis: Redis,
        executor: Executor, timeout: float,
    ) -> None:
        self.app_id = app_id
        self.secret = secret
        self.base_url = base_url
        self.oauth_base_url = oauth_base_url
        self.redis = redis
        self.executor = executor
        self.timeout = timeout
        self.token_key = f"wechat:access_token:{app_id}"
        self._local = threading.local()

    # -- running wechatpy in the pool -------------------------------------------------------
    def _client(self) -> PatchedWeChatClient:
        # One client per thread: a requests.Session is not meant to be shared across threads.
        client = getattr(self._local, "client", None)
        if client is None:
            client = PatchedWeChatClient(self.app_id, self.secret, self.base_url, self.timeout)
            self._local.client = client
        return client

    async def _in_pool(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, fn)
        except (WeChatClientException, WeChatOAuthException) as exc:
            code = int(exc.errcode) if exc.errcode is not None else None
            raise WeChatApiError(code, str(exc.errmsg or "")) from exc
        except requests.RequestException as exc:
            raise WeChatApiError(None, f"transport: {type(exc).__name__}") from exc

    # -- access token ----------------------------------------------------------------------
    async def access_token(self) -> str:
        """The shared token; one worker fetches while the others wait for it (the fetch can take
        seconds under load, and every extra fetch invalidates the token the others hold)."""
        lock_key = self.token_key + ":lock"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        while True:
            cached = await self._cached_token()
            if cached:
                return cached
            lock_id = uuid.uuid4().hex
            if await self.redis.set(lock_key, lock_id, nx=True, px=15_000):
                try:
                    # Another worker may have fetched and released the lock between our read
                    # of the cache and taking the lock: look again before fetching.
                    return await self._cached_token() or await self._fetch_token()
                finally:
                    await self.redis.eval(_DELETE_IF_SAME, 1, lock_key, lock_id)
            # Another worker holds the lock: wait for its token; if it died, its lock expires
            # and the next round fetches.
            if loop.time() > deadline:
                raise WeChatApiError(None, "timed out waiting for the access token")
            await asyncio.sleep(0.05)

    async def _cached_token(self) -> str | None:
        cached = await self.redis.get(self.token_key)
        if not cached:
            return None
        return cached.decode() if isinstance(cached, bytes) else str(cached)

    async def _fetch_token(self) -> str:
        result = await self._in_pool(lambda: self._client().fetch_access_token())
        token = str(result["access_token"])
        expires_in = int(result.get("expires_in", 7200))
        # Refresh well before WeChat's expiry; WeChat keeps the old token valid a while.
        ttl = max(expires_in - 300, 60)
        await self.redis.set(self.token_key, token, ex=ttl)
        log.info("fetched a new WeChat access token for %s (ttl %ss)", self.app_id, ttl)
        return token

    async def drop_token(self, token: str) -> None:
        await self.redis.eval(_DELETE_IF_SAME, 1, self.token_key, token)

    async def call(self, fn: Callable[[PatchedWeChatClient], T]) -> T:
        """Runs `fn(client)` with a valid token; on a token error refreshes once and retries."""
        token = await self.access_token()
        try:
            return await self._call_with(fn, token)
        except WeChatApiError as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
            log.info("WeChat rejected the access token (%s); refreshing once", exc.errcode)
            await self.drop_token(token)
            token = await self.access_token()
            return await self._call_with(fn, token)

    async def _call_with(self, fn: Callable[[PatchedWeChatClient], T], token: str) -> T:
        def run() -> T:
            client = self._client()
            client.use_token(token)
            return fn(client)

        return await self._in_pool(run)

    # -- the calls the channels use ----------------------------------------------------------
    async def send_text(self, openid: str, text: str) -> dict[str, Any]:
        """A customer-service message (客服消息); WeChat allows it within 48 h of the user's
        last message (45015 otherwise)."""
        return await self.call(lambda c: c.message.send_text(openid, text))

    async def send_mp_card(self, openid: str, card: dict[str, str]) -> dict[str, Any]:
        """A mini-program card as a customer-service message (msgtype miniprogrampage:
        title, appid, pagepath, thumb_media_id); the same 48-hour rule as text."""
        return await self.call(lambda c: c.message.send_mini_program_page(openid, card))

    async def send_template(
        self, openid: str, template_id: str, data: dict[str, Any], url: str | None = None,
        mini_program: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return await self.call(
            lambda c: c.message.send_template(openid, template_id, data, url=url,
                                              mini_program=mini_program)
        )

    async def send_subscribe(
        self, openid: str, template_id: str, data: dict[str, Any], page: str | None = None,
    ) -> dict[str, Any]:
        """The official account's subscribe message (订阅通知, bizsend)."""
        return await self.call(
            lambda c: c.message.send_subscribe_message(openid, template_id, data, page=page)
        )

    async def send_mp_subscribe(
        self, openid: str, template_id: str, data: dict[str, Any], page: str | None = None,
    ) -> dict[str, Any]:
        """The mini-program's subscribe message (cgi-bin/message/subscribe/send)."""
        return await self.call(
            lambda c: c.wxa.send_subscribe_message(openid, template_id, data, page=page)
        )

    async def create_qrcode(self, scene: str, expire_seconds: int) -> dict[str, Any]:
        """A temporary QR code whose scan reports `scene` (SCAN / subscribe with qrscene_)."""
        return await self.call(lambda c: c.qrcode.create({
            "expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}},
        }))

    async def code_to_session(self, code: str) -> MiniProgramIdentity:
        """Mini-program login (jscode2session)."""
        result = await self.call(lambda c: c.wxa.code_to_session(code))
        return MiniProgramIdentity(str(result["openid"]), result.get("unionid"),
                                   str(result.get("session_key", "")))

    async def oauth_identity(self, code: str) -> OAuthIdentity:
        """Web authorisation (snsapi_base): the code from the redirect gives the openid."""
        def run() -> dict[str, Any]:
            oauth = PatchedOAuth(self.app_id, self.secret, self.base_url, self.oauth_base_url,
                         self.timeout)
            result: dict[str, Any] = oauth.fetch_access_token(code)
            return result

        result = await self._in_pool(run)
        return OAuthIdentity(str(result["openid"]), result.get("unionid"))

    def authorize_url(self, redirect_uri: str, state: str = "") -> str:
        oauth = PatchedOAuth(self.app_id, self.secret, self.base_url, self.oauth_base_url,
                         self.timeout)
        oauth.redirect_uri = redirect_uri
        oauth.state = state
        return str(oauth.authorize_url)
