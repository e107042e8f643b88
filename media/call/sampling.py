"""The worker threads the call hub's video samplers share (R-13), handed out fairly.

Each room's :class:`media.call.presence.VideoSampler` submits one sample at a time, with the time
that sample fell due. When a worker is free the job runs at once; when every worker is busy it
waits, and a worker that frees takes the waiting job that fell due first (ties: the one
submitted first). A room just sampled falls due again a period later, so it goes behind every
room that was already waiting: with more demand than the workers can serve every room's samples
are spread evenly (round robin), none is starved, and none is favoured because its key frames
happen to arrive when a worker is free. At most one job per sampler is ever submitted, so the
jobs waiting are bounded by the rooms open; a waiting job may be replaced by a fresher one
(same turn), and is withdrawn when its room closes.

Loop-bound: ``submit``, ``withdraw`` and the dispatch of waiting jobs run in the event loop that
owns the hub; only the jobs themselves run in the worker threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(order=True)
class _Waiting:
    due: float
    seq: int
    owner: Hashable = field(compare=False)
    job: Callable[[], Any] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)


class SamplingPool:
    """Worker threads for decoding and analysing samples, oldest-due first (module docstring)."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("a sampling pool needs at least one worker")
        self.workers = workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._busy = 0
        self._waiting: dict[Hashable, _Waiting] = {}
        self._seq = itertools.count()

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._waiting)

    def is_waiting(self, owner: Hashable) -> bool:
        return owner in self._waiting

    def submit(self, owner: Hashable, due: float, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``job`` in a worker, now or when its turn comes (``due``: when the sample fell
        due, any clock shared by the pool's owners). One job per owner at a time."""
        if owner in self._waiting:
            raise RuntimeError("this owner already has a job waiting")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting[owner] = _Waiting(due, next(self._seq), owner, job, future)
        self._dispatch()
        return future

    def replace(self, owner: Hashable, job: Callable[[], Any]) -> bool:
        """Swap the owner's waiting job for ``job`` (a fresher frame), keeping its turn and its
        future; False when it has none waiting (it runs, or is done)."""
        waiting = self._waiting.get(owner)
        if waiting is None:
            return False
        waiting.job = job
        return True

    def withdraw(self, owner: Hashable) -> bool:
        """Cancel the owner's job if it is still waiting (not if it runs); True if it was."""
        waiting = self._waiting.pop(owner, None)
        if waiting is None:
            return False
        waiting.future.cancel()
        return True

    def _dispatch(self) -> None:
        while self._busy < self.workers and self._waiting:
            turn = min(self._waiting.values())
            del self._waiting[turn.owner]
            if turn.future.done():  # cancelled by whoever awaited it
                continue
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix="video-sampler")
            self._busy += 1
            running = asyncio.wrap_future(self._executor.submit(turn.job))
            running.add_done_callback(functools.partial(self._finished, turn.future))

    def _finished(self, out: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
        self._busy -= 1
        if not out.done():
            if done.cancelled():
                out.cancel()
            elif (error := done.exception()) is not None:
                out.set_exception(error)
            else:
                out.set_result(done.result())
        self._dispatch()

    def shutdown(self) -> None:
        """Stop the workers (after the jobs running now); call when no job waits any more."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
