"""The only place that reaches into aiortc's private internals (pinned: aiortc==1.16.*).

aiortc has no public API for encoded frames on the receiving side: ``RTCRtpReceiver`` always
decodes (VP8 640×480 costs most of a core per few calls) and hands decoded frames to a track
that must then be read, or frames pile up without bound. The hub needs neither: it forwards the
encoded frames to the other party and writes them to disk as they are. So:

* :func:`tap_receiver` swaps the receiver's decoder input queue for a stand-in *before* the
  receiver starts. The receiver's RTP path (SRTP, NACK, jitter buffer, RTCP, PLI on loss) stays
  aiortc's own; each complete encoded frame it would queue for its decoder thread is handed to
  us instead, in the event loop. The decoder thread is still started by aiortc but only waits
  for the stop signal (it decodes nothing), and the remote track never receives a frame, so
  nothing accumulates.
* :func:`forward_keyframe_requests` makes a sender pass the far end's PLI/FIR on to us: a
  sender of pre-encoded frames cannot make a key frame itself, the original sender must.
* :func:`request_keyframe` sends a PLI from a receiver to its remote sender.

On the sending side aiortc does support encoded input publicly: a track whose ``recv()`` returns
an ``av.Packet`` is packetised without encoding (``Encoder.pack``).

If aiortc changes these internals the check in :func:`tap_receiver` fails loudly at the first
call rather than silently decoding again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = "1.16."
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_STARTED = "_RTCRtpReceiver__started"

# (codec parameters, aiortc JitterFrame with .data and .timestamp) for every complete frame.
FrameHandler = Callable[[Any, Any], None]
_pending_plis: set[asyncio.Future[None]] = set()  # strong references until sent


class _TapQueue:
    """Stands in for the ``queue.Queue`` between ``RTCRtpReceiver`` and its decoder thread.

    ``put`` is called from the event loop with ``(codec, frame)`` for each complete frame, and
    with ``None`` when the receiver stops; the decoder thread blocks in ``get`` until then and
    ends the remote track, as it would after decoding.
    """

    def __init__(self, on_frame: FrameHandler) -> None:
        self._on_frame = on_frame
        self._stopped = threading.Event()

    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._stopped.set()
            return
        codec, frame = item
        try:
            self._on_frame(codec, frame)
        except Exception:  # a consumer bug must not break aiortc's RTP path
            logger.exception("encoded frame handler failed")

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        self._stopped.wait()
        return None


def tap_receiver(receiver: RTCRtpReceiver, on_frame: FrameHandler) -> None:
    """Deliver ``receiver``'s encoded frames to ``on_frame`` instead of decoding them.

    Must be called before the receiver starts (i.e. between ``setRemoteDescription`` and the
    connection being established), which is when the hub calls it.
    """
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        raise RuntimeError(
            f"media.call.passthrough is written for aiortc {SUPPORTED_AIORTC}*, "
            f"found {aiortc.__version__}: re-check RTCRtpReceiver internals"
        )
    if not hasattr(receiver, _DECODER_QUEUE) or getattr(receiver, _STARTED, True):
        raise RuntimeError("RTCRtpReceiver internals changed or receiver already started")
    setattr(receiver, _DECODER_QUEUE, _TapQueue(on_frame))


def request_keyframe(receiver: RTCRtpReceiver) -> None:
    """Ask the remote sender of ``receiver`` for a key frame (RTCP PLI)."""
    sources = receiver.getSynchronizationSources()
    if not sources:
        return
    ssrc = max(sources, key=lambda source: source.timestamp).source
    # _send_rtcp_pli is what aiortc itself calls on picture loss; it swallows send errors.
    task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
    _pending_plis.add(task)
    task.add_done_callback(_pending_plis.discard)


def forward_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Call ``on_request`` when the far end of ``sender`` asks for a key frame (PLI/FIR).

    aiortc's ``_handle_rtcp_packet`` calls ``self._send_keyframe()``, which only flags its own
    encoder; an instance attribute shadows that method for this sender alone.
    """
    last = [0.0]

    def forward() -> None:
        now = time.monotonic()
        if now - last[0] >= 0.3:  # browsers repeat PLIs; one upstream request is enough
            last[0] = now
            on_request()

    sender._send_keyframe = forward  # type: ignore[method-assign]
