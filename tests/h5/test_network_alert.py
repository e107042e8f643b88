"""Network poor during the call (issue 17 item 2, R-30), in two real headless Chromiums: the
customer's phone (390×844, WeChat's user agent, fake camera and microphone) in the call, the
agent's console on a desktop. The customer's uplink is degraded for real — the page's video
sender is limited to 3 frames/s at a quarter of the resolution (RTCRtpSender.setParameters, what
Chrome itself does on a congested link) — and the server, from the page's getStats report and
the frames its aiortc hub receives, decides the network is poor: the console shows the live
alert with the reasons, the customer's page the Chinese hint, the timeline records it; lifting
the limit clears both. Then once more with a WebView whose getStats does not give the sent frame
rate and size: the server's own measure of the frames it receives decides.
Screenshots: network-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.sessions import SessionEvent
from tests.h5.conftest import chromium_context
from tests.h5.test_reentry import WECHAT_PHONE
from tests.harness import HERE, Harness

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(120)]

HINT = "网络信号较弱，请移到信号好的地方或连接 Wi-Fi"
# Every RTCPeerConnection the page makes, so the test can degrade the customer's video sender.
KEEP_PCS = """
window.__networkReportMs = 1600;
window.__pcs = [];
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = function (...args) {
  const pc = new Native(...args); window.__pcs.push(pc); return pc;
};
window.RTCPeerConnection.prototype = Native.prototype;
// A WebView whose getStats lacks the sent frame rate and size (older kernels): then only the
// server's own measure of what it receives can tell.
window.__hideSendStats = false;
const nativeStats = Native.prototype.getStats;
Native.prototype.getStats = async function (...args) {
  const report = await nativeStats.apply(this, args);
  if (!window.__hideSendStats) return report;
  const copy = new Map();
  report.forEach((s, id) => {
    if (s.type !== "outbound-rtp") { copy.set(id, s); return; }
    const { framesPerSecond, frameHeight, frameWidth, ...rest } = s;
    copy.set(id, rest);
  });
  return copy;
};
"""
LIMIT = """async ([fps, scale]) => {
  for (const pc of window.__pcs) for (const sender of pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    const p = sender.getParameters();
    p.encodings.forEach((e) => { e.maxFramerate = fps; e.scaleResolutionDownBy = scale; });
    await sender.setParameters(p);
  }
}"""


async def _events(sid: str, kind: str) -> list[SessionEvent]:
    return await SessionEvent.filter(session_id=sid, type=kind).order_by("seq")


async def test_a_poor_uplink_alerts_the_agent_and_hints_the_customer_until_it_recovers(
    harness: Harness, browser: Any, screenshot_dir: Path,
) -> None:
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start",
                          json={"location": HERE})
    assert r.status == 200, r.body
    await harness.pin_speech(walk)
    base = str(harness.client.make_url("/")).rstrip("/")

    # The agent's console, watching the session (it joins the call with its fake camera).
    await browser.grant_permissions(["geolocation"])
    await browser.set_geolocation({"latitude": HERE["lat"], "longitude": HERE["lng"],
                                   "accuracy": 15})
    console = await browser.new_page()
    await console.set_viewport_size({"width": 1280, "height": 900})
    await console.goto(f"{base}/console")
    await console.fill("#username", "agent01")
    await console.fill("#password", "demo-agent-01")
    await console.get_by_role("button", name="登录").click()
    await console.get_by_role("button", name="获取定位并检查").click()
    await console.locator("#sessions tr").first.click()
    await console.locator("#sessionState").wait_for()

    async with chromium_context(**WECHAT_PHONE) as phone:
        page = await phone.new_page()
        await page.add_init_script(KEEP_PCS)
        await page.add_init_script(
            f"sessionStorage.setItem('shuanglu.customer_token', '{walk.customer_token}')")
        await page.goto(f"{base}/h5/session")
        await page.wait_for_function(
            "window.__pcs.some((pc) => pc.connectionState === 'connected')", timeout=30000)
        assert await _events(sid, "network_poor") == []
        await page.evaluate(LIMIT, [3, 4])
        alert = console.locator("#netAlert")
        await alert.filter(has_text="客户网络信号较弱").wait_for(timeout=20000)
        hint = page.locator("#netHint")
        await hint.filter(has_text=HINT).wait_for(timeout=10000)
        poor = (await _events(sid, "network_poor"))[0]
        assert poor.actor_kind == "customer" and poor.data["reasons"], poor.data
        text = await alert.text_content() or ""
        assert any(reason in text for reason in poor.data["reasons"]), text
        box = await hint.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 844
        await page.screenshot(path=screenshot_dir / "network-01-customer-hint.png")
        await console.screenshot(path=screenshot_dir / "network-02-console-alert.png",
                                 full_page=True)

        await page.evaluate(LIMIT, [15, 1])
        await alert.wait_for(state="hidden", timeout=30000)
        await hint.wait_for(state="hidden", timeout=10000)
        recovered = await _events(sid, "network_recovered")
        assert len(recovered) == 1 and recovered[0].seq > poor.seq
        assert len(await _events(sid, "network_poor")) == 1  # no flapping
        await page.screenshot(path=screenshot_dir / "network-03-customer-recovered.png")

        # The same WebView without the sent frame rate and size in its getStats: the server
        # finds the customer's video thin in what its aiortc hub receives.
        await page.evaluate("window.__hideSendStats = true")
        await page.evaluate(LIMIT, [3, 4])
        await alert.filter(has_text="服务器收到的客户视频").wait_for(timeout=20000)
        await hint.filter(has_text=HINT).wait_for(timeout=10000)
        second = (await _events(sid, "network_poor"))[-1]
        assert second.seq > recovered[0].seq
        assert second.data["reasons"][0].startswith("服务器收到的客户视频"), second.data
        assert second.data["measures"]["recv_fps"] < 6 and "send_fps" not in second.data[
            "measures"]
        await page.evaluate(LIMIT, [15, 1])
        await alert.wait_for(state="hidden", timeout=30000)
        await hint.wait_for(state="hidden", timeout=10000)
    print(f"\nnetwork poor (page): {poor.data}\nrecovered: {recovered[0].data}\n"
          f"network poor (server): {second.data}")
