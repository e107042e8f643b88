"""The customer's H5 pages in a real headless Chromium, driven like a customer would, with the
agent and the identity engine acting through the API. Screenshots of every page are saved under
test-artifacts/screenshots/ (look at them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.sessions import Acknowledgement, Consent, SessionEvent, Signature
from tests.harness import HERE, PASSED, Harness
from tests.written import (
    publish,
    quick_documents_script,
    read_pages_in_browser,
    sign_in_browser,
    write_copy_in_browser,
)

pytestmark = pytest.mark.one_database


async def _rule(page: Any, selector: str) -> None:
    """One straight line across the pad: not a signature."""
    await page.locator(selector).scroll_into_view_if_needed()
    box = await page.locator(selector).bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    await page.mouse.move(x + w * 0.1, y + h * 0.5)
    await page.mouse.down()
    for i in range(1, 20):
        await page.mouse.move(x + w * (0.1 + 0.04 * i), y + h * 0.5)
    await page.mouse.up()


async def test_a_customer_goes_through_every_page_R10_R24_R25(
    harness: Harness, browser: Any, screenshot_dir: Path
) -> None:
    # The participating product: documents to page through, the risk sentence to hand-copy and
    # a signature; one second per page so the test reads every page in real time.
    await publish(harness, quick_documents_script("YA-NJF-002"))
    walk = await harness.walk_to("invited", birth="19500307", product="YA-NJF-002")
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
    await harness.connect_media(walk)
    await harness.pin_speech(walk)
    await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    yes = page.locator("#yes")  # its label follows the step: 「是的，我已清楚」/「我已看清，确认」
    await harness.hear(walk)
    await yes.wait_for()
    await snap("call-first-step")
    answered = 0
    shown = set()
    while True:
        r = await harness.request("GET", "/customer/session", token=await _customer_token(page))
        step = r.body["current_step"]
        if r.body["state"] != "disclosing":
            break
        if step["answer"] == "none":
            await page.get_by_text(step["text"][:8]).wait_for()
            await harness.hear(walk)  # the closing words move on once played in full
            await page.get_by_text(step["text"][:8]).wait_for(state="detached")
            continue
        await page.get_by_text(step["text"][:12]).wait_for()
        if step["answer"] == "show_document":
            # the real pages, read one by one before the answer is taken.
            await page.locator("#docImage[src^='blob:']").wait_for()
            await harness.hear(walk)
            if step["document_pages"]["page_count"] > 1 and "doc" not in shown:
                shown.add("doc")
                await page.screenshot(path=screenshot_dir / "customer-document-page.png")
                await yes.wait_for()
                assert await yes.is_disabled()  # not before every page was read
            await read_pages_in_browser(page, step["document_pages"]["page_count"])
            if "doc-read" not in shown:
                shown.add("doc-read")
                await page.screenshot(path=screenshot_dir / "customer-document-read.png")
            await yes.click()
            answered += 1
        elif step["answer"] == "handwritten_copy":
            await harness.hear(walk)
            await page.get_by_role("heading", name="请抄录以下风险提示语句").wait_for()
            assert await yes.is_hidden()
            await snap("copy-grid")
            # First a sloppy attempt: two boxes left empty, the page names them.
            await page.get_by_role("button", name="确认提交").click()
            await page.get_by_text("个字格没有写").wait_for()
            await write_copy_in_browser(page, step["copy_text"], seed=2)
            await snap("copy-written")
            await page.get_by_role("button", name="确认提交").click()
        elif step["answer"] == "signature":
            # written on the pad in the page, never with a button
            await harness.hear(walk)
            await page.get_by_role("heading", name="请在下方亲笔签名").wait_for()
            assert await yes.is_hidden()
            await snap("signing")
            await _rule(page, "#signPad")  # a ruled line is not a signature
            await page.get_by_role("button", name="确认提交").click()
            await page.get_by_text("签名只是一条直线，请亲笔签写您的姓名").wait_for()
            await snap("signature-refused")
            await sign_in_browser(page)
            await snap("signed")
            await page.get_by_role("button", name="确认提交").click()
        else:
            await harness.hear(walk)
            if answered == 1:
                await page.get_by_role("button", name="不清楚，需要解释").click()
                await page.get_by_text("已通知销售人员为您解释").wait_for()
                await snap("paused-for-explanation")
                await harness.as_("agent01", "POST", f"/sessions/{sid}/script/resume",
                                  json={"note": "已解释"})
                await harness.hear(walk)  # played again after the explanation
                await yes.wait_for()
            await yes.click()
            answered += 1
        await page.wait_for_function(
            "(t) => !document.querySelector('#caption').textContent.startsWith(t)",
            arg=step["text"][:12])
    await page.get_by_text("签名已提交，请等待销售人员完成录制").wait_for()
    await _agent_stream_recorded(harness, sid)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/complete")
    assert r.status == 200, r.body
    await page.get_by_role("heading", name="录制已完成").wait_for()
    await snap("done")

    acks = await Acknowledgement.filter(session_id=sid).order_by("id")
    assert [a.answer.value for a in acks][:3] == ["affirmative", "negative", "affirmative"]
    ids = [a.step_id for a in acks]
    assert "elderly-intro" in ids and "elderly-confirm" in ids  # the customer is 76
    assert acks[-1].step_id == "signature" and acks[-1].answer_kind == "signature"
    copy, signature = await Signature.filter(session_id=sid).order_by("id")
    assert copy.risk_sentence and copy.cer is not None and copy.cer <= 0.2, copy.recognised_text
    assert acks[-2].step_id == "risk-sentence" and acks[-2].answer_kind == "handwriting"
    for written in (copy, signature):
        image = harness.deps.storage.read(written.image_path)
        assert image.startswith(b"\x89PNG") and len(image) > 2000
        assert harness.deps.storage.read(written.strokes_path).startswith(b"{")
    views = await SessionEvent.filter(session_id=sid, type="document_page_viewed")
    assert {(v.data["step_id"], v.data["page"]) for v in views} >= {
        ("notice", 1), ("notice", 2), ("agent-identity", 1)}


async def _agent_stream_recorded(harness: Harness, sid: str) -> None:
    """This test has the customer's browser only: the agent's stream, as the hub would register
    it, is a placeholder across the whole call (the whole-session E2E has both browsers)."""
    from datetime import timedelta
    from uuid import UUID

    from models.sessions import RecordingSession
    from security.audit import Actor
    from workflow.call import NewRecording, register_recording

    session = await RecordingSession.get(id=sid)
    assert session.recording_started_at is not None
    start = session.recording_started_at - timedelta(seconds=1)
    end = harness.deps.clock() + timedelta(seconds=5)
    stored = harness.deps.storage.put(f"{sid}/agent_av/placeholder-00001.webm", b"agent")
    await register_recording(harness.deps, Actor.system("media"), UUID(sid), NewRecording(
        kind="agent_av", segment=1, path=stored.path, sha256=stored.sha256,
        size_bytes=stored.size_bytes, duration_ms=int((end - start).total_seconds() * 1000),
        started_at=start, ended_at=end))


async def _customer_token(page: Any) -> str:
    token = await page.evaluate("sessionStorage.getItem('shuanglu.customer_token')")
    assert token
    return str(token)


async def test_a_reused_link_shows_a_clear_message(harness: Harness, browser: Any) -> None:
    walk = await harness.walk_to("opened")
    page = await browser.new_page()
    await page.goto(str(harness.client.make_url(f"/h5/invite/{walk.invitation_token}")))
    await page.get_by_text("该邀请链接已被使用，不能重复打开").wait_for()
    # Issue 17: the used link's page asks for the agent's one-time code, never opens again.
    await page.get_by_role("heading", name="继续办理").wait_for()
    assert await page.get_by_role("button", name="开始").is_hidden()


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
    from media.identity.imaging import encode_jpeg
    from media.identity.results import ChallengePlan
    from testing import identity_material as synth
    from testing.face_photos import load_sample
    from workflow.identity import run_identity_check

    walk = await harness.walk_to("consented")
    card = synth.random_identity(random.Random("page"), today=date.today())
    # A card side without a portrait is refused on upload (issue 15): print a face on it.
    face_photo = load_sample("obama.jpg")
    box = IdentityService().matcher.detect(face_photo)[0]
    portrait = synth.crop_portrait(face_photo, (box.x, box.y, box.w, box.h))
    (tmp_path / "front.jpg").write_bytes(encode_jpeg(synth.draw_front(card, portrait), 92))
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
