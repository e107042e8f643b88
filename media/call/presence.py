"""Low-rate sampling of a party's video in the call hub, for the presence monitor (R-13).

The hub relays and records the parties' VP8 frames without decoding them. Presence needs a
picture about once a second, so a :class:`VideoSampler` watches one role's video stream of a
room and, when a sample is due, asks the sender for a key frame (an RTCP PLI through the
stream's :class:`~media.call.relay.PacketFanout`), decodes that key frame alone with PyAV and
hands ``(t, BGR ndarray)`` to an ``analyse`` function. Inter frames are never decoded: a VP8 key
frame decodes on its own, so sampling costs one key-frame decode per sample, whatever the frame
rate.

Threads: decoding and ``analyse`` run in a small worker pool owned by the hub
(:class:`media.call.sampling.SamplingPool`), never in the event loop. A sampler has at most one
sample in flight (waiting for a worker or running): a key frame that arrives meanwhile is
dropped, and the next one is requested once the sample is done. When every worker is busy with
other rooms the sample waits for its turn, and the pool serves the room whose sample fell due
first: with more rooms than the workers can serve every room is sampled less often, evenly,
never starved (a sample is dated by its frame, so a late one is still true of its moment; the
presence monitor reads a stretch without samples as unknown, not as absence). What ``analyse``
returns is passed, in the event loop and in sample order, to ``on_result``. A thread does not
help an analysis that holds the GIL (dlib face detection and embedding do, 0.05–0.14 s when
they run): that stalls the loop all the same, so such work belongs in another process — the
application's presence analysis runs in :mod:`media.identity.presence_host`, and ``analyse``
only waits.

Time: ``t`` is seconds from ``origin`` (a POSIX time; the bridge passes the session's
``recording_started_at``, the zero of the QA timeline). A frame's wall-clock time comes from
:class:`media.recording.MediaClock`, the mapping the recorder uses for the segments'
``started_at``, fed with every packet of the stream: so a mark at ``t`` is at
``origin + t - segment.started_at`` seconds into the segment that holds the frame, and at
``t * 1000`` ms on the QA timeline. Samples are at least ``1 / sample_fps`` apart in ``t`` (the
spacing the presence monitor keeps); a key frame arrives one round trip after it is asked for,
so the effective rate is slightly below ``sample_fps``.

Lifecycle: the hub registers a sampler per room and role (:meth:`CallHub.watch_video`),
attaches it to each connection of that role (a rejoin is a new epoch: the decoder and the clock
start again, the analysis state carries on) and detaches it when the connection ends, which
removes its subscription from the stream. Closing the room closes the sampler: it waits for the
sample in flight and for its results to be delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import av
import numpy as np
from numpy.typing import NDArray

from media.call.events import Role
from media.call.relay import PacketFanout
from media.call.sampling import SamplingPool
from media.recording.packets import EncodedPacket
from media.recording.segments import MediaClock

logger = logging.getLogger(__name__)

T = TypeVar("T")
Frame = NDArray[np.uint8]
# A key frame that was asked for and has not come is asked for again after this long (s).
_REQUEST_RETRY_SECONDS = 0.5


@dataclass
class SamplerStats:
    """What a sampler saw and did; CPU times are the worker thread's (``time.thread_time``)."""

    packets: int = 0  # every packet received (all consumed; only key frames may be decoded)
    keyframes: int = 0
    keyframe_requests: int = 0
    samples: int = 0  # key frames decoded and analysed
    dropped_busy: int = 0  # due key frames dropped because a sample was still waiting or running
    waited: int = 0  # samples that waited for a worker busy with other rooms
    replaced: int = 0  # waiting samples whose frame a fresher key frame replaced
    max_wait_s: float = 0.0  # the longest a sample waited for a worker
    decode_errors: int = 0
    analyse_errors: int = 0
    decode_cpu_s: float = 0.0  # decoding + conversion to BGR
    analyse_cpu_s: float = 0.0
    first_t: float | None = None  # time of the first and the last sample taken
    last_t: float | None = None
    max_gap_s: float = 0.0  # the longest time between two samples (including any rejoin gap)

    def per_sample_ms(self) -> tuple[float, float]:
        """Average CPU milliseconds per sample: (decode, analyse)."""
        n = max(self.samples, 1)
        return self.decode_cpu_s * 1000 / n, self.analyse_cpu_s * 1000 / n


class VideoSampler(Generic[T]):
    """Samples one role's video of one room (see the module docstring). Loop-bound: every
    method but the worker job runs in the event loop that owns the hub."""

    def __init__(
        self,
        role: Role,
        analyse: Callable[[float, Frame], T],
        *,
        pool: SamplingPool,
        sample_fps: float = 1.0,
        origin: float = 0.0,
        on_result: Callable[[T], Awaitable[None] | None] | None = None,
        name: str = "",
    ) -> None:
        if sample_fps <= 0:
            raise ValueError("sample_fps must be positive")
        self.role = role
        self.name = name or role
        self.period = 1.0 / sample_fps
        self.origin = origin
        self.stats = SamplerStats()
        self._analyse = analyse
        self._on_result = on_result
        self._pool = pool
        self._fanout: PacketFanout | None = None
        self._epoch: int | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._clock = MediaClock()
        self._decoder: Any = None  # av.CodecContext, used by one worker job at a time
        self._decoder_epoch: int | None = None
        self._last_t: float | None = None
        self._attached_at: float | None = None  # POSIX time of the first attach
        self._previous_t: float | None = None  # the sample before the one in flight
        self._submitted = 0.0  # when the sample in flight was submitted (monotonic)
        self._requested_at = 0.0
        self._in_flight: asyncio.Future[None] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def attached_epoch(self) -> int | None:
        return self._epoch

    def attach(self, fanout: PacketFanout, epoch: int) -> None:
        """Start sampling ``fanout`` for the party connection ``epoch``."""
        if self._closed:
            return
        self.detach()
        self._fanout, self._epoch = fanout, epoch
        self._unsubscribe = fanout.subscribe(self._on_packet)
        self._requested_at = 0.0
        if self._attached_at is None:
            self._attached_at = time.time()
        self._ticker = asyncio.get_running_loop().create_task(self._request_loop())
        self._ticker.add_done_callback(_log_failure)

    def detach(self, epoch: int | None = None) -> None:
        """Stop sampling (only if attached to ``epoch``, when given): unsubscribe, stop asking
        for key frames. A sample in flight still completes and is delivered."""
        if epoch is not None and epoch != self._epoch:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._ticker is not None:
            self._ticker.cancel()
        self._unsubscribe = self._ticker = self._fanout = self._epoch = None

    async def close(self) -> None:
        """Detach for good; wait for the sample in flight and the delivery of every result."""
        self._closed = True
        self.detach()
        self._pool.withdraw(self)  # a sample still waiting for a worker is not taken
        if self._in_flight is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._in_flight)
        if self._delivery is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._delivery)
        decode_ms, analyse_ms = self.stats.per_sample_ms()
        logger.info(
            "%s: %d samples from %d key frames (%d packets), %d dropped while busy; "
            "CPU per sample: decode %.1f ms, analysis %.1f ms",
            self.name, self.stats.samples, self.stats.keyframes, self.stats.packets,
            self.stats.dropped_busy, decode_ms, analyse_ms,
        )

    # -- packets ---------------------------------------------------------------------------

    def _busy(self) -> bool:
        return self._in_flight is not None and not self._in_flight.done()

    def _on_packet(self, packet: EncodedPacket) -> None:
        self.stats.packets += 1
        wall = self._clock.map(packet)  # every packet, as the recorder does
        if not packet.keyframe or packet.epoch != self._epoch:
            return
        self.stats.keyframes += 1
        t = wall - self.origin
        if self._last_t is not None and t - self._last_t < self.period - 1e-6:
            return  # not due (a key frame someone else asked for)
        submitted = self._submitted
        if self._busy():
            # Still waiting for its turn: the fresher frame takes its place (same turn).
            if self._pool.replace(self, lambda: self._job(packet, t, submitted)):
                self.stats.replaced += 1
                self._taken(t)
            else:  # being analysed
                self.stats.dropped_busy += 1
            return
        self._submitted = submitted = time.monotonic()
        future = self._pool.submit(self, self._due(), lambda: self._job(packet, t, submitted))
        self._previous_t = self.stats.last_t
        self._taken(t)
        self._in_flight = asyncio.ensure_future(self._finish(future))
        self._in_flight.add_done_callback(_log_failure)

    def _taken(self, t: float) -> None:
        """``t`` is the time of the sample in flight (submitted, or replacing the waiting one)."""
        stats = self.stats
        if self._previous_t is None:
            stats.first_t = t
        else:
            stats.max_gap_s = max(stats.max_gap_s, t - self._previous_t)
        self._last_t = stats.last_t = t

    def _due(self) -> float:
        """POSIX time the next sample falls due: a period after the last one (the first one:
        when the sampler was first attached). The pool serves the earliest first."""
        if self._last_t is not None:
            return self.origin + self._last_t + self.period
        return self._attached_at if self._attached_at is not None else time.time()

    async def _finish(self, future: asyncio.Future[tuple[bool, Any]]) -> None:
        try:
            ok, result = await future
        except asyncio.CancelledError:
            if not future.cancelled():
                raise
            return  # withdrawn before a worker took it (the room closed)
        finally:
            self._wake.set()  # a sample may be due right away
        if ok:
            self._deliver(result)

    def _deliver(self, result: T) -> None:
        if self._on_result is None:
            return
        previous = self._delivery

        async def deliver() -> None:
            if previous is not None:  # results go out in sample order
                with contextlib.suppress(Exception):
                    await previous
            assert self._on_result is not None
            outcome = self._on_result(result)
            if inspect.isawaitable(outcome):
                await outcome

        self._delivery = asyncio.get_running_loop().create_task(deliver())
        self._delivery.add_done_callback(_log_failure)

    # -- the worker job --------------------------------------------------------------------

    def _job(self, packet: EncodedPacket, t: float, submitted: float) -> tuple[bool, Any]:
        """In a worker thread: decode the key frame, run the analysis. (ok, result)."""
        waited = time.monotonic() - submitted
        if waited > 0.005:  # more than the hand-over: it waited for other rooms' samples
            self.stats.waited += 1
        self.stats.max_wait_s = max(self.stats.max_wait_s, waited)
        started = time.thread_time()
        try:
            if self._decoder is None or self._decoder_epoch != packet.epoch:
                # A new connection may bring another picture size: start a fresh decoder.
                self._decoder = av.CodecContext.create("vp8", "r")
                self._decoder.thread_count = 1  # a few ms a key frame: no threads per room
                self._decoder_epoch = packet.epoch
            frames = self._decoder.decode(av.Packet(packet.data))
            if not frames:
                raise ValueError("the key frame did not decode to a picture")
            image: Frame = frames[-1].to_ndarray(format="bgr24")
        except Exception as error:
            self.stats.decode_errors += 1
            self._decoder = None
            logger.warning("%s: key frame not decoded: %s", self.name, error)
            return False, None
        finally:
            self.stats.decode_cpu_s += time.thread_time() - started
        started = time.thread_time()
        try:
            result = self._analyse(t, image)
        except Exception:
            self.stats.analyse_errors += 1
            logger.exception("%s: analysis of the sample at %.3f s failed", self.name, t)
            return False, None
        finally:
            self.stats.analyse_cpu_s += time.thread_time() - started
        self.stats.samples += 1
        return True, result

    # -- key frame requests ----------------------------------------------------------------

    async def _request_loop(self) -> None:
        """Ask for a key frame whenever a sample is due and the sampler is free; ask again if
        none came. Sleeps until the next due time or a finished sample wakes it."""
        loop = asyncio.get_running_loop()
        while True:
            now = time.time()
            due = self.origin + self._last_t + self.period if self._last_t is not None else now
            if now < due:
                wait = due - now
            elif self._busy() and not self._pool.is_waiting(self):
                # Until the sample being analysed ends (which wakes this). A due sample asks
                # for its key frame even when the pool is busy, and one waiting for its turn
                # asks for a fresher one each period (the rate of an unhurried call).
                wait = _REQUEST_RETRY_SECONDS
            elif loop.time() - self._requested_at >= min(_REQUEST_RETRY_SECONDS, self.period):
                fanout = self._fanout
                if fanout is not None:
                    fanout.request_keyframe()
                    self.stats.keyframe_requests += 1
                self._requested_at = loop.time()
                wait = min(_REQUEST_RETRY_SECONDS, self.period)
            else:
                wait = self._requested_at + min(_REQUEST_RETRY_SECONDS, self.period) - loop.time()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see bot/runtime.py
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._wake.wait()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("video sampler task failed", exc_info=task.exception())
