"""A Python party for the call hub, speaking the same contract as the H5 page.

Used by the tests and ``bench/call.py`` (and usable as a synthetic monitoring caller): it offers
conversation audio+video, a receive-only TTS audio line and the "control" data channel, waits
for ICE gathering (no trickle), answers keep-alive pings, and receives media without decoding
(frames are counted and, if asked, kept for the caller to decode).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from media.call.ice import enlarge_receive_buffers, rtc_configuration
from media.call.passthrough import tap_receiver
from media.recording.packets import EncodedPacket, vp8_is_keyframe

Signal = Callable[[str, str], Awaitable[tuple[str, str]]]
Line = Literal["audio", "video", "tts"]


class CallClient:
    """One party. ``signal(sdp, type)`` delivers the offer and returns the answer."""

    def __init__(
        self,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        keep_packets: bool = False,
        answer_pings: bool = True,
    ) -> None:
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.keep_packets = keep_packets
        self.answer_pings = answer_pings
        self.frames: dict[Line, int] = {"audio": 0, "video": 0, "tts": 0}
        self.packets: dict[Line, list[EncodedPacket]] = {"audio": [], "video": [], "tts": []}
        self.messages: list[dict[str, Any]] = []
        self.opened = asyncio.Event()
        self._lines = {
            "audio": self.pc.addTransceiver(audio or "audio", direction="sendrecv"),
            "video": self.pc.addTransceiver(video or "video", direction="sendrecv"),
            "tts": self.pc.addTransceiver("audio", direction="recvonly"),
        }
        self.channel: RTCDataChannel = self.pc.createDataChannel("control")
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)

    async def connect(self, signal: Signal) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers candidates
        enlarge_receive_buffers(self.pc, 1 << 20)
        sdp, type_ = await signal(self.pc.localDescription.sdp, self.pc.localDescription.type)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=type_))
        # The receivers start only once ICE and DTLS are up, so tapping here is in time.
        for line, transceiver in self._lines.items():
            if transceiver.receiver.track is not None:
                tap_receiver(transceiver.receiver, self._receiver(line))  # type: ignore[arg-type]

    async def wait_open(self, seconds: float = 15.0) -> None:
        await asyncio.wait_for(self.opened.wait(), seconds)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def close(self) -> None:
        await self.pc.close()

    def _receiver(self, line: Line) -> Callable[[Any, Any], None]:
        def on_frame(codec: Any, frame: Any) -> None:
            self.frames[line] += 1
            if self.keep_packets:
                data: bytes = frame.data
                self.packets[line].append(
                    EncodedPacket(
                        kind="video" if line == "video" else "audio",
                        data=data,
                        timestamp=frame.timestamp,
                        clock_rate=codec.clockRate,
                        keyframe=vp8_is_keyframe(data) if line == "video" else True,
                        received_at=time.time(),
                        epoch=0,
                    )
                )

        return on_frame

    def _on_message(self, raw: str | bytes) -> None:
        message = json.loads(raw)
        if message.get("type") == "ping":
            if self.answer_pings:
                self.send({"type": "pong", "seq": message["seq"]})
            return
        self.messages.append(message)
