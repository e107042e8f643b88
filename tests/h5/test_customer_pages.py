"""The customer's H5 pages in a real headless Chromium, driven like a customer would, with the
agent and the identity engine acting through the API. Screenshots of every page are saved under
test-artifacts/screenshots/ (look at them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.sessions import Acknowledgement, Consent, Signature
from tests.harness import HERE, PASSED, Harness

pytestmark = pytest.mark.one_database


async def _draw(page: Any, selector: str) -> None:
    await page.locator(selector).scroll_into_view_if_needed()
    box = await page.locator(selector).bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    await page.mouse.move(x + w * 0.1, y + h * 0.5)
    await page.mouse.down()
    for i in range(1, 20):
        await page.mouse.move(x + w * (0.1 + 0.04 * i), y + h * (0.5 + (0.2 if i % 2 else -0.2)))
    await page.mouse.up()


async def test_a_customer_goes_through_every_page_R10_R24_R25(
    harness: Harness, browser: Any, screenshot_dir: Path
) -> None:
    walk = await harness.walk_to("invited", birth="19500307")
    base = str(harness.client.make_url("/"))
    page = await browser.new_page()
    shot = 0

    async def snap(name: str) -> None:
        nonlocal shot
        shot += 1
        await page.screenshot(path=screenshot_dir / f"customer-{shot:02d}-{name}.png",
                              full_page=True)

    await page.goto(f"{base}h5/invite/{walk.invitation_token}")
    await page.get_by_role("button", name="开始").wait_for()
    await snap("welcome")
    await page.get_by_role("button", name="开始").click()
    await page.get_by_role("heading", name="远程同步录音录像告知及同意书").wait_for()
    assert page.url.endswith("/h5/session")  # the single-use link is gone from the address bar
    agree = page.get_by_role("button", name="同意并继续")
    assert await agree.is_disabled()  # each consent is ticked on its own
    await page.get_by_text("我已阅读并同意《远程同步录音录像告知及同意书》").click()
    assert await agree.is_disabled()
    await page.get_by_text("我已阅读并同意《个人信息处理授权书》").click()
    await snap("consent")
    await agree.click()
    await page.get_by_role("heading", name="身份核验").wait_for()
    await snap("identity")
    assert await Consent.filter(session_id=walk.session_id, agreed=True).count() == 2

    sid = walk.session_id
    await harness.as_("engine01", "POST", f"/sessions/{sid}/identity-checks",
                      json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    await page.get_by_text("正在等待销售人员接入视频").wait_for()
    await snap("waiting")
    await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start", json={"location": HERE})
    await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    yes = page.locator("#yes")  # its label follows the step: 「是的，我已清楚」/「我已看清，确认」
    await yes.wait_for()
    await snap("call-first-step")
    answered = 0
    while True:
        r = await harness.request("GET", "/customer/session", token=await _customer_token(page))
        step = r.body["current_step"]
        if r.body["state"] != "disclosing":
            break
        if step["answer"] == "none":
            await harness.as_("agent01", "POST", f"/sessions/{sid}/script/advance",
                              json={"step_id": step["id"]})
            await page.get_by_text(step["text"][:8]).wait_for(state="detached")
            continue
        await page.get_by_text(step["text"][:12]).wait_for()
        if step["answer"] in ("signature", "handwritten_copy"):
            # written on the pad in the page, never with a button
            await page.get_by_role("heading", name="请在下方亲笔签名").wait_for()
            assert await yes.is_hidden()
            await snap("signing")
            await _draw(page, "#signPad")
            await snap("signed")
            await page.get_by_role("button", name="确认提交").click()
        else:
            if answered == 1:
                await page.get_by_role("button", name="不清楚，需要解释").click()
                await page.get_by_text("已通知销售人员为您解释").wait_for()
                await snap("paused-for-explanation")
                await harness.as_("agent01", "POST", f"/sessions/{sid}/script/resume",
                                  json={"note": "已解释"})
                await yes.wait_for()
            await yes.click()
            answered += 1
        await page.wait_for_function(
            "(t) => !document.querySelector('#caption').textContent.startsWith(t)",
            arg=step["text"][:12])
    await page.get_by_text("签名已提交，请等待销售人员完成录制").wait_for()
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/complete")
    assert r.status == 200
    await page.get_by_role("heading", name="录制已完成").wait_for()
    await snap("done")

    acks = await Acknowledgement.filter(session_id=sid).order_by("id")
    assert [a.answer.value for a in acks][:3] == ["affirmative", "negative", "affirmative"]
    ids = [a.step_id for a in acks]
    assert "elderly-intro" in ids and "elderly-confirm" in ids  # the customer is 76
    assert acks[-1].step_id == "signature" and acks[-1].answer_kind == "signature"
    signature = await Signature.get(session_id=sid)
    image = harness.deps.storage.read(signature.image_path)
    assert image.startswith(b"\x89PNG") and len(image) > 2000


async def _customer_token(page: Any) -> str:
    token = await page.evaluate("sessionStorage.getItem('shuanglu.customer_token')")
    assert token
    return str(token)


async def test_a_reused_link_shows_a_clear_message(harness: Harness, browser: Any) -> None:
    walk = await harness.walk_to("opened")
    page = await browser.new_page()
    await page.goto(str(harness.client.make_url(f"/h5/invite/{walk.invitation_token}")))
    await page.get_by_role("button", name="开始").click()
    await page.get_by_text("该邀请链接已被使用，不能重复打开").wait_for()


async def test_declining_shows_the_end_page_R10(harness: Harness, browser: Any) -> None:
    walk = await harness.walk_to("invited")
    page = await browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(str(harness.client.make_url(f"/h5/invite/{walk.invitation_token}")))
    await page.get_by_role("button", name="开始").click()
    await page.get_by_role("button", name="我不同意").click()
    await page.get_by_role("heading", name="您已拒绝远程双录").wait_for()
    assert await harness.state(walk) == "declined"


async def test_the_identity_page_uploads_records_and_shows_the_engines_verdict_R12(
    harness: Harness, browser: Any, screenshot_dir: Path, tmp_path: Path
) -> None:
    """Chromium's fake camera shows a test pattern, not a face: the real engines must refuse it
    and the page must say why and how many attempts are left."""
    import random
    from datetime import date
    from uuid import UUID

    from media.identity import IdentityService
    from media.identity import synthetic as synth
    from media.identity.imaging import encode_jpeg
    from media.identity.results import ChallengePlan
    from workflow.identity import run_identity_check

    walk = await harness.walk_to("consented")
    card = synth.random_identity(random.Random("page"), today=date.today())
    (tmp_path / "front.jpg").write_bytes(encode_jpeg(synth.draw_front(card), 92))
    (tmp_path / "back.jpg").write_bytes(encode_jpeg(synth.draw_back(card), 92))
    page = await browser.new_page()
    await page.add_init_script(
        f"sessionStorage.setItem('shuanglu.customer_token', '{walk.customer_token}')")
    await page.goto(str(harness.client.make_url("/h5/session")))
    await page.get_by_role("heading", name="身份核验").wait_for()
    await page.set_input_files("#idFront", str(tmp_path / "front.jpg"))
    await page.get_by_text("✔ 已上传").first.wait_for()
    await page.set_input_files("#idBack", str(tmp_path / "back.jpg"))
    await page.get_by_text("✔ 已上传").nth(1).wait_for()
    await page.get_by_role("button", name="开始录制动作视频").click()
    await page.get_by_text("动作视频已上传").wait_for(timeout=30_000)
    await page.screenshot(path=screenshot_dir / "customer-identity-uploaded.png", full_page=True)
    await page.get_by_role("button", name="提交核验").click()
    await page.get_by_text("正在核验，请稍候").wait_for()

    info = (await harness.request("GET", "/customer/identity", token=walk.customer_token)).body
    plan = ChallengePlan(challenges=[c["code"] for c in info["challenges"]],
                         time_limit_s=info["time_limit_s"])
    await run_identity_check(harness.deps, IdentityService(), UUID(walk.session_id), 1, plan)
    await harness.redis.delete(f"identity:pending:{walk.session_id}")  # the job handler does this
    await page.get_by_text("第 1 次核验未通过").wait_for()
    await page.get_by_text("还可以尝试 2 次").wait_for()
    await page.screenshot(path=screenshot_dir / "customer-identity-refused.png", full_page=True)
