"""Background jobs on Redis streams (taskiq's RedisStreamBroker).

Jobs are registered per app (closures over the app's dependencies, no module-level tasks), so
tests can run several apps in one process. In the embedded default the receiver runs inside the
server process; `python -m app worker` runs it on its own. Every job is idempotent: the periodic
sweep re-queues work that a crash left unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

log = logging.getLogger(__name__)
JobHandler = Callable[..., Awaitable[Any]]


class Jobs:
    def __init__(self, redis_url: str, queue_name: str) -> None:
        # A per-instance task-name prefix keeps apps in one process (the tests) apart in
        # taskiq's process-wide task registry.
        self._prefix = uuid.uuid4().hex[:8]
        self.broker = RedisStreamBroker(redis_url, queue_name=queue_name,
                                        consumer_group_name=queue_name)
        self._receiver: asyncio.Task[None] | None = None

    def register(self, name: str, handler: JobHandler) -> None:
        async def run(**kwargs: Any) -> Any:
            try:
                return await handler(**kwargs)
            except Exception:
                # taskiq would log and drop it; say which job failed and with what.
                log.exception("job %s failed with %s", name, kwargs)
                raise

        self.broker.register_task(run, task_name=f"{self._prefix}.{name}")

    async def enqueue(self, name: str, **kwargs: Any) -> None:
        task = self.broker.find_task(f"{self._prefix}.{name}")
        if task is None:
            raise KeyError(f"unknown job {name}")
        await task.kiq(**kwargs)

    async def start(self, run_receiver: bool) -> None:
        await self.broker.startup()
        if run_receiver:
            self._receiver = asyncio.create_task(
                run_receiver_task(self.broker, max_async_tasks=4, run_startup=False)
            )

    async def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
        await self.broker.shutdown()
