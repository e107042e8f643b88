"""The customer's call page shows the live liveness check (R-12, issue 15) from the messages of
the call's control channel: the instruction large, a countdown, each result in Chinese. The
module (h5/static/live-check.js) runs in headless Chromium, served as the pages serve it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.one_database


@pytest.mark.timeout(120)
async def test_r12_the_challenge_is_shown_large_with_a_countdown_and_its_result(
    harness: Harness, browser: Any
) -> None:
    page = await browser.new_page()
    await page.set_viewport_size({"width": 360, "height": 740})  # a phone
    await page.goto(str(harness.client.make_url("/h5/session")))  # no token: the start page
    show = ("m => import('/static/live-check.js').then(mod => mod.showLiveCheck(m))")
    await page.evaluate(show, {"type": "liveness_prepare", "text": "请正对摄像头"})
    panel = page.locator("#liveCheck")
    await panel.get_by_text("活体检测").wait_for()
    await page.evaluate(show, {"type": "liveness_challenge", "id": "a1", "action": "blink",
                               "instruction": "请眨眨眼", "time_limit_ms": 6000, "index": 1,
                               "count": 2})
    title = panel.locator(".live-title")
    assert await title.text_content() == "请眨眨眼"
    size = await title.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert size >= 36  # readable at arm's length for an elderly customer
    count = panel.locator(".live-count")
    first = await count.text_content()
    assert first in ("6 秒", "5 秒")
    await page.wait_for_function(
        "() => document.querySelector('#liveCheck .live-count').textContent === '4 秒'",
        timeout=10_000)
    assert "第 1 个动作，共 2 个" in (await panel.text_content() or "")
    await page.evaluate(show, {"type": "liveness_result", "scope": "run", "passed": False,
                               "final": False, "attempts_left": 2,
                               "message": "未通过：画面静止。稍后将重新检测（还有 2 次机会）"})
    assert await title.text_content() == "✗ 活体检测未通过"
    assert await count.text_content() == ""
    assert "还有 2 次机会" in (await panel.text_content() or "")
    await page.evaluate(show, {"type": "liveness_result", "scope": "run", "passed": True,
                               "final": True, "attempts_left": 0, "message": "活体检测通过"})
    assert await title.text_content() == "✓ 活体检测通过"
    await panel.wait_for(state="hidden", timeout=10_000)


@pytest.mark.timeout(120)
async def test_r12_a_spot_check_during_the_script_says_so(
    harness: Harness, browser: Any, tmp_path: Any
) -> None:
    """Issue 15: the same panel names a spot check during the script as such."""
    page = await browser.new_page()
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.goto(str(harness.client.make_url("/h5/session")))
    show = ("m => import('/static/live-check.js').then(mod => mod.showLiveCheck(m))")
    await page.evaluate(show, {"type": "liveness_prepare", "spot": 1,
                               "text": "随机活体抽检：请正对摄像头，稍后按屏幕提示做一个动作"})
    panel = page.locator("#liveCheck")
    title = panel.locator(".live-title")
    assert await title.text_content() == "随机活体抽检"
    await page.evaluate(show, {"type": "liveness_challenge", "id": "s1", "action": "turn_left",
                               "instruction": "请向左转头", "time_limit_ms": 6000, "index": 1,
                               "count": 1})
    assert "随机活体抽检，请在倒计时结束前完成" in (await panel.text_content() or "")
    await page.screenshot(path=str(tmp_path / "spot-check.png"))
    await page.evaluate(show, {"type": "liveness_result", "scope": "run", "spot": 1,
                               "passed": True, "final": True, "attempts_left": 0,
                               "message": "抽检通过，继续播报"})
    assert await title.text_content() == "✓ 活体抽检通过"
    await panel.wait_for(state="hidden", timeout=10_000)
