"""The agent invites through a channel in the console, in a real headless Chromium (issue 17
item 4, R-20): 发送邀请 offers the channels (unavailable ones say why), an SMS goes out through
the Tencent Cloud SMS wire format (a local fake that verifies the signature) and the console
shows 已送达 (the operator's report), then 客户已打开 when the customer opens the link; a QR
code of the single-use link is drawn by the server and scans to that link; a failed text offers
the fallbacks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio

from tests.channels.fake_sms import FakeTencentSms, serving
from tests.harness import HERE, Harness

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(90)]

SECRET_ID = "AKIDconsoleTestSecretId00000000000000"
SECRET_KEY = "consoleTestSecretKey0000000000000"
SDK_APP_ID = "1400009999"


@pytest_asyncio.fixture
async def fake_sms() -> AsyncIterator[FakeTencentSms]:
    async with serving(SECRET_ID, SECRET_KEY, SDK_APP_ID) as fake:
        yield fake


@pytest.fixture
def settings_overrides(fake_sms: FakeTencentSms,
                       monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for key, value in {
        "SHUANGLU_SMS_ENGINE": "tencent", "SHUANGLU_SMS_ENDPOINT": fake_sms.url,
        "SHUANGLU_SMS_SECRET_ID": SECRET_ID, "SHUANGLU_SMS_SECRET_KEY": SECRET_KEY,
        "SHUANGLU_SMS_SDK_APP_ID": SDK_APP_ID, "SHUANGLU_SMS_REPORT_PULL_SECONDS": "0.5",
        # The channel worker runs in the app (as in production) and wakes on the new outbox row.
        "SHUANGLU_CHANNELS_RUN_WORKER": "true", "SHUANGLU_CHANNELS_WORKER_INTERVAL_SECONDS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    return {}


def _decode_qr(png: bytes) -> str:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    text, _points, _ = cv2.QRCodeDetector().detectAndDecode(image)
    return str(text)


async def test_an_agent_invites_by_sms_then_by_qr_code_and_sees_the_delivery_R20(
    harness: Harness, browser: Any, fake_sms: FakeTencentSms, screenshot_dir: Path,
) -> None:
    fake_sms.public_url = harness.config.public_url  # the approved template's link start
    await harness.create_session()
    await browser.grant_permissions(["geolocation"])
    await browser.set_geolocation({"latitude": HERE["lat"], "longitude": HERE["lng"],
                                   "accuracy": 15})
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(str(harness.client.make_url("/console")))
    await page.fill("#username", "agent01")
    await page.fill("#password", "demo-agent-01")
    await page.get_by_role("button", name="登录").click()
    await page.get_by_role("button", name="获取定位并检查").click()
    await page.locator("#sessions tr").first.click()
    await page.get_by_role("button", name="发送邀请").click()

    choices = page.locator("#channelChoices button")
    await choices.first.wait_for()
    labels = [t.split("\n")[0] for t in await choices.all_inner_texts()]
    assert labels == ["微信（公众号模板/订阅消息，自动选择）", "小程序卡片", "银行App推送", "短信",
                      "二维码（客户扫码）", "复制链接"]
    assert await page.locator("[data-channel=bank_app]").is_disabled()
    assert await page.locator("[data-channel=miniprogram]").is_disabled()
    await page.screenshot(path=screenshot_dir / "console-invite-01-channels.png", full_page=True)

    await page.locator("[data-channel=sms]").click()
    await page.get_by_text("留空则发送至投保信息中的手机号 138****5678").wait_for()
    await page.get_by_role("button", name="发送短信").click()
    status = page.locator("#inviteStatus")
    # Sent, then the operator's delivery report (pulled by the channel worker): 已送达.
    await page.wait_for_function(
        "document.querySelector('#inviteStatus').textContent === '已送达'", timeout=15000)
    assert await page.locator("#inviteRecipient").text_content() == "发送至 138****5678"
    assert fake_sms.refused == [] and len(fake_sms.sent) == 1
    assert fake_sms.sent[0]["phone"] == "+8613812345678"
    await page.screenshot(path=screenshot_dir / "console-invite-02-sms-delivered.png",
                          full_page=True)

    # The customer taps the link in the text message: the console shows it within a poll.
    # The template writes the link's start, the parameter is the token only.
    found = re.search(r"完成：(\S+) 链接", fake_sms.sent[0]["text"])
    assert found is not None
    link = found[1]
    assert link == f"{harness.config.public_url}/h5/invite/{fake_sms.sent[0]['params'][1]}"
    r = await harness.request("POST", "/invitations/open", json={"token": link.rsplit("/", 1)[1]})
    assert r.status == 200, r.body
    await page.wait_for_function(
        "document.querySelector('#inviteStatus').textContent === '客户已打开'", timeout=15000)
    await page.get_by_text("客户已打开邀请").wait_for()
    await page.screenshot(path=screenshot_dir / "console-invite-03-sms-opened.png", full_page=True)

    # Send again as a QR code for the customer to scan: it scans to the new single-use link.
    await page.get_by_role("button", name="重新发送邀请").click()
    await page.locator("[data-channel=qrcode]").click()
    await page.wait_for_function(
        "document.querySelector('#inviteStatus').textContent === '等待客户扫码'", timeout=15000)
    qr = page.locator("#inviteQr")
    await qr.wait_for()
    assert (await qr.get_attribute("src") or "").startswith("data:image/svg+xml")
    await page.screenshot(path=screenshot_dir / "console-invite-04-qrcode.png", full_page=True)
    scanned = _decode_qr(await qr.screenshot())
    assert "/h5/invite/" in scanned and scanned != link
    assert await status.get_attribute("class") == "pill wait"
    r = await harness.request("POST", "/invitations/open",
                              json={"token": scanned.rsplit("/", 1)[1]})
    assert r.status == 200, r.body
    await page.wait_for_function(
        "document.querySelector('#inviteStatus').textContent === '客户已打开'", timeout=15000)
    assert await page.locator("#inviteQrBox").is_hidden()

    # A text to a blacklisted number fails for good: the reason and the fallbacks are shown,
    # and 改用复制链接 gives the link and the SMS text to copy.
    fake_sms.fail_numbers.append("FailedOperation.PhoneNumberInBlacklist")
    await page.get_by_role("button", name="重新发送邀请").click()
    await page.locator("[data-channel=sms]").click()
    await page.fill("#smsPhone", "13900001111")
    await page.get_by_role("button", name="发送短信").click()
    # The reason shows first while the outbox still counts the attempt (发送中（…）): wait for
    # the failed state itself.
    await status.filter(has_text="发送失败").wait_for(timeout=15000)
    assert (await status.text_content() or "").startswith("发送失败")
    assert "PhoneNumberInBlacklist" in (await status.text_content() or "")
    assert await status.get_attribute("class") == "pill error"
    assert await page.locator("#inviteRecipient").text_content() == "发送至 139****1111"
    await page.screenshot(path=screenshot_dir / "console-invite-05-sms-failed.png",
                          full_page=True)
    await page.get_by_role("button", name="改用复制链接").click()
    await page.wait_for_function(
        "document.querySelector('#inviteStatus').textContent.startsWith('链接已生成')",
        timeout=15000)
    assert "/h5/invite/" in (await page.locator("#inviteLink").text_content() or "")
    assert "链接仅限本人使用" in (await page.locator("#inviteSms").text_content() or "")
