"""Network poor (issue 17 item 2, R-30): the server measures the customer's incoming video itself
(frames arriving, aiortc's inbound-rtp loss) over a real aiortc connection on loopback, and the
decision (`workflow.network_quality.assess`) turns poor when the customer's video thins out
and good again when it recovers; the page's own measures (loss, round trip, frame rate,
resolution) count the same way, with two thresholds so a connection near a limit does not
flap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import av
import pytest
from aiortc import MediaStreamTrack

from media.call.client import CallClient
from media.call.quality import InboundMeter
from testing.call_media import PrerecordedTrack
from tests.media_call.conftest import SESSION, CallRig
from workflow.network_quality import Measures, assess

pytestmark = pytest.mark.timeout(30)


class ThinningTrack(MediaStreamTrack):
    """The customer's camera over a link that loses most frames when `poor` is set."""

    kind = "video"

    def __init__(self, inner: PrerecordedTrack) -> None:
        super().__init__()
        self.inner = inner
        self.poor = False
        self._n = 0

    async def recv(self) -> av.Packet:
        while True:
            packet = await self.inner.recv()
            self._n += 1
            if not self.poor or self._n % 5 == 0:  # 15 fps → 3 fps
                return packet


async def test_the_server_measures_the_incoming_video_and_decides(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig()
    media = rig.media["customer"]
    camera = ThinningTrack(PrerecordedTrack(media, "video"))
    client = CallClient(audio=PrerecordedTrack(media, "audio"), video=camera)
    rig.clients.append(client)

    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        return await rig.hub.join(SESSION, "customer", sdp, type_)

    await client.connect(signal)
    await client.wait_open()
    meter = InboundMeter()
    assert (await meter.read(rig.hub, SESSION)).fps is None  # the baseline
    await asyncio.sleep(2.0)
    good = await meter.read(rig.hub, SESSION)
    assert good.fps is not None and 11 <= good.fps <= 19, good
    assert good.loss_pct == 0.0
    assert assess(Measures(recv_fps=good.fps, recv_loss_pct=good.loss_pct))[0] == "good"

    camera.poor = True
    await asyncio.sleep(2.0)
    poor = await meter.read(rig.hub, SESSION)
    assert poor.fps is not None and poor.fps < 6, poor
    verdict, reasons = assess(Measures(recv_fps=poor.fps, recv_loss_pct=poor.loss_pct))
    assert verdict == "poor" and reasons[0].startswith("服务器收到的客户视频")

    camera.poor = False
    await asyncio.sleep(2.0)
    again = await meter.read(rig.hub, SESSION)
    assert again.fps is not None and again.fps >= 10, again
    assert meter.watching() == [SESSION]

    await rig.hub.leave(SESSION, "customer")
    assert (await meter.read(rig.hub, SESSION)).fps is None
    assert meter.watching() == []  # the watch ends with the customer's connection
    await client.close()

    # A room that closes while watched is let go at the next reading of any session.
    other = await rig.join("customer", "s-test-2")
    assert (await meter.read(rig.hub, "s-test-2")).fps is None
    assert meter.watching() == ["s-test-2"]
    await rig.hub.close("s-test-2")
    await other.close()
    await meter.read(rig.hub, SESSION)
    assert meter.watching() == []


def test_the_decision_has_two_thresholds_and_names_its_reasons() -> None:
    assert assess(Measures(loss_pct=1, rtt_ms=80, send_fps=15, send_height=480)) == ("good", [])
    verdict, reasons = assess(Measures(loss_pct=18, rtt_ms=950, send_fps=15, send_height=480))
    assert verdict == "poor" and reasons == ["客户上行丢包 18%", "网络往返时延 950 毫秒"]
    assert assess(Measures(send_fps=12, send_height=120))[1] == ["客户视频分辨率降至 120p"]
    # Between the limits: neither poor nor recovered (the last decision stands).
    assert assess(Measures(loss_pct=6, rtt_ms=80))[0] == "unsure"
    assert assess(Measures(recv_fps=8))[0] == "unsure"
    assert assess(Measures())[0] == "good"  # nothing known: nothing to alert on
    # Fewer, smaller frames from a slow phone (the browser says "cpu") are not the network.
    assert assess(Measures(send_fps=3, send_height=120, recv_fps=3, limitation="cpu")) == (
        "good", [])
    assert assess(Measures(loss_pct=15, send_fps=3, limitation="cpu"))[1] == ["客户上行丢包 15%"]
    assert assess(Measures(send_fps=3, limitation="bandwidth"))[0] == "poor"
