"""The channels' runtime: everything the channel handlers share (settings, the WeChat API
clients, the thread pool, Redis, rate limiters, the webhook HTTP client, the dialogue's texts)
hung off the app under one typed key, opened and closed in a cleanup context, and the channel
worker loop. The worker's passes (bot/passes.py) and the texts are registered by the
composition root (app/factory.py), so this module imports none of the modules that use it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from tortoise.context import TortoiseContext

from api.keys import CONFIG, CUSTOMER_TOKENS, DATABASE, DEPS, REDIS
from bot.settings import ChannelConfig, describe
from bot.sms import LogSmsSender, SmsSender, TencentSmsSender
from bot.sms_aliyun import AliyunSmsSender
from bot.wechat_api import WeChatApi
from bot.wechat_inbound import MessageCodec
from infra.database import activate, deactivate
from security.ratelimit import RateLimiter
from security.tokens import TokenStore
from workflow.core import WorkflowDeps
from workflow.events import ALL_SESSIONS, subscribe

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """Fixed-window limits in Redis, shared by every worker process."""

    ip_messages: RateLimiter
    openid_messages: RateLimiter
    agent_invitations: RateLimiter
    ip_opens: RateLimiter
    bind_attempts: RateLimiter
    bank_client: RateLimiter


@dataclass
class Channels:
    config: ChannelConfig
    redis: Redis
    deps: WorkflowDeps
    database: TortoiseContext
    customer_tokens: TokenStore
    short_tokens: TokenStore
    wechat: WeChatApi
    mp: WeChatApi
    codec: MessageCodec
    limits: Limits
    http: aiohttp.ClientSession
    executor: ThreadPoolExecutor
    sms: SmsSender | None = None
    # The worker's passes by name, run in order by `run_once` (bot/passes.py), and the
    # dialogue's texts (bot/dialogue.yaml) for the modules below the dialogue.
    passes: Mapping[str, ChannelPass] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.deps.clock

    def now(self) -> datetime:
        return self.deps.clock()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Keeps a reference to fire-and-forget work so it is not garbage-collected midway
        and can be awaited on shutdown."""
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


CHANNELS = web.AppKey("channels", Channels)
# One pass of the channel worker over some of its work; returns how much it did.
ChannelPass = Callable[[Channels], Awaitable[int]]


def build_channels(app: web.Application, config: ChannelConfig,
                   passes: Mapping[str, ChannelPass] | None = None,
                   texts: Mapping[str, str] | None = None) -> Channels:
    redis = app[REDIS]
    wx = config.wechat
    executor = ThreadPoolExecutor(max_workers=wx.executor_threads,
                                  thread_name_prefix="wechatpy")

    def api(app_id: str, secret: str) -> WeChatApi:
        return WeChatApi(app_id, secret, wx.api_base_url, wx.oauth_base_url, redis, executor,
                         wx.api_timeout_seconds)

    customer_tokens = app[CUSTOMER_TOKENS]
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
        total=config.bank.webhook_timeout_seconds))
    return Channels(
        config=config, redis=redis, deps=app[DEPS], database=app[DATABASE],
        customer_tokens=customer_tokens,
        # Same namespace as the H5 customer tokens, so the same session API accepts it, but
        # shorter-lived (mini-program logins).
        short_tokens=TokenStore(redis, customer_tokens.namespace, wx.mp_token_ttl_seconds),
        wechat=api(config.app_id, config.app_secret),
        mp=api(config.mp_app_id, config.mp_app_secret),
        codec=MessageCodec(config.token, config.encoding_aes_key, config.app_id,
                           wx.message_mode, wx.timestamp_tolerance_seconds),
        limits=Limits(
            ip_messages=RateLimiter(redis, "wechat-ip", wx.ip_requests_per_minute, 60),
            openid_messages=RateLimiter(redis, "wechat-openid", wx.openid_messages_per_minute,
                                        60),
            agent_invitations=RateLimiter(redis, "channel-invite",
                                          wx.invitations_per_agent_per_hour, 3600),
            ip_opens=RateLimiter(redis, "channel-open", wx.opens_per_ip_per_minute, 60),
            bind_attempts=RateLimiter(redis, "wechat-bind", wx.bind_attempts_per_openid, 600),
            bank_client=RateLimiter(redis, "bank-client", config.bank.requests_per_minute, 60),
        ),
        http=http,
        executor=executor,
        sms=build_sms(config, http),
        passes=dict(passes or {}),
        texts=dict(texts or {}),
    )


def build_sms(config: ChannelConfig, http: aiohttp.ClientSession) -> SmsSender | None:
    """The SMS engine of the settings (bot/sms.py); None when SMS is off."""
    sms = config.sms
    if config.sms_engine == "tencent":
        return TencentSmsSender(http, sms.endpoint, sms.secret_id or "", sms.secret_key or "",
                                sms.sdk_app_id or "", sms.sign_name, sms.region)
    if config.sms_engine == "aliyun":
        names = tuple(n.strip() for n in sms.template_param_names.split(",") if n.strip())
        return AliyunSmsSender(http, sms.aliyun_endpoint, sms.secret_id or "",
                               sms.secret_key or "", sms.sign_name, names, sms.aliyun_region,
                               link_prefix=f"{config.public_url}/h5/invite/")
    if config.sms_engine == "log":
        return LogSmsSender(config.data_dir / "sms-outbox.jsonl")
    return None


def channels_context(passes: Mapping[str, ChannelPass], texts: Mapping[str, str]
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that builds the channels with the worker's `passes` and the
    dialogue's `texts`, runs the channel worker and closes everything."""

    def context(app: web.Application) -> AsyncIterator[None]:
        return _channels(app, passes, texts)

    return context


async def _channels(app: web.Application, passes: Mapping[str, ChannelPass],
                    texts: Mapping[str, str]) -> AsyncIterator[None]:
    config = app[CONFIG].channels
    log.info("channels configured: %s", describe(config))
    channels = build_channels(app, config, passes, texts)
    app[CHANNELS] = channels
    worker: asyncio.Task[None] | None = None
    listener: asyncio.Task[None] | None = None
    if config.worker.run_worker:
        worker = asyncio.create_task(worker_loop(channels))
        listener = asyncio.create_task(wake_on_events(channels))
    try:
        yield
    finally:
        for task in (worker, listener, *channels.background):
            if task is not None:
                task.cancel()
        pending = {t for t in (worker, listener, *channels.background) if t is not None}
        if pending:
            # Bounded: a task that ignores its cancellation must not hold the shutdown.
            done, stuck = await asyncio.wait(pending, timeout=10)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: it was logged where it happened
            for task in stuck:
                log.error("channel task %s did not stop within 10 s of its cancellation", task)
        await channels.http.close()
        channels.executor.shutdown(wait=False, cancel_futures=True)


async def run_once(channels: Channels) -> dict[str, int]:
    """One pass of the channel worker: each registered pass in order (bot/passes.py: session
    events to notifications and webhooks, invitation reminders, every due outbox message, SMS
    delivery reports); how much each did, by name."""
    return {name: await run(channels) for name, run in channels.passes.items()}


async def worker_loop(channels: Channels) -> None:
    token = activate(channels.database)
    interval = channels.config.worker.worker_interval_seconds
    try:
        while True:
            try:
                await run_once(channels)
            except Exception:
                log.exception("channel worker pass failed; retrying next interval")
            channels.wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 a cancellation arriving while
            # wait_for wraps Event.wait could leave this task "cancelling" forever (seen as
            # an app shutdown that never finished).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await channels.wake.wait()
    finally:
        deactivate(token)


async def wake_on_events(channels: Channels) -> None:
    """Session events published by the workflow wake the worker at once; the periodic pass
    still catches anything missed (pub/sub is not durable), and a resubscription after a Redis
    outage wakes it too."""
    async for _ in subscribe(channels.redis, patterns=(ALL_SESSIONS,)):
        channels.wake.set()
