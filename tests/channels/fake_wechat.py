"""A local stand-in for WeChat's server API (api.weixin.qq.com), speaking its request and
response formats and error codes, so wechatpy talks to it exactly as it would to WeChat.

Implemented: cgi-bin/token, message/template/send, message/custom/send (text and
miniprogrampage cards),
message/subscribe/bizsend (official account), message/subscribe/send (mini-program),
qrcode/create, sns/jscode2session, sns/oauth2/access_token. Switches let a test expire or
invalidate tokens (42001 / 40001), close the 48-hour window (45015), make a user refuse
subscribe messages (43101) or WeChat fail (-1).
"""

from __future__ import annotations

import itertools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERRORS = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    42001: "access_token expired",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    45015: "response out of time limit or subscription is canceled",
    47001: "data format error",
}


@dataclass
class App:
    app_id: str
    secret: str


@dataclass
class FakeWeChat:
    apps: dict[str, App] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> app_id
    expired: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    followers: set[str] = field(default_factory=set)
    # Users who wrote to the account in the last 48 h (customer-service messages allowed).
    recent: set[str] = field(default_factory=set)
    subscribers: set[str] = field(default_factory=set)  # accepted subscribe messages
    # code -> {"openid", "unionid"} for jscode2session and web authorisation
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    used_codes: set[str] = field(default_factory=set)
    fail_next: dict[str, list[int]] = field(default_factory=dict)  # path -> errcodes
    always_invalid: bool = False
    token_fetches: int = 0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(400000001))

    # -- switches ----------------------------------------------------------------------------
    def register_app(self, app_id: str, secret: str) -> None:
        self.apps[app_id] = App(app_id, secret)

    def expire_tokens(self) -> None:
        self.expired |= set(self.tokens)

    def invalidate_tokens(self) -> None:
        self.invalid |= set(self.tokens)

    def code_for(self, openid: str, unionid: str | None = None) -> str:
        code = "0" + secrets.token_hex(15)
        self.codes[code] = {"openid": openid, **({"unionid": unionid} if unionid else {})}
        return code

    def sent(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.calls if p == path]

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _error(code: int) -> web.Response:
        return web.json_response({"errcode": code, "errmsg": f"{ERRORS.get(code, 'error')} "
                                  f"rid: {secrets.token_hex(6)}"})

    def _check_token(self, request: web.Request) -> int:
        token = request.query.get("access_token", "")
        if self.always_invalid or token in self.invalid or token not in self.tokens:
            return 40001
        if token in self.expired:
            return 42001
        return 0

    async def _api(self, request: web.Request, path: str) -> tuple[dict[str, Any], int]:
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}, 47001
        self.calls.append((path, body))
        error = self._check_token(request)
        if error:
            return body, error
        queued = self.fail_next.get(path)
        if queued:
            return body, queued.pop(0)
        return body, 0

    # -- endpoints ---------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        q = request.query
        app = self.apps.get(q.get("appid", ""))
        if q.get("grant_type") != "client_credential":
            return self._error(40002)
        if app is None:
            return self._error(40013)
        if q.get("secret") != app.secret:
            return self._error(40125)
        self.token_fetches += 1
        token = secrets.token_urlsafe(48)
        self.tokens[token] = app.app_id
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def template_send(self, request: web.Request) -> web.Response:
        body, error = await self._api(request, "template/send")
        if error:
            return self._error(error)
        if body.get("touser") not in self.followers:
            return self._error(43004)
        return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": next(self._ids)})

    async def custom_send(self, request: web.Request) -> web.Response:
        body, error = await self._api(request, "custom/send")
        if error:
            return self._error(error)
        if body.get("touser") not in self.recent:
            return self._error(45015)
        if body.get("msgtype") == "miniprogrampage":
            card = body.get("miniprogrampage") or {}
            if not all(card.get(k) for k in ("title", "appid", "pagepath", "thumb_media_id")):
                return self._error(47001)
            if card["appid"] not in self.apps:
                return self._error(40013)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def subscribe_send(self, request: web.Request, path: str) -> web.Response:
        body, error = await self._api(request, path)
        if error:
            return self._error(error)
        if body.get("touser") not in self.subscribers:
            return self._error(43101)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def bizsend(self, request: web.Request) -> web.Response:
        return await self.subscribe_send(request, "subscribe/bizsend")

    async def mp_subscribe(self, request: web.Request) -> web.Response:
        return await self.subscribe_send(request, "subscribe/send")

    async def qrcode_create(self, request: web.Request) -> web.Response:
        body, error = await self._api(request, "qrcode/create")
        if error:
            return self._error(error)
        scene = body.get("action_info", {}).get("scene", {})
        if body.get("action_name") not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE",
                                           "QR_LIMIT_STR_SCENE") or not scene:
            return self._error(40053)
        ticket = "gQ" + secrets.token_urlsafe(40)
        return web.json_response({"ticket": ticket, "expire_seconds": body.get("expire_seconds"),
                                  "url": f"http://weixin.qq.com/q/{secrets.token_hex(10)}"})

    def _redeem(self, request: web.Request, path: str) -> web.Response | dict[str, str]:
        q = request.query
        self.calls.append((path, dict(q)))
        app = self.apps.get(q.get("appid", ""))
        if app is None:
            return self._error(40013)
        if q.get("secret") != app.secret:
            return self._error(40125)
        code = q.get("js_code") or q.get("code") or ""
        if code in self.used_codes:
            return self._error(40163)
        if code not in self.codes:
            return self._error(40029)
        self.used_codes.add(code)
        return self.codes[code]

    async def jscode2session(self, request: web.Request) -> web.Response:
        found = self._redeem(request, "jscode2session")
        if isinstance(found, web.Response):
            return found
        return web.json_response({"session_key": secrets.token_urlsafe(16), **found})

    async def oauth_token(self, request: web.Request) -> web.Response:
        found = self._redeem(request, "oauth2/access_token")
        if isinstance(found, web.Response):
            return found
        return web.json_response({
            "access_token": secrets.token_urlsafe(32), "expires_in": 7200,
            "refresh_token": secrets.token_urlsafe(32), "scope": "snsapi_base",
            "openid": found["openid"], **({"unionid": found["unionid"]}
                                           if "unionid" in found else {}),
        })

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self.token)
        app.router.add_post("/cgi-bin/message/template/send", self.template_send)
        app.router.add_post("/cgi-bin/message/custom/send", self.custom_send)
        app.router.add_post("/cgi-bin/message/subscribe/bizsend", self.bizsend)
        app.router.add_post("/cgi-bin/message/subscribe/send", self.mp_subscribe)
        app.router.add_post("/cgi-bin/qrcode/create", self.qrcode_create)
        app.router.add_get("/sns/jscode2session", self.jscode2session)
        app.router.add_get("/sns/oauth2/access_token", self.oauth_token)
        return app
