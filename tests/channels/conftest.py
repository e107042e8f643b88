"""Fixtures for the channel tests: a fake WeChat API server (wechatpy pointed at it through the
settings), a fake bank backend that verifies our signed webhooks, and `Kit`, which builds and
encrypts incoming messages with wechatpy's own crypto, exactly as WeChat's servers send them."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import xmltodict
from aiohttp import web
from aiohttp.test_utils import TestServer
from wechatpy.crypto import WeChatCrypto

from bot.runtime import CHANNELS, Channels, run_once
from models.channels import WechatUser
from security.partner_signing import NonceStore, SignatureError, signed_headers, verify_request
from tests.channels.fake_wechat import FakeWeChat
from tests.harness import Harness

APP_ID = "wx5c3a9e0f1b2d4e6a"
APP_SECRET = "3f2b9c8d7e6f5a4b3c2d1e0f9a8b7c6d"
MP_APP_ID = "wx7d1e2f3a4b5c6d7e"
MP_SECRET = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
TOKEN = "shuangluTestToken2026"
AES_KEY = base64.b64encode(hashlib.sha256(b"shuanglu-test-aes").digest()).decode()[:43]
GH_ID = "gh_3a1b2c3d4e5f"
BANK_CLIENT = "demo-bank"
BANK_API_SECRET = "bank-api-secret-for-tests-0123456789abcdef"
BANK_WEBHOOK_SECRET = "bank-webhook-secret-for-tests-0123456789ab"
_msg_ids = itertools.count(int(time.time()) * 1000)


def openid(name: str) -> str:
    """A realistic 28-character openid for a named test user."""
    return "o" + hashlib.sha256(name.encode()).hexdigest()[:27]


@dataclass
class FakeBank:
    """The bank app's backend receiving our status webhooks, with the reference verifier."""

    redis: aioredis.Redis
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    attempts: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        try:
            await verify_request(
                request.headers, request.method, request.path_qs, body, BANK_WEBHOOK_SECRET,
                NonceStore(self.redis, "fakebank:nonce", 900), 300, int(time.time()))
        except SignatureError as exc:
            self.rejected.append(exc.code)
            return web.json_response({"error": exc.code}, status=401)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": "busy"}, status=500)
        self.received.append({"headers": dict(request.headers), "raw": body,
                              "path": request.path_qs, "body": json.loads(body)})
        return web.json_response({"ok": True})


@pytest_asyncio.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    fake = FakeWeChat()
    fake.register_app(APP_ID, APP_SECRET)
    fake.register_app(MP_APP_ID, MP_SECRET)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


@pytest_asyncio.fixture
async def fake_bank(redis_url: str) -> AsyncIterator[FakeBank]:
    client = aioredis.from_url(redis_url)
    bank = FakeBank(client)
    app = web.Application()
    app.router.add_post("/hooks/shuanglu", bank.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    bank.url = str(server.make_url("/hooks/shuanglu?tenant=demo"))
    try:
        yield bank
    finally:
        await server.close()
        await client.aclose()


@pytest.fixture
def channel_env() -> dict[str, str]:
    """Extra channel settings for one test (override in a test module)."""
    return {}


@pytest.fixture
def settings_overrides(
    fake_wechat: FakeWeChat, fake_bank: FakeBank, monkeypatch: pytest.MonkeyPatch,
    channel_env: dict[str, str],
) -> dict[str, object]:
    """Points the app's channel settings at the fakes before the harness starts the app."""
    env = {
        "SHUANGLU_WECHAT_APP_ID": APP_ID, "SHUANGLU_WECHAT_APP_SECRET": APP_SECRET,
        "SHUANGLU_WECHAT_TOKEN": TOKEN, "SHUANGLU_WECHAT_ENCODING_AES_KEY": AES_KEY,
        "SHUANGLU_WECHAT_MP_APP_ID": MP_APP_ID, "SHUANGLU_WECHAT_MP_APP_SECRET": MP_SECRET,
        "SHUANGLU_WECHAT_API_BASE_URL": fake_wechat.url,
        "SHUANGLU_WECHAT_MESSAGE_MODE": "compatible",
        "SHUANGLU_CHANNELS_RUN_WORKER": "false",
        "SHUANGLU_BANK_WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
        "SHUANGLU_BANK_CLIENTS": json.dumps({BANK_CLIENT: {
            "institution": "DEMO-BANK", "api_secret": BANK_API_SECRET,
            "webhook_secret": BANK_WEBHOOK_SECRET, "webhook_url": fake_bank.url,
            "deep_link_base": "demobank://shuanglu/open",
        }}),
        **channel_env,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {}


@dataclass
class Reply:
    status: int
    text: str
    content: str  # the text of the passive reply, "" when there is none
    encrypted: bool


@dataclass
class Kit:
    h: Harness
    fake: FakeWeChat
    bank: FakeBank
    crypto: WeChatCrypto = field(default_factory=lambda: WeChatCrypto(TOKEN, AES_KEY, APP_ID))

    @property
    def channels(self) -> Channels:
        return self.h.app[CHANNELS]  # type: ignore[no-any-return]

    async def run_worker(self) -> dict[str, int]:
        return await run_once(self.channels)

    # -- building messages as WeChat does ----------------------------------------------------
    @staticmethod
    def text_xml(user: str, content: str, msg_id: int | None = None,
                 create_time: int | None = None) -> str:
        return (f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName>"
                f"<FromUserName><![CDATA[{user}]]></FromUserName>"
                f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
                f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
                f"<MsgId>{msg_id or next(_msg_ids)}</MsgId></xml>")

    @staticmethod
    def event_xml(user: str, event: str, key: str | None = None,
                  create_time: int | None = None, **extra: str) -> str:
        parts = [f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName>",
                 f"<FromUserName><![CDATA[{user}]]></FromUserName>",
                 f"<CreateTime>{create_time or int(time.time())}</CreateTime>",
                 "<MsgType><![CDATA[event]]></MsgType>",
                 f"<Event><![CDATA[{event}]]></Event>"]
        if key is not None:
            parts.append(f"<EventKey><![CDATA[{key}]]></EventKey>")
        parts += [f"<{k}>{v}</{k}>" for k, v in extra.items()]
        return "".join(parts) + "</xml>"

    def signed_query(self, timestamp: str | None = None, nonce: str | None = None,
                     user: str = "") -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        # WeChat's own scheme: SHA-1 of the sorted token, timestamp and nonce.
        joined = "".join(sorted([TOKEN, timestamp, nonce])).encode()
        signature = hashlib.sha1(joined, usedforsecurity=False).hexdigest()
        return {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": user}

    def encrypt(self, xml: str, query: dict[str, str]) -> str:
        """The body WeChat posts in safe mode: ToUserName and Encrypt, with msg_signature
        and encrypt_type=aes added to the query."""
        packed = xmltodict.parse(self.crypto.encrypt_message(xml, query["nonce"],
                                                             query["timestamp"]))["xml"]
        query["encrypt_type"] = "aes"
        query["msg_signature"] = packed["MsgSignature"]
        return (f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName>"
                f"<Encrypt><![CDATA[{packed['Encrypt']}]]></Encrypt></xml>")

    async def post_raw(self, body: bytes | str, query: dict[str, str],
                       headers: dict[str, str] | None = None) -> tuple[int, str]:
        async with self.h.client.post("/api/v1/wechat/callback", params=query, data=body,
                                      headers={"Content-Type": "text/xml", **(headers or {})}
                                      ) as resp:
            return resp.status, await resp.text()

    async def post(self, xml: str, *, encrypted: bool = True) -> Reply:
        user = str(xmltodict.parse(xml)["xml"]["FromUserName"])
        query = self.signed_query(user=user)
        body = self.encrypt(xml, query) if encrypted else xml
        status, text = await self.post_raw(body, query)
        return Reply(status, text, self.reply_content(text) if status == 200 else "",
                     encrypted)

    def reply_content(self, text: str) -> str:
        if text in ("", "success"):
            return ""
        outer = xmltodict.parse(text)["xml"]
        if "Encrypt" in outer:
            inner = self.crypto.decrypt_message(text, outer["MsgSignature"],
                                                outer["TimeStamp"], outer["Nonce"])
            outer = xmltodict.parse(inner)["xml"]
        assert outer["MsgType"] == "text"
        return str(outer["Content"])

    async def say(self, user: str, text: str, *, encrypted: bool = True) -> str:
        """A customer writes `text`; returns the passive reply's text."""
        self.fake.recent.add(user)
        reply = await self.post(self.text_xml(user, text), encrypted=encrypted)
        assert reply.status == 200, reply.text
        return reply.content

    async def event(self, user: str, event: str, key: str | None = None, **extra: str) -> str:
        reply = await self.post(self.event_xml(user, event, key, None, **extra))
        assert reply.status == 200, reply.text
        return reply.content

    # -- the bank's signed calls -------------------------------------------------------------
    async def bank_call(self, method: str, path: str, body: dict[str, Any] | None = None,
                        *, secret: str = BANK_API_SECRET, headers: dict[str, str] | None = None,
                        ) -> tuple[int, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        full = "/api/v1" + path
        signed = headers or signed_headers(BANK_CLIENT, secret, method, full, raw,
                                           int(time.time()))
        all_headers = {**signed, **({"Content-Type": "application/json"} if body else {})}
        async with self.h.client.request(method, full, data=raw or None,
                                         headers=all_headers) as resp:
            return resp.status, await resp.json(content_type=None)

    # -- customers and agents ----------------------------------------------------------------
    async def follower_customer(self, session_id: str, user: str) -> None:
        """Makes `user` a follower already known to be the customer of this session's order
        (as after an earlier verified open), so the invitation can be a template message."""
        from models.sales import Order
        from models.sessions import RecordingSession

        session = await RecordingSession.get(id=session_id)
        order = await Order.get(id=session.order_id)
        await WechatUser.update_or_create(
            app_id=APP_ID, openid=user,
            defaults={"customer_id": order.customer_id, "subscribed": True})
        self.fake.followers.add(user)

    async def open_wechat(self, link: str, user: str, unionid: str | None = None) -> Any:
        """The customer taps the link: WeChat authorises, the H5 page posts ref + code."""
        ref = ref_from_link(link)
        code = self.fake.code_for(user, unionid)
        return await self.h.request("POST", "/wechat/invitations/open",
                                    json={"ref": ref, "code": code})

    async def bind_agent(self, username: str, user: str) -> None:
        r = await self.h.as_(username, "POST", "/channels/agent/wechat-binding")
        assert r.status == 201, r.body
        self.fake.followers.add(user)
        await self.event(user, "subscribe")
        reply = await self.say(user, f"绑定 {r.body['code']}")
        assert "绑定成功" in reply, reply


def ref_from_link(link: str) -> str:
    """The ref inside a WeChat link (an authorise URL whose redirect_uri is the H5 page)."""
    query = parse_qs(urlsplit(link).query)
    target = query["redirect_uri"][0] if "redirect_uri" in query else link
    return urlsplit(target).path.rsplit("/", 1)[-1]


@pytest.fixture
def kit(harness: Harness, fake_wechat: FakeWeChat, fake_bank: FakeBank) -> Kit:
    return Kit(harness, fake_wechat, fake_bank)
