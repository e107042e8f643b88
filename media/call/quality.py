"""The customer's incoming video as the server receives it (issue 17 item 2, network poor): the
frame rate (frames arriving on the room's customer video stream) and the packet loss (aiortc's
inbound-rtp counters) between two readings. What the customer's page measures on its side is
added by the caller; the decision is `workflow.network_quality.assess`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from media.call.hub import CallHub, UnknownSession
from media.call.relay import PacketFanout
from media.recording.packets import EncodedPacket

# Readings closer together than this say too little about a rate.
MIN_WINDOW_S = 1.5


@dataclass(frozen=True)
class Inbound:
    """Over the window since the previous reading; None where this node cannot tell (the call
    room is on another node, the customer is not connected, or it is the first reading)."""

    fps: float | None = None
    loss_pct: float | None = None


@dataclass
class _Watch:
    source: PacketFanout
    unsubscribe: Callable[[], None]
    frames: int = 0
    last_frames: int = 0
    last_at: float = field(default_factory=time.monotonic)
    counts: tuple[int, int] | None = None

    def count(self, packet: EncodedPacket) -> None:
        self.frames += 1


class InboundMeter:
    """One watch per session whose customer reports its network here."""

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}

    async def read(self, hub: CallHub | None, session_id: str) -> Inbound:
        if hub is not None:
            for gone in [s for s in self._watches if not hub.has_room(s)]:
                self.forget(gone)  # the room closed without another report from its page
        if hub is None or "customer" not in hub.connected_roles(session_id):
            self.forget(session_id)
            return Inbound()
        try:
            source = hub.video_source(session_id, "customer")
        except UnknownSession:
            self.forget(session_id)
            return Inbound()
        counts = await hub.inbound_video_counts(session_id, "customer")
        watch = self._watches.get(session_id)
        if watch is None or watch.source is not source:
            self.forget(session_id)
            watch = _Watch(source, lambda: None, counts=counts)
            watch.unsubscribe = source.subscribe(watch.count)
            self._watches[session_id] = watch
            return Inbound()  # a baseline only
        now = time.monotonic()
        elapsed = now - watch.last_at
        if elapsed < MIN_WINDOW_S:
            return Inbound()
        fps = (watch.frames - watch.last_frames) / elapsed
        loss: float | None = None
        if counts is not None and watch.counts is not None:
            received, lost = (counts[0] - watch.counts[0], counts[1] - watch.counts[1])
            if received >= 0 and lost >= 0 and received + lost > 0:  # else: a rejoin reset
                loss = 100.0 * lost / (received + lost)
        watch.last_frames, watch.last_at, watch.counts = watch.frames, now, counts
        return Inbound(round(fps, 1), None if loss is None else round(loss, 1))

    def forget(self, session_id: str) -> None:
        watch = self._watches.pop(session_id, None)
        if watch is not None:
            watch.unsubscribe()

    def watching(self) -> list[str]:
        return list(self._watches)
