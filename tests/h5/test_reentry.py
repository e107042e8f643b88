"""Issue 17 in a real headless Chromium on a phone (390×844) with WeChat's user agent: the
customer whose page closed mid-call comes back with the agent's one-time code in a new browser
(断点续录, R-20/R-30) and in a reopened tab of the same WebView without one; a refused camera is
explained in Chinese for WeChat, the agent is told, the script waits, and granting it in the
same page goes on without a reload; the first screen names the insurer, product, agent with the
licence number and hotline; 再听一遍 closes the answer until the step was heard again (R-24);
long captions never push the answer buttons off the screen. Screenshots: reentry-*.png."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from models.sessions import Acknowledgement, SessionEvent
from tests.h5.conftest import CHROMIUM, FLAGS, PHONE, chromium_context, playwright_api
from tests.harness import HERE, Harness, Walk

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(300)]

# WeChat's in-app browser on Android (XWEB), as its pages see it.
WECHAT_UA = ("Mozilla/5.0 (Linux; Android 13; V2148A Build/TP1A.220624.014; wv) "
             "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile "
             "Safari/537.36 XWEB/1160065 MMWEBSDK/20231202 MMWEBID/2569 "
             "MicroMessenger/8.0.47.2560(0x28002F37) WeChat/arm64 Weixin NetType/WIFI "
             "Language/zh_CN ABI/arm64")
WECHAT_PHONE: dict[str, Any] = {**PHONE, "user_agent": WECHAT_UA, "is_mobile": True}


@asynccontextmanager
async def asking_chromium(**options: Any) -> AsyncIterator[Any]:
    """A phone whose browser asks before using the camera and microphone (the fake devices
    exist, but no automatic "allow"): a permission not granted is refused, as when the customer
    taps 拒绝; `context.grant_permissions` is the customer allowing it in the settings."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    flags = [f for f in FLAGS if f != "--use-fake-ui-for-media-stream"]
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=flags, headless=True, locale="zh-CN",
            **options)
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


async def _until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)
    return result


async def _customer_joins(sid: str, after_seq: int) -> int:
    """Waits for the hub to report the customer's page connected (and recorded) after
    `after_seq`; returns that event's seq."""
    async def joined() -> int:
        event = await SessionEvent.filter(session_id=sid, type="party_connected",
                                          seq__gt=after_seq).order_by("seq").values("seq", "data")
        return next((e["seq"] for e in event if e["data"]["role"] == "customer"
                     and e["data"]["recording"]), 0)
    return int(await _until("the customer's page joined the call", joined, 40))


async def _last_seq(sid: str) -> int:
    last = await SessionEvent.filter(session_id=sid).order_by("-seq").first()
    return last.seq if last else 0


async def _code(harness: Harness, walk: Walk) -> str:
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/resume-code")
    assert r.status == 201, r.body
    return str(r.body["code"])


async def _in_view(page: Any, selector: str) -> None:
    """The element is entirely on the phone's screen (not scrolled or pushed away)."""
    box = await page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["y"] >= 0 and box["y"] + box["height"] <= 844, (selector, box)


async def test_closing_and_coming_back_mid_call_with_the_code_R20_R30(
    harness: Harness, screenshot_dir: Path,
) -> None:
    walk = await harness.walk_to("disclosing")  # the first step is the long opening text
    sid = walk.session_id
    base = str(harness.client.make_url("/"))
    used_link = f"{base}h5/invite/{walk.invitation_token}"
    async with chromium_context(**WECHAT_PHONE) as first:
        page = await first.new_page()
        # The customer taps the (used) link in the chat again: the page asks for the code.
        await page.goto(used_link)
        await page.get_by_role("heading", name="继续办理").wait_for()
        await page.get_by_text("该邀请链接已被使用，不能重复打开").wait_for()
        await page.screenshot(path=screenshot_dir / "reentry-01-code.png")
        started = time.monotonic()
        seq = await _last_seq(sid)
        await page.fill("#resumeCode", await _code(harness, walk))
        await page.get_by_role("button", name="继续办理").click()
        await page.locator("#caption", has_text="为保障您的合法权益").wait_for()
        assert page.url.endswith("/h5/session")
        await _customer_joins(sid, seq)
        rejoined_s = time.monotonic() - started
        await harness.hear(walk)
        yes = page.locator("#yes")
        await yes.wait_for()
        # The text asks for 确认: the button says so (issue 17: they must agree).
        assert await yes.text_content() == "确认"
        assert "请点击“确认”" in (await page.locator("#caption").text_content() or "")
        # The long opening text scrolls in its box; video, buttons and 再听一遍 stay on screen.
        await page.locator("#recBadge", has_text="录制中").wait_for()
        for selector in ("#yes", "#no", "#replay", "#recBadge"):
            await _in_view(page, selector)
        caption = await page.locator("#captionBox").bounding_box()
        assert caption is not None and caption["height"] <= 0.25 * 844 + 1
        await page.screenshot(path=screenshot_dir / "reentry-02-call.png")

        # 再听一遍: the answer closes until the step was heard again.
        await page.get_by_role("button", name="再听一遍").click()
        await page.get_by_text("正在播报本项内容，请听完后回答").wait_for()
        assert await yes.is_disabled() or await yes.is_hidden()
        r = await harness.ack(walk, "opening")
        assert r.status == 409 and r.body["code"] == "answer_not_open"
        await harness.hear(walk)
        await page.wait_for_function("() => !document.querySelector('#yes').disabled"
                                     " && document.querySelector('#yes').offsetParent")

        # The tab is closed and opened again in the same WebView: the login was kept.
        await page.close()
        tab = await first.new_page()
        await tab.goto(f"{base}h5/session")
        await tab.locator("#caption", has_text="为保障您的合法权益").wait_for()
    # The whole WebView is gone (WeChat killed it): the server interrupts the call.
    await _until("the call interrupted after the customer's page closed",
                 lambda: _state_is(harness, walk, "interrupted"), 45)

    async with chromium_context(**WECHAT_PHONE) as second:
        page = await second.new_page()
        await page.goto(used_link)
        await page.get_by_role("heading", name="继续办理").wait_for()
        code = await _code(harness, walk)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        await page.fill("#resumeCode", wrong)
        await page.get_by_role("button", name="继续办理").click()
        await page.get_by_text("验证码不正确，还可以再试 4 次").wait_for()
        await page.fill("#resumeCode", code)
        await page.get_by_role("button", name="继续办理").click()
        await page.get_by_text("通话已中断，正在等待重新连接").wait_for()
        await page.locator("#recBadge", has_text="录制已暂停").wait_for()
        await page.screenshot(path=screenshot_dir / "reentry-03-interrupted.png")
        seq = await _last_seq(sid)
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                              json={"location": HERE})
        assert r.status == 200 and r.body["state"] == "disclosing", r.body
        await _customer_joins(sid, seq)  # the page rejoined by itself (断点续录)
        await harness.hear(walk)  # the interrupted step is played again from its start
        await page.locator("#yes").click()
        await _until("the answer stored", lambda: Acknowledgement.filter(
            session_id=sid, step_id="opening", answer="affirmative").exists(), 20)
    reentered = await SessionEvent.filter(session_id=sid, type="customer_reentered")
    assert [e.data["state"] for e in reentered] == ["disclosing", "interrupted"]
    print(f"\nre-entry: code entered -> page in the call again (hub: customer connected) "
          f"{rejoined_s:.1f} s")


async def _state_is(harness: Harness, walk: Walk, state: str) -> bool:
    return await harness.state(walk) == state


async def test_a_refused_camera_is_explained_the_agent_told_and_granting_goes_on_R30(
    harness: Harness, screenshot_dir: Path,
) -> None:
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start",
                          json={"location": HERE})
    assert r.status == 200
    await harness.connect_media(walk, roles=("agent",))
    await harness.pin_speech(walk)
    base = str(harness.client.make_url("/")).rstrip("/")
    async with asking_chromium(**WECHAT_PHONE) as phone:
        page = await phone.new_page()
        await page.add_init_script(
            f"sessionStorage.setItem('shuanglu.customer_token', '{walk.customer_token}')")
        await page.goto(f"{base}/h5/session")
        help_box = page.locator("#deviceHelp")
        await help_box.get_by_role("heading", name="请允许使用摄像头和麦克风").wait_for()
        await help_box.get_by_text("点击屏幕右上角的“…”，选择“设置”").wait_for()
        await help_box.get_by_text("“应用”→“微信”→“权限”").wait_for()  # Android WeChat
        assert await page.locator("#deviceWechatPicture").is_visible()
        await page.screenshot(path=screenshot_dir / "reentry-04-camera-denied.png")
        denied = await _until("the agent told", lambda: SessionEvent.filter(
            session_id=sid, type="customer_device_denied").first(), 10)
        assert denied.data["camera"] == "denied" and denied.data["stage"] == "call"
        assert "NotAllowedError" in denied.data["error"]
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 409 and "客户的音视频尚未接通录制" in r.body["detail"], r.body

        # The customer allows it in WeChat's settings and taps retry: no reload.
        seq = await _last_seq(sid)
        await phone.grant_permissions(["camera", "microphone"], origin=base)
        await page.get_by_role("button", name="我已开启，重试").click()
        await help_box.wait_for(state="hidden")
        await _customer_joins(sid, seq)
        assert await SessionEvent.filter(session_id=sid, type="customer_device_ready").exists()
        r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 200, r.body
        await page.locator("#recBadge", has_text="录制中").wait_for()


async def test_the_first_screen_names_insurer_product_agent_and_hotline(
    harness: Harness, screenshot_dir: Path,
) -> None:
    walk = await harness.walk_to("invited")
    async with chromium_context(**WECHAT_PHONE) as phone:
        page = await phone.new_page()
        await page.goto(str(harness.client.make_url(f"/h5/invite/{walk.invitation_token}")))
        intro = page.locator("#intro")
        await intro.get_by_text("执业证编号").wait_for()
        text = await intro.inner_text()
        facts = (await harness.request("POST", "/invitations/preview",
                                       json={"token": walk.invitation_token})).body
        for value in facts.values():
            assert value and value in text, (value, text)
        assert await page.locator("#introHotline").get_attribute("href") == "tel:4000005678"
        await page.get_by_role("button", name="开始").wait_for()
        await page.screenshot(path=screenshot_dir / "reentry-05-welcome.png", full_page=True)
        assert await harness.state(walk) == "invited"  # looking did not use the link
        await page.get_by_role("button", name="开始").click()
        await page.get_by_role("heading", name="请阅读并确认").wait_for()
        assert await intro.is_visible()  # still named while consenting
