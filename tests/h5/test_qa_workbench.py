"""The QA workbench (issue 17 item 5; R-40, R-41) in a real headless Chromium on a desktop: an
inspector takes a session from the queue, dismisses its findings under the server's rules (a
major at once, a critical only with a second inspector's approval — four eyes) and passes it,
without touching the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from models.qa import DismissalStatus, QaDismissal, QaTask, Rectification
from models.sessions import Verdict
from tests.h5.conftest import chromium_context
from tests.harness import PASSWORDS, Harness
from tests.qa.verdict_kit import queue_with_findings

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(300)]

DESKTOP: dict[str, Any] = {"viewport": {"width": 1440, "height": 900}}


@pytest_asyncio.fixture
async def desktop() -> AsyncIterator[Any]:
    async with chromium_context(**DESKTOP) as context:
        yield context


async def _login(page: Any, username: str) -> None:
    await page.fill("#username", username)
    await page.fill("#password", PASSWORDS[username])
    await page.click("#login")
    await page.locator("#who").get_by_text(username).wait_for()


async def _standing(page: Any, finding_id: int, standing: str) -> None:
    await page.wait_for_selector(f'[data-finding="{finding_id}"][data-standing="{standing}"]')


async def test_an_inspector_finishes_a_session_in_the_workbench_R40(
        harness: Harness, desktop: Any, screenshot_dir: Path) -> None:
    h = harness
    sid = (await h.walk_to("qa_pending")).session_id
    _, (face, silence) = await queue_with_findings(h, sid, ["second_face", "silence_gap"])
    page = await desktop.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(h.client.make_url("/qa")))
    await _login(page, "qa01")
    item = page.locator(f'#queue li[data-session="{sid}"]')
    await item.wait_for()
    assert "截止" in (await item.text_content() or "")
    await item.click()
    await _standing(page, face.id, "undecided")
    await _standing(page, silence.id, "undecided")
    await page.screenshot(path=str(screenshot_dir / "qa-workbench-01-session.png"))

    # A pass while findings stand is refused by the server, in Chinese, naming them.
    await page.click("#submitVerdict")
    refusal = page.locator("#verdictStatus.error")
    await refusal.wait_for()
    assert f"#{face.id}" in (await refusal.text_content() or "")

    # The major: dismissed at once with a listed reason and a note.
    card = page.locator(f'[data-finding="{silence.id}"]')
    await card.locator('[data-action="dismiss"]').click()
    await card.locator("select.reason").select_option("detector_error")
    await card.locator("textarea.note").fill("回放 00:02 处客户在说话，环境噪声导致误判")
    await card.locator('[data-action="submit-dismissal"]').click()
    await _standing(page, silence.id, "dismissed")

    # The critical: only proposed; the proposer cannot approve it.
    card = page.locator(f'[data-finding="{face.id}"]')
    await card.locator('[data-action="dismiss"]').click()
    await card.locator("select.reason").select_option("bystander_not_involved")
    await card.locator("textarea.note").fill("00:01 入镜者为路过的营业厅工作人员，未与客户交谈")
    await card.locator('[data-action="submit-dismissal"]').click()
    await _standing(page, face.id, "dismissal_proposed")
    assert await card.locator('[data-action="approve"]').count() == 0
    await card.get_by_text("须由另一名质检员复核").wait_for()
    await page.screenshot(path=str(screenshot_dir / "qa-workbench-02-proposed.png"))

    # The second inspector approves it and passes the session.
    await page.click("#logout")
    await _login(page, "qa02")
    await page.locator("#proposals li").get_by_text(f"问题 #{face.id}").wait_for()
    await page.locator(f'#queue li[data-session="{sid}"]').click()
    card = page.locator(f'[data-finding="{face.id}"]')
    await card.locator(".review-note").fill("已回放核实")
    await card.locator('[data-action="approve"]').click()
    await _standing(page, face.id, "dismissed")
    await page.get_by_text("所有严重和重要问题均已排除").wait_for()
    await page.fill("#comments", "回放全程核实，两项问题均为误报或无关人员入镜。")
    await page.check('input[name="verdict"][value="pass"]')
    await page.click("#submitVerdict")
    await page.locator("#verdictStatus.ok").get_by_text("质检通过").wait_for()
    await page.locator(f'#queue li[data-session="{sid}"]').wait_for(state="detached")
    # The replay of the session is open beside the findings.
    frame = page.frame_locator("#replay")
    await frame.locator("#title").wait_for()
    await page.screenshot(path=str(screenshot_dir / "qa-workbench-03-passed.png"), full_page=True)

    task = await QaTask.get(session_id=sid)
    assert task.verdict == Verdict.PASS.value
    approved = await QaDismissal.get(finding_id=face.id)
    assert approved.status == DismissalStatus.APPROVED
    assert approved.proposed_by_id != approved.reviewed_by_id
    assert errors == []


async def test_an_inspector_rejects_with_confirmed_findings_R40(
        harness: Harness, desktop: Any, screenshot_dir: Path) -> None:
    h = harness
    sid = (await h.walk_to("qa_pending")).session_id
    _, (gap, silence) = await queue_with_findings(h, sid, ["recording_gap", "silence_gap"])
    page = await desktop.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(h.client.make_url(f"/qa?session={sid}")))
    await _login(page, "qa01")
    await _standing(page, gap.id, "undecided")
    # Rejecting with a finding left open is refused: each must be confirmed or dismissed.
    await page.check('input[name="verdict"][value="reject"]')
    await page.click("#submitVerdict")
    await page.locator("#verdictStatus.error").get_by_text("请对每一项严重和重要问题").wait_for()
    await page.locator(f'[data-finding="{gap.id}"] [data-action="confirm"]').click()
    await page.locator(f'[data-finding="{silence.id}"] [data-action="confirm"]').click()
    await page.locator(f'[data-finding="{gap.id}"]').get_by_text("将确认").wait_for()
    await page.fill("#comments", "00:01 起录像中断，须整改重录。")
    await page.click("#submitVerdict")
    await page.locator("#verdictStatus.ok").get_by_text("不通过").wait_for()
    await _standing(page, gap.id, "confirmed")
    assert await page.locator("#findings button:enabled").count() == 0
    await page.screenshot(path=str(screenshot_dir / "qa-workbench-04-rejected.png"))
    task = await QaTask.get(session_id=sid)
    assert task.verdict == Verdict.REJECT.value
    assert await Rectification.filter(original_session_id=sid).count() == 1
    assert errors == []
