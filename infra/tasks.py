"""Stopping a task for certain.

redis-py 8 can swallow a cancellation that reaches it while it reads a reply (the task then
reads on, e.g. a pub/sub listener waiting for the next message), so `task.cancel(); await
task` can wait forever: seen as a 60 s stall of every app shutdown that still had a live page's
socket open (aiohttp's shutdown timeout) and as CI runs that never ended. `cancel_and_wait`
cancels again until the task ends and waits with `asyncio.wait`, which never swallows a
cancellation of the caller's own.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Future[object], what: str,
                          *, limit_s: float = 10.0, every_s: float = 0.2) -> bool:
    """Cancels `task` until it ends, for at most `limit_s`; True when it ended (an error of
    the task itself is logged, not raised: the caller is stopping it)."""
    rounds = max(1, round(limit_s / every_s))
    for _ in range(rounds):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=every_s)
        if done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s ended with %r while being stopped", what, task.exception())
            return True
    log.error("%s did not stop within %.0f s", what, limit_s)
    return False
