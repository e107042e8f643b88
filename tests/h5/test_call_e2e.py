"""The whole session in two real headless Chromium browsers (the customer's phone and the agent
console) against the running server (R-10, R-12, R-20, R-23, R-24, R-25, R-30, R-31).

The agent creates the session in the console and sends the invitation; the customer opens the
link, gives both consents, uploads a synthetic ID card whose portrait is a real face through the
page's file inputs, and records the liveness clip in the page from Chromium's fake camera, in
which that face performs the challenges the page prompts, in the random order drawn by the
server (tests/h5/fake_customer.py says why the clip follows the prompts). The real engines
(paddleocr, dlib face chips, dlib landmarks) decide in the server's own job and the verdict is
pushed to the page. Then the call: every TTS step's speech reaches the customer's browser while
it plays (getStats), every answer is clicked, the signature drawn, the session completed and
sealed. A QA inspector downloads the archive: its recordings decode with the expected streams
and length, its timeline has every step's start and every answer, `python -m app verify-archive`
passes, and names the segment after one byte of it changes (as the server-side verify does for
the stored original). A screenshot of every customer page lands in test-artifacts/screenshots/
(session-*.png).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import zipfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api.keys import IDENTITY
from media.identity.results import Challenge
from media.recording import probe_segment
from models.sales import Order
from models.sessions import (
    Acknowledgement,
    IdentityCheck,
    Recording,
    RecordingSession,
    SessionEvent,
)
from scripts_library.catalogue import LIBRARY_DIR
from tests.h5.conftest import PHONE, chromium_context, playwright_api
from tests.h5.fake_customer import FakeCustomer, make_fake_customer
from tests.harness import HERE, Harness
from tests.media_call.conftest import agent_voice_wav
from tests.written import read_pages_in_browser, sign_in_browser, write_copy_in_browser
from workflow.consent_texts import RISK_SENTENCE
from workflow.expiry import sweep
from workflow.sealing import verify_manifest

pytestmark = pytest.mark.one_database
PROJECT = Path(__file__).resolve().parents[2]
KEEP_TEXT = {"agent-identity", "insurer", "product", "risk-sentence"}
# the customer also hand-copies the risk sentence in the grid before signing.
COPY_STEP = f"""  - id: risk-sentence
    kind: risk_sentence
    title: 抄录风险提示语
    speaker: tts
    text: 请您亲笔抄录风险提示语：{RISK_SENTENCE}。
    answer: handwritten_copy
    copy_text: {RISK_SENTENCE}
    timeout_seconds: 600
"""


def short_script() -> str:
    """The sample whole-life script with short spoken texts (it still passes the lint), so the
    call lasts seconds rather than the eight minutes of the real disclosures."""
    source = (LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml").read_text(encoding="utf-8")
    lines, step = [], None
    source = source.replace("  - id: signature\n", COPY_STEP + "\n  - id: signature\n", 1)
    for line in source.replace("  version: 1\n", "  version: 2\n", 1).split("\n"):
        if line.startswith("  - id: "):
            step = line.split(": ", 1)[1].strip()
        if line.startswith("    text: ") and step not in KEEP_TEXT:
            text = ("犹豫期为{cooling_off_days}日，您是否清楚？" if step == "cooling-off"
                    else "{customer_name}，请确认本项，您是否清楚？")
            line = f'    text: "{text}"'
        # Each page shown 1 s instead of 3-5 s: the rule is the same, the test is shorter.
        lines.append(re.sub(r"min_page_seconds: \d+", "min_page_seconds: 1", line))
    return "\n".join(lines)


async def _publish_short_script(harness: Harness) -> None:
    r = await harness.as_("po01", "POST", "/scripts", json={"yaml": short_script()})
    assert r.status == 201, r.body
    for user, action in [("po01", "submit"), ("po02", "approve"), ("po02", "publish")]:
        assert (await harness.as_(user, "POST", f"/scripts/{r.body['id']}/{action}")).status == 200


async def _speech_played(harness: Harness, sid: str, step_id: str) -> None:
    """Waits for the hub to report this step's speech played to the end (bounded)."""
    for _ in range(300):
        events = await SessionEvent.filter(session_id=sid, type="tts_played")
        if any(e.data["step_id"] == step_id for e in events):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the speech of step {step_id} was not played")


# Exposes the page's call, and samples the audio energy arriving on its speech line (the second,
# receive-only audio line) every 200 ms as [epoch ms, energy so far] (summed across rejoins).
EXPOSE_CALL = """
  window.__heard = [];
  let heard = 0;
  const Original = RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.__call = {pc};
    let last = 0;
    pc.addEventListener("track", (e) => {
      if (e.track.kind === "audio" && e.transceiver.direction === "recvonly")
        window.__ttsMid = e.transceiver.mid;
    });
    const sample = async () => {
      if (pc.connectionState === "closed") return;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio" && s.mid === window.__ttsMid) {
          heard += Math.max(0, (s.totalAudioEnergy || 0) - last);
          last = s.totalAudioEnergy || 0;
          window.__heard.push([Date.now(), heard]);
        }
      });
      setTimeout(sample, 200);
    };
    setTimeout(sample, 200);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
"""
STEP_MOVED_ON = """async (index) => {
  const r = await fetch('/api/v1/customer/session', {headers: {Authorization:
    'Bearer ' + sessionStorage.getItem('shuanglu.customer_token')}});
  if (!r.ok) return false; // an error is not a move
  const s = await r.json();
  return s.state !== 'disclosing' || s.current_step.index !== index;
}"""


async def _until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    """Polls `check` until it returns something truthy (bounded; names what never happened)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def _agent_creates_and_invites(agent: Any, base: str, customer: FakeCustomer) -> str:
    """The agent logs in, passes the pre-check, creates the session in the console with the
    customer's real name and ID number, and sends the invitation; returns the link's path."""
    await agent.goto(f"{base}console")
    await agent.fill("#username", "agent01")
    await agent.fill("#password", "demo-agent-01")
    await agent.get_by_role("button", name="登录").click()
    await agent.get_by_role("button", name="获取定位并检查").click()
    await agent.get_by_role("heading", name="新建录制").wait_for()
    await agent.fill("#appNo", f"APP-E2E-{customer.card.id_number[-6:]}")
    await agent.select_option("#product", "YA-ZSS-001")
    await agent.fill("#custName", customer.card.name)
    await agent.fill("#custId", customer.card.id_number)
    await agent.fill("#custPhone", "13812345678")
    await agent.fill("#premium", "5000")
    await agent.fill("#years", "10")
    await agent.fill("#sumInsured", "100000")
    await agent.get_by_role("button", name="创建录制会话").click()
    await agent.get_by_role("button", name="发送邀请").click()
    await agent.locator("[data-channel=link]").click()  # 复制链接 among the channels
    link = agent.locator("#inviteLink")
    await link.wait_for()
    url = (await link.text_content() or "").strip()
    path = "/h5/invite/" + url.split("/h5/invite/", 1)[1]
    assert url.endswith(path) and len(path) > len("/h5/invite/") + 40, url
    return path


async def _customer_verifies_identity(
    page: Any, customer: FakeCustomer, shots: Path
) -> list[Challenge]:
    """Consent, both sides of the card, the liveness clip from the fake camera, submit; returns
    the challenges the page prompted. The page must show the verdict by itself."""
    await page.get_by_role("heading", name="您好，欢迎办理远程双录").wait_for()
    await page.screenshot(path=shots / "session-01-invitation.png", full_page=True)
    await page.get_by_role("button", name="开始").click()

    await page.get_by_role("heading", name="请阅读并确认").wait_for()
    boxes = page.locator("#consents input[type=checkbox]")
    await boxes.first.wait_for()
    await page.screenshot(path=shots / "session-02-consent.png", full_page=True)
    assert await boxes.count() == 2  # two separate consents, each its own act
    for i in range(2):
        assert await page.get_by_role("button", name="同意并继续").is_disabled()
        await boxes.nth(i).check()
    await page.get_by_role("button", name="同意并继续").click()

    await page.get_by_role("heading", name="身份核验").wait_for()
    prompts = page.locator("#challengeList")
    await page.wait_for_function("() => document.querySelector('#challengeList').textContent")
    await page.screenshot(path=shots / "session-03-identity.png", full_page=True)
    await page.set_input_files("#idFront", customer.id_front)
    await page.locator("#doneFront", has_text="已上传").wait_for()
    await page.set_input_files("#idBack", customer.id_back)
    await page.locator("#doneBack", has_text="已上传").wait_for()

    # The customer reads the prompts and, once the camera is on, performs them in that order.
    by_prompt = {c.prompt: c for c in Challenge}
    challenges = [by_prompt[p] for p in (await prompts.text_content() or "").split("，")]
    await asyncio.to_thread(customer.perform, challenges)
    await page.get_by_role("button", name="开始录制动作视频").click()
    prompt = page.locator("#challenge")
    await prompt.filter(has_text=challenges[0].prompt).wait_for(timeout=15_000)
    await page.screenshot(path=shots / "session-04-liveness.png")  # what the phone shows
    await page.locator("#livenessState", has_text="动作视频已上传").wait_for(timeout=60_000)
    await asyncio.to_thread(customer.look_at_the_camera)  # for the call
    await page.get_by_role("button", name="提交核验").click()
    await page.locator("#identityResult", has_text="正在核验").wait_for()
    await page.screenshot(path=shots / "session-05-verifying.png", full_page=True)

    # The engines decide in the server's job; the verdict is pushed to the page.
    verdict = await page.wait_for_function("""() => {
      const waiting = document.querySelector('[data-stage=waiting]');
      const result = document.querySelector('#identityResult');
      if (!waiting.classList.contains('hidden')) return 'verified';
      if (result.classList.contains('error')) return result.textContent;
      return null;
    }""", timeout=150_000)
    if await verdict.json_value() != "verified":
        check = await IdentityCheck.filter().order_by("-id").first()
        raise AssertionError(f"{await verdict.json_value()}: {check and check.liveness}")
    await page.get_by_role("heading", name="身份核验已通过").wait_for()
    await page.screenshot(path=shots / "session-06-waiting.png", full_page=True)
    return challenges


async def test_a_whole_session_in_two_browsers_is_recorded_sealed_and_verifiable_R12_R24_R31(
    harness: Harness, tmp_path: Path, screenshot_dir: Path
) -> None:
    async with harness.jobs_running():
        await _publish_short_script(harness)
        heard, challenges, sid = await _the_session_in_two_browsers(harness, tmp_path,
                                                                     screenshot_dir)
    session = await RecordingSession.get(id=sid)
    await _check_identity(sid, challenges)
    await _check_speech_and_answers(session, heard)
    await _check_archive(harness, sid, tmp_path)


async def _the_session_in_two_browsers(
    harness: Harness, tmp_path: Path, screenshot_dir: Path
) -> tuple[list[tuple[float, float]], list[Challenge], str]:
    engines = harness.app[IDENTITY]()  # the server's own engines (loaded once, warmed here)
    customer = await asyncio.to_thread(make_fake_customer, engines, tmp_path / "customer",
                                       harness.deps.clock().date())
    base = str(harness.client.make_url("/"))
    camera = [f"--use-file-for-fake-video-capture={customer.camera}",
              f"--use-file-for-fake-audio-capture={customer.microphone}"]
    # The agent's microphone carries speech, so the step the agent reads aloud is heard.
    voice = [f"--use-file-for-fake-audio-capture={agent_voice_wav(tmp_path / 'agent')}"]
    async with chromium_context(voice) as desk, chromium_context(camera, **PHONE) as phone:
        await desk.grant_permissions(["geolocation"])
        await desk.set_geolocation({"latitude": HERE["lat"], "longitude": HERE["lng"],
                                    "accuracy": 15})
        agent = await desk.new_page()
        await agent.set_viewport_size({"width": 1280, "height": 900})
        invite_path = await _agent_creates_and_invites(agent, base, customer)
        page = await phone.new_page()
        await page.add_init_script(EXPOSE_CALL)
        await page.goto(base.rstrip("/") + invite_path)
        challenges = await _customer_verifies_identity(page, customer, screenshot_dir)
        order = await Order.get(application_no=f"APP-E2E-{customer.card.id_number[-6:]}")
        sid = str((await RecordingSession.get(order_id=order.id)).id)
        await _until("the session's speech was pre-rendered", lambda: SessionEvent.exists(
            session_id=sid, type="speech_prepared"), 60)

        await _agent_clicks(harness, agent, sid, "开始通话")
        # The customer's page joins by itself; the agent starts the script once it is connected.
        await page.wait_for_function("() => window.__call && window.__ttsMid !== undefined"
                                     " && window.__call.pc.connectionState === 'connected'",
                                     timeout=60_000)
        await _agent_clicks(harness, agent, sid, "开始讲解话术", reaches="disclosing")
        await _answer_every_step(harness, page, agent, sid, screenshot_dir)
        heard = [(t / 1000, e) for t, e in await page.evaluate("window.__heard")]

        await agent.screenshot(path=screenshot_dir / "session-agent-console.png")
        await _agent_clicks(harness, agent, sid, "完成录制")
        await page.get_by_role("heading", name="录制已完成").wait_for(timeout=30_000)
        await page.screenshot(path=screenshot_dir / "session-09-done.png", full_page=True)
    return heard, challenges, sid


async def _state(harness: Harness, sid: str) -> str:
    return str((await RecordingSession.get(id=sid)).state.value)


async def _agent_clicks(harness: Harness, agent: Any, sid: str, label: str,
                        reaches: str | None = None) -> None:
    """The agent clicks `label` in the console. Should the call have dropped meanwhile (on a
    loaded machine a browser can miss its connectivity checks and rejoin), the agent first
    resumes it, as a real agent would (断点续录, R-30); the test counts on the timeline. With
    ``reaches``, the click counts once the session is in that state: a click the server
    refused (the console showed the button from a state a moment old, e.g. before the
    customer's media was recorded) is made again, as an agent would after reading the message."""
    deadline = asyncio.get_running_loop().time() + 90
    button = agent.get_by_role("button", name=label)
    while asyncio.get_running_loop().time() < deadline:
        await _resume_if_interrupted(harness, agent, sid)
        with contextlib.suppress(playwright_api.TimeoutError):
            await button.click(timeout=5_000)
            if reaches is None:
                return
            settle = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < settle:
                if await _state(harness, sid) == reaches:
                    return
                await asyncio.sleep(0.2)
    raise AssertionError(f"the console never offered 「{label}」"
                         + (f" leading to {reaches}" if reaches else ""))


async def _resume_if_interrupted(harness: Harness, agent: Any, sid: str) -> None:
    if await _state(harness, sid) != "interrupted":
        return
    await agent.get_by_role("button", name="断点续录").click(timeout=30_000)

    async def resumed() -> bool:
        return await _state(harness, sid) != "interrupted"

    await _until("the call was resumed", resumed, 30)


# A spoken-answer step: the page shows what to say, and no buttons while it listens.
SPEAK_PROMPT = """([counter]) => {
  const shown = document.querySelector('#stepCounter').textContent === counter;
  const moved = !shown;
  const speak = document.querySelector('#speak');
  return moved || (speak.offsetParent !== null
    && document.querySelector('#answers').offsetParent === null) ? 'ok' : null;
}"""
READY_TO_ANSWER = """([counter]) => {
  if (document.querySelector('#caption').textContent.startsWith('通话已中断'))
    return 'interrupted';
  const yes = document.querySelector('#yes');
  const shown = document.querySelector('#stepCounter').textContent === counter;
  return shown && !yes.disabled && yes.offsetParent !== null ? 'ready' : null;
}"""


async def _answer_every_step(
    harness: Harness, page: Any, agent: Any, sid: str, shots: Path
) -> None:
    """Answers each step in the page as it comes, once the page shows it and has heard its
    speech to the end (R-24: listen first)."""
    token = await page.evaluate("sessionStorage.getItem('shuanglu.customer_token')")
    answered = 0
    spoken_seen: list[str] = []
    while True:
        state = await harness.request("GET", "/customer/session", token=token)
        step = state.body["current_step"]
        if state.body["state"] == "interrupted":
            await _resume_if_interrupted(harness, agent, sid)
            continue
        if state.body["state"] != "disclosing":
            break
        counter = f"第 {step['index'] + 1} / {state.body['step_count']} 项"
        if step["answer"] == "signature":
            await _speech_played(harness, sid, step["id"])
            await page.get_by_role("heading", name="请在下方亲笔签名").wait_for()
            await sign_in_browser(page)  # the customer's name, written with the finger
            await page.screenshot(path=shots / "session-08-signature.png", full_page=True)
            await page.get_by_role("button", name="确认提交").click()
        elif step["answer"] == "handwritten_copy":
            # one character per box, synthetic handwriting through the mouse; the server
            # reads it (the page never sends the sentence).
            await _speech_played(harness, sid, step["id"])
            await page.get_by_role("heading", name="请抄录以下风险提示语句").wait_for()
            await write_copy_in_browser(page, step["copy_text"], seed=3)
            await page.screenshot(path=shots / "session-08-copy.png", full_page=True)
            await page.get_by_role("button", name="确认提交").click()
        elif step["answer"] == "none":
            pass  # the closing words: the step moves on once they have been played in full
        elif step["answer"] == "spoken_answer":
            # R-24 by voice: the page asks the customer to say it (no buttons yet); the fake
            # microphone says 清楚, the server hears it and moves on by itself.
            await page.wait_for_function(SPEAK_PROMPT, arg=[counter], timeout=60_000)
            if not spoken_seen:
                await page.screenshot(path=shots / "session-07-speak.png")
            spoken_seen.append(step["id"])

            async def heard(index: int = step["index"], step_id: str = step["id"]) -> bool:
                now = (await harness.request("GET", "/customer/session", token=token)).body
                if now["paused"] or (now.get("spoken") or {}).get("buttons"):
                    raise AssertionError(f"the spoken answer to {step_id} was not understood: "
                                         f"{now.get('spoken')}, paused {now['paused']}")
                return bool(now["state"] != "disclosing"
                            or now["current_step"]["index"] != index)

            await _until("the server hears the spoken answer", heard, 60)
            answered += 1
            continue
        else:
            if step["speaker"] == "tts":
                await _speech_played(harness, sid, step["id"])
            if step["answer"] == "show_document":  # every page, each long enough
                if step["document_pages"]["page_count"] > 1:
                    await page.locator("#docImage").scroll_into_view_if_needed()
                    await page.screenshot(path=shots / "session-07-document.png")
                await read_pages_in_browser(page, step["document_pages"]["page_count"])
            ready = await page.wait_for_function(READY_TO_ANSWER, arg=[counter],
                                                 timeout=60_000)
            if await ready.json_value() == "interrupted":
                continue
            if not answered:
                await page.screenshot(path=shots / "session-07-call.png")  # the phone's view
            await page.locator("#yes").click()
        await page.wait_for_function(STEP_MOVED_ON, arg=step["index"], timeout=60_000)

        async def moved(index: int = step["index"]) -> bool:
            # The harness reads through its own connection: wait until it sees the move too.
            now = await harness.request("GET", "/customer/session", token=token)
            return bool(now.body["state"] != "disclosing"
                        or now.body["current_step"]["index"] != index)

        await _until("the harness sees the next step", moved, 15)
        answered += 1


async def _check_identity(sid: str, prompted: list[Challenge]) -> None:
    """R-12: the real engines decided, on the challenges the page prompted."""
    checks = await IdentityCheck.filter(session_id=sid)
    assert len(checks) == 1 and checks[0].passed, [c.reasons for c in checks]
    check = checks[0]
    assert check.ocr["engine"].startswith("paddleocr"), check.ocr["engine"]
    assert check.face["engine"].startswith("dlib-chip"), check.face
    assert check.face["score"] < check.face["details"]["threshold"], check.face
    plan = check.liveness["details"]["plan"]["challenges"]
    # The test profile draws plans from the blink alone: the fake camera's face is a still
    # photo made to perform, which the flat-photo checks refuse when it turns or opens its
    # mouth (SHUANGLU_LIVENESS_CHALLENGES, tests/media_identity/test_liveness_attacks.py).
    assert [Challenge(c) for c in plan] == prompted and plan == ["blink"]
    outcomes = check.liveness["details"]["challenges"]
    assert all(o["passed"] for o in outcomes), outcomes
    print("identity:", check.ocr["engine"], "|", check.face["engine"], check.face["score"],
          "|", check.liveness["engine"], plan,
          [(o["started_at_s"], o["completed_at_s"]) for o in outcomes])


def _heard_by(heard: list[tuple[float, float]], t: float) -> float:
    """The speech line's energy the page had received by time t (epoch seconds)."""
    return max((e for at, e in heard if at <= t), default=0.0)


async def _check_speech_and_answers(
    session: RecordingSession, heard: list[tuple[float, float]]
) -> None:
    """R-23/R-24: every TTS step was played in full and its audio reached the customer's
    browser while the hub played it (a step spoken by the agent brought none); every step that
    needs an answer was answered affirmatively."""
    events = await SessionEvent.filter(session_id=session.id).order_by("seq")
    started = {e.data["clip_id"]: e.at.timestamp() for e in events if e.type == "tts_started"}
    played = {e.data["step_id"]: (started[e.data["clip_id"]], e.at.timestamp())
              for e in events if e.type == "tts_played" and e.data["complete"]}
    tts_steps = [s["id"] for s in session.steps if s["speaker"] == "tts"]
    assert all("audio" in s for s in session.steps if s["speaker"] == "tts")
    assert set(tts_steps) <= set(played), set(tts_steps) - set(played)
    gained = {step: _heard_by(heard, end + 0.5) - _heard_by(heard, start)
              for step, (start, end) in played.items()}
    starts = [e.at.timestamp() for e in events if e.type in ("script_started", "step_started")]
    quiet = {s["id"]: _heard_by(heard, starts[k + 1]) - _heard_by(heard, starts[k] + 0.5)
             for k, s in enumerate(session.steps[:-1]) if s["speaker"] != "tts"}
    print("speech energy per step:", {k: round(v, 4) for k, v in gained.items()},
          "steps without speech:", quiet, "samples:", len(heard))
    assert quiet and all(e < 0.01 for e in quiet.values()), quiet
    assert all(gained[step] > 0.1 for step in tts_steps), gained
    acks = await Acknowledgement.filter(session_id=session.id)
    answerable = {s["id"] for s in session.steps if s["answer"] != "none"}
    assert {a.step_id for a in acks} == answerable
    assert all(a.answer.value == "affirmative" for a in acks)
    # The spoken-answer steps were answered by voice, heard by the server.
    spoken = {s["id"] for s in session.steps if s["answer"] == "spoken_answer"}
    voiced = {a.step_id: a.speech for a in acks if a.answer_kind == "voice"}
    print("spoken answers heard:", {k: v and v.get("transcript") for k, v in voiced.items()})
    assert spoken and set(voiced) == spoken, ([(a.step_id, a.answer_kind) for a in acks])


async def _sealed_and_exported(harness: Harness, sid: str, folder: Path) -> tuple[Path, Path]:
    """The sweep seals the session; a QA inspector downloads its archive (a .zip) and the
    institution's published keys. Returns the zip and the keyring file."""
    result = await sweep(harness.deps)
    assert sid in {str(s) for s in result.sealed}
    assert await verify_manifest(harness.deps, UUID(sid)) == []  # the server-side verify
    r = await harness.as_("qa01", "GET", f"/archive/sessions/{sid}/export")
    assert r.status == 200 and r.content_type == "application/zip", r.body
    archive = folder / f"session-{sid}.zip"
    archive.write_bytes(r.body)
    code = json.loads(zipfile.ZipFile(archive).read("manifest.json"))["institution"]
    r = await harness.request("GET", f"/institutions/{code}/seal-keys")
    assert r.status == 200, r.body
    keyring = folder / "keyring.json"
    keyring.write_text(json.dumps(r.body), encoding="utf-8")
    return archive, keyring


async def _verify_archive(path: Path, keyring: Path) -> tuple[int, str]:
    """`python -m app verify-archive`, the offline check an auditor runs (no database)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "verify-archive", str(path), "--keyring", str(keyring),
        cwd=PROJECT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def _save_sample_session(harness: Harness, sid: str, archive: Path, keyring: Path,
                               verified: str) -> None:
    """The sealed sample session of the acceptance evidence pack (R-02; reporting/
    sample_session.py reads this folder): the downloaded export, the keys the server published,
    the verify-archive output, and the automated QA report, from checks run here as the
    after-call job runs them (the app's voice activity detector)."""
    import shutil

    from media.voice.vad import load_vad
    from qa.runner import run_automated_checks
    from qa.settings import QaSettings

    settings = QaSettings()
    await run_automated_checks(harness.deps, UUID(sid), settings, load_vad(settings.vad_engine))
    r = await harness.as_("qa01", "GET", f"/qa/sessions/{sid}/report")
    assert r.status == 200, r.body
    folder = PROJECT / "test-artifacts" / "sample-session"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(archive, folder / "archive.zip")
    shutil.copyfile(keyring, folder / "keyring.json")
    (folder / "verify-archive.txt").write_text(verified, encoding="utf-8")
    (folder / "qa-report.json").write_text(json.dumps({"session_id": sid, **r.body},
                                                      ensure_ascii=False, indent=2), "utf-8")


def _check_timeline(folder: Path, steps: list[dict[str, Any]]) -> None:
    """The sealed timeline: the milestones in order, every step's start and every answer,
    each answer after its step started; the sealed acknowledgements match."""
    events = json.loads((folder / "timeline.json").read_text(encoding="utf-8"))
    types = [e["type"] for e in events]
    milestones = ["invited", "opened", "consented", "identity_verified", "call_started",
                  "script_started", "script_finished", "completed", "sealed"]
    positions = [types.index(m) for m in milestones]
    assert positions == sorted(positions), list(zip(milestones, positions, strict=True))
    assert types.count("identity_upload") == 3
    started = {e["data"]["index"]: i for i, e in enumerate(events)
               if e["type"] in ("script_started", "step_started")}
    assert sorted(started) == list(range(len(steps)))
    answered = {e["data"]["step_id"]: i for i, e in enumerate(events)
                if e["type"] in ("acknowledged", "signed")}  # a signature answers its step
    answerable = [(k, s["id"]) for k, s in enumerate(steps) if s["answer"] != "none"]
    assert set(answered) == {step for _, step in answerable}
    assert all(started[k] < answered[step] for k, step in answerable)
    acks = json.loads((folder / "acknowledgements.json").read_text(encoding="utf-8"))
    assert [a["step_id"] for a in acks] == [step for _, step in answerable]
    assert all(a["answer"] == "affirmative" for a in acks)


def _check_recordings(folder: Path) -> None:
    """Every segment in the archive decodes, with the streams of its kind; each party's
    segments add up to the call (from its start to completion, on the sealed timeline)."""
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    events = json.loads((folder / "timeline.json").read_text(encoding="utf-8"))
    at = {e["type"]: datetime.fromisoformat(e["at"]) for e in events}
    call_s = (at["completed"] - at["call_started"]).total_seconds()
    script_s = (at["completed"] - at["script_started"]).total_seconds()
    segments = sorted(name for name in index["items"] if name.startswith("recording:"))
    assert {name.split(":")[1] for name in segments} == {"customer_av", "agent_av", "tts"}
    lengths: dict[str, float] = {}
    for name in segments:
        kind = name.split(":")[1]
        probe = probe_segment(folder / index["items"][name], decode_video=True)
        lengths[kind] = lengths.get(kind, 0) + probe.duration_ms / 1000
        print(name, probe.duration_ms, probe.video_codec, probe.audio_codec, probe.width,
              probe.height, probe.decoded_video_frames, probe.frame_rate, probe.audio_ms,
              probe.audio_rms_dbfs)
        assert probe.has_audio and probe.audio_codec == "opus", name
        if kind == "tts":
            assert not probe.has_video, name
            continue
        assert probe.has_video and probe.video_codec == "vp8", name
        assert probe.decoded_video_frames == probe.video_frames, name  # every frame decodes
        assert probe.frame_rate > 8, (name, probe.frame_rate)
        # The customer's microphone played the fake voice, the agent's Chromium its beep.
        assert probe.audio_rms_dbfs > -40, (name, probe.audio_rms_dbfs)
    # A dropped call (resumed by the agent) leaves a gap; the lost party's segment ended when
    # the hub noticed (up to its keepalive timeout before the interruption).
    gaps = [e["data"]["gap_ms"] / 1000 for e in events if e["type"] == "call_resumed"]
    slack = 3 + 12 * len(gaps)
    print("call", call_s, "script", script_s, "recorded", lengths, "gaps", gaps)
    for kind in ("customer_av", "agent_av", "tts"):
        assert script_s - sum(gaps) - slack < lengths[kind] < call_s + 3, (
            kind, lengths, call_s, script_s, gaps)


async def _check_archive(harness: Harness, sid: str, folder: Path) -> None:
    """R-31: the downloaded archive verifies offline; its timeline and recordings are checked;
    one byte changed in a segment (of the archive, or of the stored original) is named."""
    archive, keyring = await _sealed_and_exported(harness, sid, folder)
    code, out = await _verify_archive(archive, keyring)
    assert code == 0 and "INTACT" in out, out
    await _save_sample_session(harness, sid, archive, keyring, out)
    opened = folder / "archive"
    zipfile.ZipFile(archive).extractall(opened)
    session = await RecordingSession.get(id=sid)
    _check_timeline(opened, session.steps)
    _check_recordings(opened)

    index = json.loads((opened / "index.json").read_text(encoding="utf-8"))
    victim = min(n for n in index["items"] if n.startswith("recording:customer_av:"))
    path = opened / index["items"][victim]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, out = await _verify_archive(opened, keyring)
    assert code == 1 and "ALTERED" in out and f"{victim} was altered" in out, out
    assert out.count(" - ") == 1, out  # nothing else is reported

    recording = await Recording.get(session_id=sid, kind="customer_av",
                                    segment=int(victim.rsplit(":", 1)[1]))
    stored = harness.files / recording.path
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0x80
    stored.chmod(0o640)
    stored.write_bytes(bytes(data))
    problems = await verify_manifest(harness.deps, UUID(sid))
    assert problems == [f"{victim} was altered"]
