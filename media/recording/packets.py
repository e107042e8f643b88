"""Encoded media packets as they travel from the call hub to the recorder (R-30).

The recorder never sees decoded frames: it writes the VP8 and Opus frames exactly as the
parties' browsers encoded them, so this module also knows the few bits of the VP8 bitstream
the recorder needs (key frame flag, picture size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MediaKind = Literal["audio", "video"]

OPUS_CLOCK_RATE = 48_000
VP8_CLOCK_RATE = 90_000
OPUS_FRAME_SECONDS = 0.02  # WebRTC Opus uses 20 ms frames (aiortc's and browsers' default)


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One complete encoded frame (all RTP packets of a picture, or one Opus packet).

    ``timestamp`` counts ``clock_rate`` ticks and is only comparable with packets of the same
    ``epoch`` (one epoch per party connection: a rejoin restarts the RTP clock).
    ``received_at`` is the wall clock (``time.time()``) when the frame was complete.
    """

    kind: MediaKind
    data: bytes
    timestamp: int
    clock_rate: int
    keyframe: bool
    received_at: float
    epoch: int


def vp8_is_keyframe(frame: bytes) -> bool:
    """True for a VP8 key frame (RFC 6386 §9.1: bit 0 of the frame tag is 0)."""
    return len(frame) >= 10 and not frame[0] & 0x01 and frame[3:6] == b"\x9d\x01\x2a"


def vp8_picture_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header, or None for an inter frame."""
    if not vp8_is_keyframe(frame):
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height
