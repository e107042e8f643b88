"""The whole call in two real headless Chromium pages (customer and agent console) against the
running server (R-20, R-23, R-24, R-25, R-30, R-31): the call connects through the hub, every
step's speech reaches the customer's browser, every answer is clicked, the signature drawn;
the session is sealed; the recordings decode; `verify` passes, and fails after one byte of a
segment is changed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from app.factory import speech_settings
from media.recording import probe_segment
from models.sessions import Acknowledgement, Recording, RecordingSession, SessionEvent
from scripts_library.catalogue import LIBRARY_DIR
from tests.harness import HERE, Harness
from workflow.expiry import sweep
from workflow.sealing import verify_manifest
from workflow.speech import prepare_session_speech

pytestmark = pytest.mark.one_database
KEEP_TEXT = {"agent-identity", "insurer", "product"}


def short_script() -> str:
    """The sample whole-life script with short spoken texts (it still passes the lint), so the
    call lasts seconds rather than the eight minutes of the real disclosures."""
    source = (LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml").read_text(encoding="utf-8")
    lines, step = [], None
    for line in source.replace("  version: 1\n", "  version: 2\n", 1).split("\n"):
        if line.startswith("  - id: "):
            step = line.split(": ", 1)[1].strip()
        if line.startswith("    text: ") and step not in KEEP_TEXT:
            text = ("犹豫期为{cooling_off_days}日，您是否清楚？" if step == "cooling-off"
                    else "{customer_name}，请确认本项，您是否清楚？")
            line = f'    text: "{text}"'
        lines.append(line)
    return "\n".join(lines)


async def _publish_short_script(harness: Harness) -> None:
    r = await harness.as_("po01", "POST", "/scripts", json={"yaml": short_script()})
    assert r.status == 201, r.body
    for user, action in [("po01", "submit"), ("po02", "approve"), ("po02", "publish")]:
        assert (await harness.as_(user, "POST", f"/scripts/{r.body['id']}/{action}")).status == 200


async def _draw(page: Any, selector: str) -> None:
    await page.locator(selector).scroll_into_view_if_needed()
    box = await page.locator(selector).bounding_box()
    await page.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
    await page.mouse.down()
    for i in range(12):
        await page.mouse.move(box["x"] + 30 + i * 15, box["y"] + 30 + (i % 2) * 40)
    await page.mouse.up()


async def _speech_played(harness: Harness, sid: str, step_id: str) -> None:
    """Waits for the hub to report this step's speech played to the end (bounded)."""
    for _ in range(300):
        events = await SessionEvent.filter(session_id=sid, type="tts_played")
        if any(e.data["step_id"] == step_id for e in events):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the speech of step {step_id} was not played")


TTS_AUDIO = """async () => {
  const stats = await window.__call.pc.getStats();
  let best = {energy: 0, packets: 0};
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio" && s.mid === window.__ttsMid)
      best = {energy: s.totalAudioEnergy || 0, packets: s.packetsReceived || 0};
  });
  return best;
}"""


async def test_a_whole_call_in_two_browsers_is_recorded_sealed_and_verifiable(
    harness: Harness, browser: Any, screenshot_dir: Path
) -> None:
    await _publish_short_script(harness)
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    spoken = await prepare_session_speech(harness.deps, speech_settings(harness.config),
                                          harness.redis, UUID(sid))
    base = str(harness.client.make_url("/"))

    customer = await browser.new_page()
    await customer.add_init_script(
        f"sessionStorage.setItem('shuanglu.customer_token', '{walk.customer_token}')")
    # Expose the page's call for getStats (the TTS arrives on the second audio line).
    await customer.add_init_script("""
      const Original = RTCPeerConnection;
      window.RTCPeerConnection = function (...args) {
        const pc = new Original(...args);
        window.__call = {pc};
        pc.addEventListener("track", (e) => {
          if (e.track.kind === "audio" && e.transceiver.direction === "recvonly")
            window.__ttsMid = e.transceiver.mid;
        });
        return pc;
      };
      window.RTCPeerConnection.prototype = Original.prototype;
    """)
    await customer.goto(f"{base}h5/session")
    await customer.get_by_text("正在等待销售人员接入视频").wait_for()

    await browser.grant_permissions(["geolocation"])
    await browser.set_geolocation({"latitude": HERE["lat"], "longitude": HERE["lng"],
                                   "accuracy": 15})
    agent = await browser.new_page()
    await agent.set_viewport_size({"width": 1280, "height": 900})
    await agent.goto(f"{base}console")
    await agent.fill("#username", "agent01")
    await agent.fill("#password", "demo-agent-01")
    await agent.get_by_role("button", name="登录").click()
    await agent.get_by_role("button", name="获取定位并检查").click()
    await agent.get_by_role("cell", name="身份已核验").click()
    await agent.get_by_role("button", name="开始通话").click()
    await agent.get_by_role("button", name="开始讲解话术").click()

    yes = customer.locator("#yes")
    energies = []
    while True:
        state = await harness.request("GET", "/customer/session", token=walk.customer_token)
        step = state.body["current_step"]
        if state.body["state"] != "disclosing":
            break
        if step["answer"] == "signature":
            await _speech_played(harness, sid, step["id"])
            await customer.get_by_role("heading", name="请在下方亲笔签名").wait_for()
            await _draw(customer, "#signPad")
            await customer.get_by_role("button", name="确认提交").click()
        elif step["answer"] == "none":
            pass  # the closing words: the step moves on once they have been played in full
        else:
            if step["speaker"] == "tts":
                await _speech_played(harness, sid, step["id"])
            await customer.wait_for_function(
                "() => !document.querySelector('#yes').disabled")
            await yes.click()
        await customer.wait_for_function(
            """async (index) => {
                const r = await fetch('/api/v1/customer/session', {headers: {Authorization:
                  'Bearer ' + sessionStorage.getItem('shuanglu.customer_token')}});
                const s = await r.json();
                return s.state !== 'disclosing' || s.current_step.index !== index;
            }""", arg=step["index"], timeout=60_000)
        energies.append(await customer.evaluate(TTS_AUDIO))
    await customer.screenshot(path=screenshot_dir / "call-customer-signed.png", full_page=True)
    await agent.screenshot(path=screenshot_dir / "call-agent-console.png")
    finish = agent.get_by_role("button", name="完成录制")
    await finish.wait_for(timeout=60_000)  # the console polls every 3 s besides its socket
    await finish.click()
    await customer.get_by_role("heading", name="录制已完成").wait_for(timeout=30_000)

    # Every TTS step was played in full, and the customer's browser received its audio.
    played = await SessionEvent.filter(session_id=sid, type="tts_played")
    complete = {e.data["step_id"] for e in played if e.data["complete"]}
    session = await RecordingSession.get(id=sid)
    tts_steps = {s["id"] for s in session.steps if s["speaker"] == "tts"}
    assert len(tts_steps) == spoken and tts_steps <= complete, tts_steps - complete
    assert energies[-1]["packets"] > 100 and energies[-1]["energy"] > 0
    acks = await Acknowledgement.filter(session_id=sid).values_list("step_id", flat=True)
    assert set(acks) == {s["id"] for s in session.steps if s["answer"] != "none"}

    # Sealed, with every recorded segment in the manifest; the files decode.
    result = await sweep(harness.deps)
    assert sid in {str(s) for s in result.sealed}
    recordings = await Recording.filter(session_id=sid)
    assert {r.kind for r in recordings} == {"customer_av", "agent_av", "tts"}
    for recording in recordings:
        probe = probe_segment(harness.deps.storage.root / recording.path)
        assert probe.duration_ms > 1000
        if recording.kind != "tts":
            assert probe.frame_rate and probe.frame_rate > 10
    assert await verify_manifest(harness.deps, UUID(sid)) == []

    # One byte changed in one segment: verification names it.
    victim = next(r for r in recordings if r.kind == "customer_av")
    path = harness.deps.storage.root / victim.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o640)
    path.write_bytes(bytes(data))
    problems = await verify_manifest(harness.deps, UUID(sid))
    assert problems == [f"recording:customer_av:{victim.segment} was altered or is missing"]
