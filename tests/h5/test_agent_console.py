"""The agent console in a real headless Chromium: log in, the pre-check of position and network
comes before anything else (R-03), create a session, send the invitation, follow the customer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import HERE, Harness, id_number

pytestmark = pytest.mark.one_database


async def test_an_agent_prechecks_creates_and_invites_R03(
    harness: Harness, browser: Any, screenshot_dir: Path
) -> None:
    await browser.grant_permissions(["geolocation"])
    await browser.set_geolocation({"latitude": HERE["lat"], "longitude": HERE["lng"],
                                   "accuracy": 15})
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(str(harness.client.make_url("/console")))
    await page.fill("#username", "agent01")
    await page.fill("#password", "demo-agent-01")
    await page.get_by_role("button", name="登录").click()
    await page.get_by_role("heading", name="执业环境检查").wait_for()
    await page.screenshot(path=screenshot_dir / "console-01-precheck.png")
    await page.get_by_role("button", name="获取定位并检查").click()
    await page.get_by_role("heading", name="新建录制").wait_for()
    await page.fill("#appNo", "APP-CONSOLE-0001")
    await page.select_option("#product", "YA-ZSS-001")
    await page.fill("#custName", "李四")
    await page.fill("#custId", id_number("19700202", seq="123"))
    await page.fill("#custPhone", "13900001111")
    await page.fill("#premium", "8000")
    await page.fill("#sumInsured", "300000")
    await page.screenshot(path=screenshot_dir / "console-02-new-session.png")
    await page.get_by_role("button", name="创建录制会话").click()
    await page.get_by_role("button", name="发送邀请").click()
    await page.locator("[data-channel=link]").click()  # the channels: test_console_invitations
    link = page.locator("#inviteLink")
    await link.wait_for()
    url = await link.text_content()
    assert url and "/h5/invite/" in url
    await page.get_by_text("已邀请").wait_for()
    await page.screenshot(path=screenshot_dir / "console-03-invited.png")

    # The customer opens the link; the console follows live.
    token = url.rsplit("/", 1)[1]
    r = await harness.request("POST", "/invitations/open", json={"token": token})
    assert r.status == 200
    await page.get_by_text("客户已打开邀请").wait_for()


async def test_a_console_outside_the_premises_cannot_start(
    harness: Harness, browser: Any
) -> None:
    await browser.grant_permissions(["geolocation"])
    await browser.set_geolocation({"latitude": 39.9042, "longitude": 116.4074, "accuracy": 15})
    page = await browser.new_page()
    await page.goto(str(harness.client.make_url("/console")))
    await page.fill("#username", "agent01")
    await page.fill("#password", "demo-agent-01")
    await page.get_by_role("button", name="登录").click()
    await page.get_by_role("button", name="获取定位并检查").click()
    await page.get_by_text("当前位置不在已报备的销售场所内").wait_for()
    assert await page.get_by_role("heading", name="新建录制").is_hidden()
