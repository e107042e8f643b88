"""The script editor (issue 17 item 6; R-21, R-22, R-23) in a real headless Chromium on a desktop:
a product owner edits a script's YAML with the lint shown as they type, saves a draft, sees the
difference from the published version, hears a step's speech and submits; a second product owner
approves (the author cannot: four eyes) and publishes."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from models.sales import ScriptStatus, ScriptVersion
from scripts_library.catalogue import LIBRARY_DIR
from tests.h5.conftest import chromium_context
from tests.harness import PASSWORDS, Harness

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(300)]

DESKTOP: dict[str, Any] = {"viewport": {"width": 1440, "height": 900}}
SAMPLE = (LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml").read_text(encoding="utf-8")
FORBIDDEN = "收益比银行存款高，"


@pytest_asyncio.fixture
async def desktop() -> AsyncIterator[Any]:
    async with chromium_context(**DESKTOP) as context:
        yield context


async def _login(page: Any, username: str) -> None:
    await page.fill("#username", username)
    await page.fill("#password", PASSWORDS[username])
    await page.click("#login")
    await page.locator("#who").get_by_text(username).wait_for()


async def _lint_settled(page: Any) -> None:
    await page.wait_for_function("() => window.scriptEditor.linting === 0 && "
                                 "window.scriptEditor.lint !== null")


async def test_a_product_owner_edits_and_a_second_publishes_R21_R23(
        harness: Harness, desktop: Any, screenshot_dir: Path) -> None:
    h = harness
    v1 = await ScriptVersion.get(product__code="YA-ZSS-001", status=ScriptStatus.PUBLISHED)
    page = await desktop.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(h.client.make_url("/script-editor")))
    await _login(page, "po01")
    await page.click(f'#versions li[data-version="{v1.id}"]')
    await page.wait_for_function("() => document.querySelector('#yaml').value.includes("
                                 "'甬安福瑞终身寿险')")
    await _lint_settled(page)
    assert await page.text_content("#lintState") == "未发现问题"

    # Typing a forbidden comparison: the lint names it with its line, at once.
    edited = SAMPLE.replace("属于传统型终身寿险", FORBIDDEN + "属于传统型终身寿险", 1)
    await page.fill("#yaml", edited)
    finding = page.locator('#lint li.error[data-code="forbidden-phrasing"]')
    await finding.wait_for()
    assert "银行存款" in (await finding.text_content() or "")
    assert "错误" in (await page.text_content("#lintState") or "")
    await finding.click()  # selects the line in the editor
    selected = await page.evaluate(
        "() => { const e = document.querySelector('#yaml');"
        " return e.value.slice(e.selectionStart, e.selectionEnd); }")
    assert FORBIDDEN in selected
    assert await page.evaluate("() => document.querySelector('#yaml').scrollTop") > 0
    await page.screenshot(path=str(screenshot_dir / "script-editor-01-lint-error.png"))

    # Corrected, saved as a new draft (version 2): the diff against the published version 1.
    await page.fill("#yaml", SAMPLE.replace("属于传统型终身寿险", "属于传统型终身寿险产品", 1))
    await page.locator("#lintState").get_by_text("未发现问题").wait_for()
    await page.click("#save")
    await page.locator("#message").get_by_text("已保存为第 2 版草稿").wait_for()
    v2 = await ScriptVersion.get(product_id=v1.product_id, version=2)
    assert v2.status == ScriptStatus.DRAFT and v2.created_by_id is not None
    added = page.locator("#diff .add", has_text="属于传统型终身寿险产品")
    await added.wait_for()
    assert await page.locator("#diff .del", has_text="属于传统型终身寿险，").count() == 1
    assert "product" in (await page.text_content("#diffSummary") or "")

    # Hear a step's speech: the WAV the call would play, played by the page.
    await page.locator('#steps li[data-step="opening"] button').click()
    await page.wait_for_function("() => { const p = document.querySelector('#player');"
                                 " return p.dataset.step === 'opening' && p.duration > 3; }")
    r = await h.as_("po01", "GET", f"/scripts/{v2.id}/steps/opening/speech")
    assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(r.body)) as w:
        assert w.getnframes() / w.getframerate() > 3

    await page.click("#submit")
    await page.locator("#reviewStatus.ok").get_by_text("已提交审核").wait_for()
    assert await page.is_disabled("#approve")  # the author may not approve
    await page.screenshot(path=str(screenshot_dir / "script-editor-02-submitted.png"),
                          full_page=True)

    # A second product owner approves and publishes.
    await page.click("#logout")
    await _login(page, "po02")
    await page.click(f'#versions li[data-version="{v2.id}"]')
    await page.locator("#facts[data-status=submitted]").wait_for()
    await page.click("#approve")
    await page.locator("#reviewStatus.ok").get_by_text("已审核通过").wait_for()
    await page.click("#publish")
    await page.locator("#reviewStatus.ok").get_by_text("已发布").wait_for()
    await page.locator(f'#versions li[data-version="{v1.id}"][data-status=retired]').wait_for()
    await page.screenshot(path=str(screenshot_dir / "script-editor-03-published.png"),
                          full_page=True)

    v2 = await ScriptVersion.get(id=v2.id)
    assert v2.status == ScriptStatus.PUBLISHED
    assert v2.approved_by_id not in (None, v2.created_by_id, v2.submitted_by_id)
    assert (await ScriptVersion.get(id=v1.id)).status == ScriptStatus.RETIRED
    assert errors == []


async def test_the_editor_endpoints_lint_unsaved_yaml_and_refuse_agent_steps_R21(
        harness: Harness) -> None:
    h = harness
    r = await h.as_("po01", "POST", "/scripts/lint", json={"yaml": "steps: [\n  - x"})
    assert r.status == 200 and r.body["loads"] is False and r.body["findings"][0]["line"]
    r = await h.as_("agent01", "POST", "/scripts/lint", json={"yaml": SAMPLE})
    assert r.status == 403
    v1 = await ScriptVersion.get(product__code="YA-ZSS-001", status=ScriptStatus.PUBLISHED)
    r = await h.as_("po01", "GET", f"/scripts/{v1.id}/steps/agent-identity/speech")
    assert r.status == 422 and r.body["code"] == "step_spoken_by_agent"
    r = await h.as_("po01", "GET", f"/scripts/{v1.id}/steps/nope/speech")
    assert r.status == 404
