"""CPU-bound work off the event loop: one bounded thread pool per process.

Password hashing (Argon2), image decoding (Pillow) and hashing release the GIL while their C
code runs (measured on this machine: a thread that wants the GIL waits at most a scheduler
slice while another thread verifies a password or decodes a 12-megapixel PNG), so threads are
enough; a process pool would add pickling for nothing. The pool has as many threads as the
machine has cores: more would only make each job slower. Jobs wait in line up to
`max_waiting`; beyond that `CpuBusy` is raised, which the load-shedding middleware answers
with 503 and Retry-After (api/load_shedding.py) rather than letting the queue, and the time
every caller waits, grow without bound.

The pool is a process resource (the cores are), so it is shared by every app in the process;
`configure` sizes it from the settings when an app starts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_MAX_WAITING = 32


class CpuBusy(RuntimeError):
    """Too many CPU jobs are waiting: the caller should try again shortly (503)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the CPU pool is saturated")
        self.retry_after = retry_after


def default_threads() -> int:
    return max(os.cpu_count() or 1, 1)


class CpuPool:
    """A fixed number of worker threads and a bounded line of waiting jobs."""

    def __init__(self, threads: int | None = None, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self.threads = threads or default_threads()
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="cpu")
        self._lock = threading.Lock()
        self._pending = 0  # running + waiting (any event loop, any thread)

    @property
    def pending(self) -> int:
        return self._pending

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Runs `fn(*args, **kwargs)` in the pool; raises CpuBusy when the line is full."""
        with self._lock:
            if self._pending >= self.threads + self.max_waiting:
                # Roughly how long the line takes to clear, at least a second.
                raise CpuBusy(max(1, self._pending // max(self.threads * 4, 1)))
            self._pending += 1
        try:
            future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        # Released when the thread finishes, not when the caller stops waiting (a cancelled
        # request does not free a core that is still busy).
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_POOL: CpuPool | None = None
_POOL_LOCK = threading.Lock()


def configure(threads: int | None, max_waiting: int) -> CpuPool:
    """Sizes the process's pool (a new pool when the size changed); returns it."""
    global _POOL
    wanted = threads or default_threads()
    with _POOL_LOCK:
        if _POOL is None or (_POOL.threads, _POOL.max_waiting) != (wanted, max_waiting):
            old, _POOL = _POOL, CpuPool(wanted, max_waiting)
            if old is not None:
                old._executor.shutdown(wait=False)  # running jobs finish; new ones go to the new
        return _POOL


def cpu_pool() -> CpuPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = CpuPool()
        return _POOL


async def run_cpu(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """`fn(*args, **kwargs)` in the process's CPU pool (see the module docstring)."""
    return await cpu_pool().run(fn, *args, **kwargs)
