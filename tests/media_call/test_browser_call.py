"""A call between two real headless Chromium peer connections through the hub (R-20, R-23,
R-31): the browsers' own VP8/Opus is relayed and recorded without re-encoding, the TTS clip
reaches both, the control channel works. Skipped where Debian's chromium is not installed."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from media.call import ClipFinished, PartyMessage, SegmentWritten
from media.recording import probe_segment
from tests.media_call.conftest import CallRig, write_wav

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGE = Path(__file__).with_name("browser_party.html")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")


async def test_r20_r23_r31_browsers_call_through_the_hub(
    make_rig: Callable[..., CallRig], tmp_path: Path
) -> None:
    rig = make_rig(include_loopback=True)
    session = "browser-1"
    clip = write_wav(tmp_path / "clip.wav", seconds=2.0, tone_hz=1000.0)
    result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html")

    async def join(request: web.Request) -> web.Response:
        body = await request.json()
        sdp, type_ = await rig.hub.join(session, body["role"], body["sdp"], body["type"])
        return web.json_response({"sdp": sdp, "type": type_})

    async def play(request: web.Request) -> web.Response:
        await rig.hub.play(session, "clip-1", clip)
        return web.json_response({})

    async def report(request: web.Request) -> web.Response:
        if not result.done():
            result.set_result(json.loads(await request.text()))
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.get("/", page), web.post("/join", join), web.post("/play", play),
                    web.post("/result", report)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    browser = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-port=0",
        f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        stats = await asyncio.wait_for(result, 60)
        await rig.hub.close(session)
    finally:
        browser.kill()
        await browser.wait()
        await runner.cleanup()

    assert "error" not in stats, stats
    for role in ("customer", "agent"):
        video = stats[role]["1"]
        assert video["kind"] == "video" and video["framesDecoded"] >= 45  # ~15 fps relayed
        assert video["frameWidth"] == 640
        assert stats[role]["0"]["totalAudioEnergy"] > 0  # the other party's microphone
        assert stats[role]["2"]["totalAudioEnergy"] > 0.01  # the TTS clip
        messages = stats[f"{role}Messages"]
        assert [m["type"] for m in messages] == ["tts_started", "tts_finished"]
    assert rig.events.of(ClipFinished)[0].complete
    assert {m.role for m in rig.events.of(PartyMessage)} == {"customer", "agent"}

    for kind in ("customer_av", "agent_av"):
        (segment,) = [e for e in rig.events.of(SegmentWritten) if e.kind == kind]
        probe = probe_segment(rig.storage / segment.path, decode_video=True)
        assert (probe.width, probe.height) == (640, 480)
        assert probe.decoded_video_frames == probe.video_frames >= 60
        assert probe.has_audio and segment.duration_ms >= 5000
