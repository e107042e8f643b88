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
from typing import Any, Literal

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from tortoise.context import TortoiseContext

from api.keys import CONFIG, CUSTOMER_TOKENS, DATABASE, DEPS, REDIS
from bot.settings import ChannelConfig, ChannelSettings, describe
from bot.sms import LogSmsSender, SmsSender, TencentSmsSender
from bot.sms_aliyun import AliyunSmsSender
from bot.wechat_api import WeChatApi
from bot.wechat_inbound import MessageCodec
from infra.database import activate, deactivate
from infra.tasks import cancel_and_wait
from security.ratelimit import RateLimiter
from security.tokens import TokenStore
from workflow.core import WorkflowDeps
from workflow.events import ChannelSet, channel_for, subscribe_to

log = logging.getLogger(__name__)
# Published when a process queued something for a channel worker that may run elsewhere: an
# outbox message, a new session to follow (issue 14).
CHANNEL_WAKE = "channels:wake"
Process = Literal["web", "worker"]


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
    # Whether this process runs the channel worker; the sessions whose events it follows (the
    # feed pass's, bot/feed.py) and the Redis channels its wake-up listener is subscribed to.
    runs_worker: bool = False
    feed_sessions: set[str] = field(default_factory=set)
    followed: ChannelSet = field(default_factory=ChannelSet)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.deps.clock

    def now(self) -> datetime:
        return self.deps.clock()

    async def poke(self) -> None:
        """Something was queued for the channel worker: woken here when this process runs it,
        else through Redis wherever it runs."""
        self.wake.set()
        if not self.runs_worker:
            await self.redis.publish(CHANNEL_WAKE, b"")

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


def channels_context(passes: Mapping[str, ChannelPass], texts: Mapping[str, str],
                     process: Process = "web"
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that builds the channels with the worker's `passes` and the
    dialogue's `texts`, runs the channel worker when this `process` should (`runs_worker`)
    and closes everything."""

    def context(app: web.Application) -> AsyncIterator[None]:
        return _channels(app, passes, texts, process)

    return context


def runs_worker(settings: ChannelSettings, run_worker_in_process: bool,
                process: Process) -> bool:
    """Whether this process runs the channel worker (`SHUANGLU_CHANNELS_RUN_WORKER`,
    `SHUANGLU_CHANNELS_WORKER_PROCESSES`): every web process by default; else the `worker`
    command, and a server that runs the platform's worker in process (the embedded mode)."""
    if not settings.run_worker:
        return False
    if settings.worker_processes == "web":
        return process == "web"
    return process == "worker" or run_worker_in_process


async def _channels(app: web.Application, passes: Mapping[str, ChannelPass],
                    texts: Mapping[str, str], process: Process) -> AsyncIterator[None]:
    config = app[CONFIG].channels
    log.info("channels configured: %s", describe(config))
    channels = build_channels(app, config, passes, texts)
    channels.runs_worker = runs_worker(config.worker,
                                       app[CONFIG].settings.run_worker_in_process, process)
    app[CHANNELS] = channels
    worker: asyncio.Task[None] | None = None
    listener: asyncio.Task[None] | None = None
    if channels.runs_worker:
        listener = asyncio.create_task(wake_on_events(channels))
        # Listening once the app is up (at most 2 s: during a Redis outage, when it is back).
        await channels.followed.add(CHANNEL_WAKE)
        worker = asyncio.create_task(worker_loop(channels))
    try:
        yield
    finally:
        # Bounded: a task that swallows its cancellation must not hold the shutdown.
        await asyncio.gather(*(cancel_and_wait(task, f"channel task {task.get_name()}")
                               for task in (worker, listener, *channels.background)
                               if task is not None))
        await channels.http.close()
        channels.executor.shutdown(wait=False, cancel_futures=True)


async def run_once(channels: Channels) -> dict[str, int]:
    """One pass of the channel worker: each registered pass in order (bot/passes.py: session
    events to notifications and webhooks, invitation reminders, every due outbox message, SMS
    delivery reports); how much each did, by name."""
    return {name: await run(channels) for name, run in channels.passes.items()}


async def worker_loop(channels: Channels) -> None:
    """A pass at once, then whenever woken (`wake_on_events`, `Channels.poke`) and at least
    every `worker_interval_seconds`, never twice within `worker_min_interval_seconds`."""
    token = activate(channels.database)
    settings = channels.config.worker
    loop = asyncio.get_running_loop()
    try:
        while True:
            started = loop.time()
            # Cleared before the pass: a wake-up during it is not lost.
            channels.wake.clear()
            try:
                await run_once(channels)
                if await follow_feeds(channels):
                    # Events of a new session between the pass's read and the subscription:
                    # one more pass, now that they would wake it.
                    channels.wake.set()
            except Exception:
                log.exception("channel worker pass failed; retrying next interval")
            # asyncio.timeout, not wait_for: on Python 3.11 a cancellation arriving while
            # wait_for wraps Event.wait could leave this task "cancelling" forever (seen as
            # an app shutdown that never finished).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.worker_interval_seconds):
                    await channels.wake.wait()
            rest = started + settings.worker_min_interval_seconds - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
    finally:
        deactivate(token)


async def follow_feeds(channels: Channels) -> bool:
    """Subscribes the wake-up listener to the events of the sessions the feed pass follows,
    and lets go of the others; whether it subscribed to any new one (confirmed by Redis)."""
    wanted = {channel_for(session_id) for session_id in channels.feed_sessions}
    wanted.add(CHANNEL_WAKE)
    followed = channels.followed
    for channel in followed.channels - wanted:
        await followed.discard(channel)
    added = wanted - followed.channels
    if added:
        await followed.add_all(added)
    return bool(added)


async def wake_on_events(channels: Channels) -> None:
    """What concerns the channel worker wakes it at once: an event of a session it follows
    (one with an active channel feed), or `CHANNEL_WAKE` from a process that queued something
    for it; not every session's events (issue 14). The periodic pass still catches anything
    missed (pub/sub is not durable), and a resubscription after a Redis outage wakes it too."""
    async for _ in subscribe_to(channels.redis, channels.followed):
        channels.wake.set()
