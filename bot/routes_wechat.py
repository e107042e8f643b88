"""The official account's endpoints: the message callback (URL verification, messages and
events, replies within WeChat's 5-second limit, retries answered once) and the customer's
open of a WeChat invitation after web authorisation (R-20)."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web
from pydantic import Field

from api.auth import client_ip
from api.http import TextQuery, read_json
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import ChannelCustomerToken, Url
from api.schemas import Body
from api.views import customer_session_view
from bot import dialogue, outbox
from bot import invitations as channel_invitations
from bot.runtime import CHANNELS, Channels
from bot.wechat_api import WeChatApiError
from bot.wechat_inbound import Inbound, InboundRejected, dedup_key
from models.channels import OutboxKind
from security.ratelimit import run_script
from workflow import conversations

log = logging.getLogger(__name__)
api = Api()
REF = TextQuery("ref", 64)
CALLBACK_QUERY = ("signature", "timestamp", "nonce", "echostr", "openid", "encrypt_type",
                  "msg_signature")
# An openid is 28 URL-safe characters; the columns that keep one hold 64.
SENDER = re.compile(r"[A-Za-z0-9_\-]{1,64}")
MSG_ID_MAX = 2**63 - 1  # stored as a bigint (template delivery reports)
PENDING = b"pending"
DONE = b"done:"
# KEYS: the address's counter, the message's dedup key, the sender's counter; ARGV: the
# address's limit and window (ms), pending mark, its ttl (s), the sender's window (ms).
# Every request is counted for its address first; -2 when the address is over its limit
# (nothing claimed: WeChat's retry may come later), -1 when the message was claimed before (a
# retry), else the sender's count. One round trip per message (issue 14).
_CLAIM_AND_COUNT = """
local from_ip = redis.call('INCR', KEYS[1])
if from_ip == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if from_ip > tonumber(ARGV[1]) then return -2 end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4]) then return -1 end
local count = redis.call('INCR', KEYS[3])
if count == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
return count
"""
TOO_MANY = ("too_many_requests", "请求过于频繁，请稍后再试")


def channels_of(request: web.Request) -> Channels:
    channels = request.app[CHANNELS]
    if not channels.config.wechat.enabled:
        raise ApiProblem(404, "channel_disabled", "该渠道未开通")
    return channels


async def limit_ip(channels: Channels, request: web.Request) -> None:
    limiter = channels.limits.ip_messages
    if await limiter.hit(client_ip(request)) > limiter.limit:
        raise ApiProblem(429, *TOO_MANY)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes without reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiProblem(413, "body_too_large", "提交的内容过大")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(8192):
        size += len(chunk)
        if size > limit:
            raise ApiProblem(413, "body_too_large", "提交的内容过大")
        chunks.append(chunk)
    return b"".join(chunks)


@api.endpoint("GET", "/wechat/callback", summary="WeChat server URL verification (echostr)",
              tag="wechat", auth="none", produces="text/plain", query=CALLBACK_QUERY,
              responses={403: "signature invalid", 404: "the channel is off",
                         429: "too many requests from this address"})
async def get_callback(request: web.Request) -> web.Response:
    channels = channels_of(request)
    await limit_ip(channels, request)
    try:
        echostr = channels.codec.verify_url(dict(request.query))
    except InboundRejected as exc:
        raise ApiProblem(exc.status, exc.code, exc.detail) from exc
    return web.Response(text=echostr, content_type="text/plain")


@api.endpoint("POST", "/wechat/callback",
              summary="WeChat messages and events (plain or AES safe mode); passive XML reply",
              tag="wechat", auth="none", produces="application/xml", query=CALLBACK_QUERY,
              responses={400: "malformed or forbidden XML, or a sender or message id out of "
                              "shape", 403: "signature invalid", 404: "the channel is off",
                         413: "too large", 429: "rate limited"})
async def post_callback(request: web.Request) -> web.Response:
    """Every request counts against its address's limit: a message that decodes is counted in
    the same Redis script that claims it (`answer`), one refused before that is counted here
    (and answered 429 when the address is over its limit). The body is read (at most
    `max_message_bytes`) and its signature checked before the count: cheap next to a round
    trip, and no AES is undone for a request that is not signed with our token."""
    channels = channels_of(request)
    try:
        body = await read_limited(request, channels.config.wechat.max_message_bytes)
        try:
            inbound = channels.codec.decode(dict(request.query), body)
        except InboundRejected as exc:
            log.info("refused a WeChat callback from %s: %s", client_ip(request), exc.code)
            raise ApiProblem(exc.status, exc.code, exc.detail) from exc
        check_shape(inbound)
    except ApiProblem:
        await limit_ip(channels, request)
        raise
    reply_xml = await answer(channels, inbound, client_ip(request))
    text = channels.codec.encode(reply_xml, inbound.encrypted)
    ctype = "text/plain" if text == "success" else "application/xml"
    return web.Response(text=text, content_type=ctype)


def check_shape(inbound: Inbound) -> None:
    """A signed message is still input: a sender longer than an openid column or a message id
    beyond a bigint is refused (400) before anything is stored."""
    message = inbound.message
    msg_id = getattr(message, "id", None)
    if not SENDER.fullmatch(str(message.source)) or (
            msg_id is not None and not (isinstance(msg_id, int) and 0 <= msg_id <= MSG_ID_MAX)):
        raise ApiProblem(400, "message_malformed", "消息内容有误")


async def answer(channels: Channels, inbound: Inbound, ip: str) -> str:
    """The plain reply XML ("" for none) for one message from address `ip`, computed once per
    message: WeChat's retries of the same message get the first answer instead of a second
    turn. 429 when the address is over its limit."""
    message = inbound.message
    openid = str(message.source)
    key = f"bot:dedup:{channels.config.app_id}:{dedup_key(message)}"
    ttl = channels.config.wechat.dedup_ttl_seconds
    limiter = channels.limits.openid_messages
    per_ip = channels.limits.ip_messages
    # Counting the address, claiming the message and counting it for its sender in one round
    # trip (issue 14).
    count = int(await run_script(
        channels.redis, _CLAIM_AND_COUNT,
        [per_ip.key(ip), key, limiter.key(f"{channels.config.app_id}:{openid}")],
        [per_ip.limit, per_ip.window_seconds * 1000, PENDING, ttl,
         limiter.window_seconds * 1000]))
    if count == -2:
        raise ApiProblem(429, *TOO_MANY)
    if count < 0:
        return await _first_answer(channels, key)
    try:
        if count > limiter.limit:
            # Say it once per window, then stay silent (replying costs us too).
            reply_xml = (channels.codec.reply_text(message,
                                                   dialogue.DIALOGUE.texts["rate_limited"])
                         if count == limiter.limit + 1 else "")
        else:
            reply_xml = await _turn_within_deadline(channels, inbound)
    except Exception:
        # Let WeChat's retry try again rather than answering it with nothing.
        await channels.redis.delete(key)
        raise
    await channels.redis.set(key, DONE + reply_xml.encode(), ex=ttl)
    return reply_xml


async def _first_answer(channels: Channels, key: str) -> str:
    """A retry while the first delivery is still being answered waits for that answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + channels.config.wechat.reply_deadline_seconds
    while True:
        raw = await channels.redis.get(key)
        value = raw if isinstance(raw, bytes) else str(raw or "").encode()
        if not value.startswith(PENDING):
            break
        if loop.time() >= deadline:
            return ""
        await asyncio.sleep(0.05)
    if value.startswith(DONE):
        return value[len(DONE):].decode()
    return ""


async def _turn_within_deadline(channels: Channels, inbound: Inbound) -> str:
    message = inbound.message
    task = channels.spawn(dialogue.handle(channels, message))
    try:
        outcome = await asyncio.wait_for(asyncio.shield(task),
                                         channels.config.wechat.reply_deadline_seconds)
    except TimeoutError:
        # WeChat drops a reply after 5 s: answer "success" now and send the answer as a
        # customer-service message when the turn is done.
        channels.spawn(_late_answer(channels, task, str(message.source), dedup_key(message)))
        return ""
    stored = list(outcome.pending)
    if outcome.reply:
        stored.append(conversations.build(
            app_id=channels.config.app_id, openid=str(message.source), direction="out",
            via="passive", msg_type="text", text=outcome.reply, session_id=outcome.session_id,
            intent=outcome.intent, at=channels.now(),
        ))
    await conversations.save_all(stored)
    return channels.codec.reply_text(message, outcome.reply) if outcome.reply else ""


async def _late_answer(channels: Channels, task: asyncio.Task[Any], openid: str,
                       key: str) -> None:
    try:
        outcome: dialogue.Outcome = await task
    except Exception:
        log.exception("a late chatbot turn failed")
        return
    await conversations.save_all(outcome.pending)
    if outcome.reply:
        await outbox.enqueue(
            channels, OutboxKind.WECHAT_CUSTOM, f"late:{channels.config.app_id}:{key}", openid,
            {"purpose": outcome.intent, "text": outcome.reply, "audience": "customer",
             "app_id": channels.config.app_id, "via": "custom"},
            session_id=outcome.session_id,
        )


class WeChatOpenBody(Body):
    ref: str = Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    code: str = Field(min_length=1, max_length=128)


@api.endpoint("POST", "/wechat/invitations/open",
              summary="Open a WeChat invitation with the web-authorisation code (bound openid)",
              tag="wechat", auth="none", body=WeChatOpenBody, returns=ChannelCustomerToken,
              responses={401: "authorisation code invalid", 403: "bound to another WeChat user",
                         404: "unknown invitation, or the channel is off",
                         409: "the session cannot be opened now",
                         410: "used, revoked or expired", 429: "too many opens from this "
                         "address", 503: "WeChat unavailable"})
async def post_open(request: web.Request) -> web.Response:
    channels = channels_of(request)
    body = await read_json(request, WeChatOpenBody)
    ip = client_ip(request)
    if await channels.limits.ip_opens.hit(ip) > channels.limits.ip_opens.limit:
        raise ApiProblem(429, "too_many_requests", "操作过于频繁，请稍后再试")
    await channel_invitations.find(body.ref)
    try:
        identity = await channels.wechat.oauth_identity(body.code)
    except WeChatApiError as exc:
        if exc.transient:
            raise ApiProblem(503, "wechat_unavailable", "微信服务暂时不可用，请稍后重试") from exc
        raise ApiProblem(401, "wechat_code_invalid", "微信授权已失效，请重新打开链接") from exc
    person = channel_invitations.Person(channels.config.app_id, identity.openid,
                                        identity.unionid)
    redeemed = await channel_invitations.redeem(
        channels, body.ref, person, ip, request.headers.get("User-Agent", ""),
        channels.customer_tokens)
    return json_response({
        "customer_token": redeemed.customer_token,
        "expires_in": channels.customer_tokens.ttl_seconds, "reentry": redeemed.reentry,
        "session": await customer_session_view(redeemed.session),
    })


@api.endpoint("GET", "/wechat/oauth-url",
              summary="The web-authorisation URL an H5 page opened without a code redirects to",
              tag="wechat", auth="none", query=(REF,), returns=Url,
              responses={404: "unknown invitation, or the channel is off"})
async def get_oauth_url(request: web.Request) -> web.Response:
    channels = channels_of(request)
    ref = REF.read(request) or ""
    await channel_invitations.find(ref)
    return json_response({"url": channel_invitations.wechat_link(channels, ref)})
