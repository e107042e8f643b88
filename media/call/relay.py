"""Forwarding of encoded frames inside a room, without decoding (the call's media path).

A :class:`PacketFanout` is one source stream of a room (the customer's video, the agent's
audio, the TTS audio, ...). Whoever currently feeds it publishes encoded frames; subscribers
(the other party's outgoing tracks, the recorder) get each frame. :class:`RelayTrack` is the
aiortc track that sends one fanout to one party: its ``recv()`` returns ``av.Packet``s, which
aiortc packetises as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.recording.packets import EncodedPacket, MediaKind

logger = logging.getLogger(__name__)

Subscriber = Callable[[EncodedPacket], None]


class PacketFanout:
    """One stream of a room; survives the reconnection of the party that feeds it."""

    def __init__(self, name: str, kind: MediaKind) -> None:
        self.name = name
        self.kind = kind
        self._subscribers: list[Subscriber] = []
        self._keyframe_source: Callable[[], None] | None = None
        self._keyframe_owner: int | None = None

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, packet: EncodedPacket) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(packet)
            except Exception:  # one broken consumer must not starve the others
                logger.exception("%s: subscriber failed", self.name)

    def set_keyframe_source(self, request: Callable[[], None], owner: int) -> None:
        """How to get a key frame out of whoever feeds this stream now (a PLI upstream)."""
        self._keyframe_source = request
        self._keyframe_owner = owner

    def clear_keyframe_source(self, owner: int) -> None:
        if self._keyframe_owner == owner:
            self._keyframe_source = None
            self._keyframe_owner = None

    def request_keyframe(self) -> None:
        if self._keyframe_source is not None:
            self._keyframe_source()


class RelayTrack(MediaStreamTrack):
    """Sends one fanout to one party as encoded packets.

    The queue is bounded: a party that cannot keep up loses frames instead of growing memory
    (a video subscriber then skips to the next key frame, which it requests). Timestamps are
    rewritten onto one continuous clock, because the source restarts its RTP clock whenever
    the feeding party reconnects and a browser's jitter buffer must not see time run backwards.
    """

    def __init__(self, fanout: PacketFanout, *, max_queue: int = 64) -> None:
        super().__init__()
        self.kind = fanout.kind
        self._fanout = fanout
        self._queue: asyncio.Queue[EncodedPacket | None] = asyncio.Queue(max_queue)
        self._need_keyframe = fanout.kind == "video"
        self._epoch: int | None = None
        self._offered_epoch: int | None = None
        self._last_in_ts = 0
        self._last_out_ts = 0
        self._last_received_at = 0.0
        self.packets_sent = 0
        self._unsubscribe = fanout.subscribe(self._offer)
        if self._need_keyframe:
            fanout.request_keyframe()

    def _offer(self, packet: EncodedPacket) -> None:
        if packet.epoch != self._offered_epoch:
            self._offered_epoch = packet.epoch
            self._need_keyframe = self.kind == "video"
        if self._need_keyframe:
            if not packet.keyframe:
                return
            self._need_keyframe = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self._drain()
            if self.kind == "video":
                self._need_keyframe = True
                self._fanout.request_keyframe()
            else:
                self._queue.put_nowait(packet)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        clock_rate = packet.clock_rate
        if self._epoch is None:
            out_ts = 0
        elif packet.epoch != self._epoch:
            # the source reconnected: continue from where we were, by wall-clock elapsed time
            elapsed = max(packet.received_at - self._last_received_at, 0.02)
            out_ts = self._last_out_ts + round(elapsed * clock_rate)
        else:
            out_ts = self._last_out_ts + max(packet.timestamp - self._last_in_ts, 0)
        self._epoch = packet.epoch
        self._last_in_ts = packet.timestamp
        self._last_out_ts = out_ts
        self._last_received_at = packet.received_at
        out = av.Packet(packet.data)
        out.pts = out_ts
        out.time_base = Fraction(1, clock_rate)
        self.packets_sent += 1
        return out

    def stop(self) -> None:
        self._unsubscribe()
        if self.readyState == "live":
            self._drain()
            self._queue.put_nowait(None)
        super().stop()
