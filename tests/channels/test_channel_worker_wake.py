"""The channel worker wakes only for what concerns it (issue 14): events of the sessions it
follows (an active channel feed) and `channels:wake` from a process that queued something for
it, never every session's events; never two passes within the minimum interval; and only in
the processes the settings name (R-54)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable

import pytest

from app.factory import channel_worker
from bot.runtime import CHANNEL_WAKE, Channels, runs_worker
from bot.settings import ChannelSettings, load_channel_config
from models.sales import Order
from tests.channels.conftest import Kit, openid
from workflow.events import RedisEventPublisher, channel_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def channel_env() -> dict[str, str]:
    # This app runs its channel worker (the other channel tests run the passes themselves),
    # with no periodic pass to speak of: a pass happens only when something wakes it.
    return {"SHUANGLU_CHANNELS_RUN_WORKER": "true",
            "SHUANGLU_CHANNELS_WORKER_INTERVAL_SECONDS": "3600",
            "SHUANGLU_CHANNELS_WORKER_MIN_INTERVAL_SECONDS": "0"}


class Passes:
    """Counts the worker's passes (a pass of its own, run first)."""

    def __init__(self, channels: Channels) -> None:
        self.times: list[float] = []
        self._ran = asyncio.Condition()
        channels.passes = {"count": self._count, **channels.passes}

    async def _count(self, channels: Channels) -> int:
        async with self._ran:
            self.times.append(asyncio.get_running_loop().time())
            self._ran.notify_all()
        return 0

    async def after(self, action: Callable[[], Awaitable[object]], count: int = 1) -> None:
        """Runs `action` and waits (at most 10 s) for `count` passes to start after it."""
        async with self._ran:
            wanted = len(self.times) + count
        await action()
        async with asyncio.timeout(10), self._ran:
            await self._ran.wait_for(lambda: len(self.times) >= wanted)


async def _bank_invitation(kit: Kit) -> str:
    walk = await kit.h.create_session()
    order = await Order.get(id=walk.order_id)
    status, body = await kit.bank_call("POST", "/bank/invitations", {
        "application_no": order.application_no, "bank_customer_ref": "BC-WAKE-1"})
    assert status == 201, body
    return walk.session_id


async def test_the_worker_follows_only_sessions_with_a_feed_and_its_wake_channel(
        kit: Kit) -> None:
    channels = kit.channels
    assert channels.runs_worker
    passes = Passes(channels)
    redis = channels.redis

    async def wake() -> None:
        await redis.publish(CHANNEL_WAKE, b"")

    await passes.after(wake)  # listening since the app started: channels:wake wakes it
    assert channels.followed.channels == {CHANNEL_WAKE}
    # No pattern subscription: another session's events never reach this process.
    assert await redis.pubsub_numpat() == 0

    # A new channel invitation: its session's events now wake the worker.
    session_id = await _bank_invitation(kit)
    followed = channel_for(session_id)
    async with asyncio.timeout(10):
        while followed not in channels.followed.channels:
            await passes.after(wake)
    subscribers = {name.decode() if isinstance(name, bytes) else name: count
                   for name, count in await redis.pubsub_numsub(followed)}
    assert subscribers[followed] >= 1

    async def session_event() -> None:
        await RedisEventPublisher(redis).publish(uuid.UUID(session_id), {"type": "test"})

    await passes.after(session_event)


async def test_passes_are_never_closer_than_the_minimum_interval(kit: Kit) -> None:
    channels = kit.channels
    passes = Passes(channels)
    settings = channels.config.worker
    settings.worker_min_interval_seconds = 0.3

    async def wake() -> None:
        await channels.redis.publish(CHANNEL_WAKE, b"")

    try:
        await passes.after(wake)
        await passes.after(wake)
        await passes.after(wake)
    finally:
        settings.worker_min_interval_seconds = 0
    first, second, third = passes.times[-3:]
    assert second - first >= 0.29 and third - second >= 0.29


def test_the_worker_runs_in_the_processes_the_settings_name() -> None:
    every_web = ChannelSettings()
    assert runs_worker(every_web, False, "web") and not runs_worker(every_web, True, "worker")
    only_worker = ChannelSettings(worker_processes="worker")
    assert runs_worker(only_worker, False, "worker")
    assert not runs_worker(only_worker, False, "web")
    # The single-process embedded mode (the platform's worker in the server) still runs it.
    assert runs_worker(only_worker, True, "web")
    off = ChannelSettings(run_worker=False)
    assert not any(runs_worker(off, embedded, process)
                   for embedded in (False, True) for process in ("web", "worker"))


async def test_the_worker_command_delivers_what_a_web_process_without_the_worker_queued(
        kit: Kit) -> None:
    web_channels = kit.channels
    web_channels.runs_worker = False  # this web process leaves the worker to `app worker`
    config = kit.h.config
    worker_config = dataclasses.replace(config, channels=load_channel_config(
        config, worker=ChannelSettings(worker_processes="worker",
                                       worker_interval_seconds=3600)))
    sent = asyncio.Event()

    class Calls(list):  # type: ignore[type-arg]
        def append(self, call: tuple[str, object]) -> None:
            super().append(call)
            if call[0] == "template/send":
                sent.set()

    kit.fake.calls = Calls(kit.fake.calls)
    async with channel_worker(worker_config, web_channels.redis, web_channels.deps,
                              web_channels.database):
        walk = await kit.h.create_session()
        customer = openid("worker-command")
        await kit.follower_customer(walk.session_id, customer)
        r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                            json={"mode": "template"})
        assert r.status == 201, r.body
        # Queued by the web process, which published channels:wake: the worker command's
        # channel worker (periodic pass an hour away) sends it.
        async with asyncio.timeout(10):
            await sent.wait()
    assert kit.fake.sent("template/send")[-1]["touser"] == customer
