"""Admission control of the call hub (issue 16 item 3, R-32): a node that cannot hold one more
call at full frame rate refuses the next *new* room instead of degrading every running call.

The hub measures itself, it does not trust a constant. Every ``sample_interval`` seconds a task
in its event loop records

- the node's CPU time (:class:`media.call.node_cpu.NodeCpu`): this process's — every thread,
  the relay and recording in the loop as well as the video samplers, audio listeners and the
  spoken-answer recogniser in worker threads — and its helper processes' (the presence
  monitor's child, registered with :meth:`CallHub.count_helper_process`),
- the CPU time of the event loop's thread and of the worker threads that run Python beside it
  (:class:`media.call.node_cpu.InterpreterCpu`, read in the loop): the relay and the recording
  run in the loop's thread, and the listeners take turns with it on the one interpreter lock,
  so together they saturate at one core whatever the machine has,
- how late the loop woke up (its lag: a loop that wakes late delays every packet), and
- how many rooms are open.

From the samples of the last ``window_seconds`` with at least one room open it derives what one
call costs (CPU seconds per second per room, for the process and for the loop thread). A new
room is admitted when the CPU in use now plus one call's cost fits the capacity (``cores ×
target_utilisation`` for the node, ``1 × target_utilisation`` for the interpreter) and the
loop's lag (90th percentile over the window) is under ``max_loop_lag``. "In use now" is the
larger of the measured cost × the rooms open now (rooms admitted a moment ago are counted before
their cost shows) and the rate measured over the last few seconds — with ``count_machine``, the
rate every process on the node's cores used (:class:`media.call.node_cpu.MachineCpu`): on a
machine shared with other work, what the others take is not there for the calls.

Only new rooms are ever refused: a party rejoining its room or the second party of an open room
is the hub's business, never this module's. With no room open there is no call to protect and
the room is admitted; before the first call has been measured the hub admits too (the cost of
a call measured earlier is remembered once its window has passed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from media.call.node_cpu import InterpreterCpu, MachineCpu, NodeCpu

logger = logging.getLogger(__name__)

# The "now" in "CPU in use now": the rate over this many seconds.
RECENT_SECONDS = 5.0


@dataclass(frozen=True)
class AdmissionConfig:
    """``cores``: the CPUs the node may use (default: those this process may run on).
    ``target_utilisation``: the share of them (and of the loop thread) calls may take.
    ``max_loop_lag``: seconds; a loop lagging more than this (90th percentile) is full.
    ``min_measured_seconds``: seconds with a room open before a call's cost counts.
    ``retry_after_seconds``: what a refusal tells the client to wait.
    ``count_machine``: see below."""

    cores: float | None = None
    target_utilisation: float = 0.75
    max_loop_lag: float = 0.1
    window_seconds: float = 30.0
    sample_interval: float = 0.5
    min_measured_seconds: float = 2.0
    retry_after_seconds: int = 10
    # Count what every process on the node's cores takes in "CPU in use now" (a machine shared
    # with other work): a call's cost is still measured on the hub and its helpers only.
    count_machine: bool = False

    @property
    def capacity_cores(self) -> float:
        cores = self.cores if self.cores is not None else available_cores()
        return cores * self.target_utilisation


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic seconds
    cpu: float  # the node's CPU seconds: the process (all threads) and its helper processes
    loop_cpu: float  # CPU seconds of the event loop's thread and its interpreter's workers
    rooms: int
    lag: float  # seconds the loop woke up late
    machine: float = 0.0  # busy CPU seconds of the node's cores, every process (count_machine)


@dataclass(frozen=True)
class Headroom:
    """The estimate behind an admission decision. CPU figures are in cores (CPU seconds per
    second); ``cost_per_call`` is None until a call has been measured."""

    admit: bool
    reason: str
    rooms: int
    capacity: float
    cpu: float
    cost_per_call: float | None
    loop_capacity: float
    loop_cpu: float
    loop_cost_per_call: float | None
    loop_lag: float

    def calls_that_fit(self) -> int | None:
        """How many calls the measured costs allow in all (None before a measurement)."""
        if not self.cost_per_call or not self.loop_cost_per_call:
            return None
        return int(min(self.capacity / self.cost_per_call,
                       self.loop_capacity / self.loop_cost_per_call))


class CallRefused(RuntimeError):
    """A new room was refused: the node has no headroom for one more call (answer 503 with
    ``Retry-After: retry_after``)."""

    def __init__(self, retry_after: int, headroom: Headroom) -> None:
        super().__init__(f"no headroom for another call: {headroom.reason}")
        self.retry_after = retry_after
        self.headroom = headroom


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def estimate(samples: list[Sample], rooms_now: int, config: AdmissionConfig,
             remembered: tuple[float, float] | None = None) -> Headroom:
    """The headroom the samples (oldest first, those of the window) show for one more call.
    ``remembered``: the (process, loop) cost per call measured before the window, used when
    the window itself has no measurement."""
    capacity = config.capacity_cores
    loop_capacity = config.target_utilisation  # one thread: at most one core
    cpu_seconds = loop_seconds = call_seconds = measured = 0.0
    recent_cpu = recent_loop = recent_machine = recent_span = 0.0
    latest = samples[-1].at if samples else 0.0
    for before, after in itertools.pairwise(samples):
        span = after.at - before.at
        if span <= 0:
            continue
        if after.at > latest - RECENT_SECONDS:
            recent_cpu += after.cpu - before.cpu
            recent_loop += after.loop_cpu - before.loop_cpu
            recent_machine += after.machine - before.machine
            recent_span += span
        if min(before.rooms, after.rooms) >= 1:
            cpu_seconds += after.cpu - before.cpu
            loop_seconds += after.loop_cpu - before.loop_cpu
            call_seconds += span * (before.rooms + after.rooms) / 2
            measured += span
    cost: float | None = None
    loop_cost: float | None = None
    if measured >= config.min_measured_seconds and call_seconds > 0:
        cost, loop_cost = cpu_seconds / call_seconds, loop_seconds / call_seconds
    elif remembered is not None:
        cost, loop_cost = remembered
    cpu = loop_cpu = 0.0
    if cost is not None and loop_cost is not None:
        cpu, loop_cpu = cost * rooms_now, loop_cost * rooms_now
    if recent_span > 0:
        cpu = max(cpu, recent_cpu / recent_span)
        if config.count_machine:  # what other processes take is not there for calls
            cpu = max(cpu, recent_machine / recent_span)
        loop_cpu = max(loop_cpu, recent_loop / recent_span)
    lag = _percentile([s.lag for s in samples], 0.9)

    def headroom(admit: bool, reason: str) -> Headroom:
        return Headroom(admit, reason, rooms_now, capacity, cpu, cost, loop_capacity, loop_cpu,
                        loop_cost, lag)

    if rooms_now == 0:
        return headroom(True, "no call open")
    if cost is None or loop_cost is None:
        return headroom(True, "no call measured yet")
    if lag > config.max_loop_lag:
        return headroom(False, f"event loop lags {lag * 1000:.0f} ms (limit "
                               f"{config.max_loop_lag * 1000:.0f} ms)")
    if cpu + cost > capacity:
        return headroom(False, f"CPU {cpu:.2f} + {cost:.3f} per call > {capacity:.2f} cores")
    if loop_cpu + loop_cost > loop_capacity:
        return headroom(False, f"event loop thread and its workers {loop_cpu:.2f} + "
                               f"{loop_cost:.3f} per call > {loop_capacity:.2f} of one core")
    return headroom(True, "fits")


class Admission:
    """The hub's measurements and its decision; ``rooms()`` counts the rooms open now.

    ``cpu`` (default: :class:`NodeCpu`, this process and its helpers) and ``loop_cpu`` (default:
    :class:`InterpreterCpu`, which must be read in the event loop's thread, as ``run`` does)
    are cumulative CPU seconds; they and ``clock`` are injectable for tests."""

    def __init__(
        self,
        config: AdmissionConfig,
        rooms: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] | None = None,
        loop_cpu: Callable[[], float] | None = None,
        machine: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._rooms = rooms
        self._clock = clock
        self._cpu = cpu if cpu is not None else NodeCpu()
        self._loop_cpu = loop_cpu if loop_cpu is not None else InterpreterCpu()
        self._machine = machine if machine is not None else (
            MachineCpu() if config.count_machine else lambda: 0.0)
        self._samples: deque[Sample] = deque()
        self._remembered: tuple[float, float] | None = None
        self.refused = 0

    def record(self, lag: float = 0.0) -> None:
        """Take one sample now (``lag``: how late the loop woke up for it)."""
        now = self._clock()
        self._samples.append(Sample(now, self._cpu(), self._loop_cpu(), self._rooms(), lag,
                                    self._machine()))
        # Keep one sample older than the window: the window's first interval starts there.
        while len(self._samples) > 2 and self._samples[1].at < now - self.config.window_seconds:
            self._samples.popleft()
        measured = estimate(list(self._samples), self._rooms(), self.config)
        if measured.cost_per_call is not None and measured.loop_cost_per_call is not None:
            self._remembered = (measured.cost_per_call, measured.loop_cost_per_call)

    def headroom(self) -> Headroom:
        return estimate(list(self._samples), self._rooms(), self.config, self._remembered)

    def check(self) -> Headroom:
        """The headroom for a new room; raises `CallRefused` when it does not fit."""
        headroom = self.headroom()
        if not headroom.admit:
            self.refused += 1
            logger.warning("call refused (%d so far): %s; %d rooms open",
                           self.refused, headroom.reason, headroom.rooms)
            raise CallRefused(self.config.retry_after_seconds, headroom)
        return headroom

    async def run(self) -> None:
        """Sample forever, in the hub's event loop."""
        loop = asyncio.get_running_loop()
        interval = self.config.sample_interval
        self.record()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            self.record(max(0.0, loop.time() - before - interval))
