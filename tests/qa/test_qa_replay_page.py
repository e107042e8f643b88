"""The replay page (R-41) in real headless Chromium: the recording with its timeline beside it;
clicking a mark seeks the video to that moment; every view, play and download is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from aftercall.runtime import check_and_queue
from api.routes_qa import AFTER_CALL
from models.audit import AuditEntry
from models.sessions import Recording, RecordingSession
from tests.harness import PASSWORDS, Harness
from tests.qa.simulate import MediaKit, Scenario, record_session

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _position(page: Any) -> int:
    return int(await page.evaluate("window.replayState.position_ms"))


async def _wait_at(page: Any, at_ms: int) -> None:
    await page.wait_for_function(
        "([t]) => !window.replayState.seeking && "
        "Math.abs(window.replayState.position_ms - t) < 300", arg=[at_ms], timeout=15_000)


async def test_replay_page_seeks_to_a_clicked_mark_R41(
        harness: Harness, media_kit: MediaKit, browser: Any, screenshot_dir: Path) -> None:
    h = harness
    rec = await record_session(h, media_kit, Scenario(presence=[
        ("second_face_appeared", 40.4, 2), ("second_face_gone", 45.0, 1)]))
    await check_and_queue(h.deps, h.app[AFTER_CALL], UUID(rec.session_id))
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(h.client.make_url(f"/static/replay.html?session={rec.session_id}")))
    await page.fill("#username", "qa01")
    await page.fill("#password", PASSWORDS["qa01"])
    await page.click("#login")
    await page.wait_for_selector("#marks li[data-kind=finding]")
    steps = (await RecordingSession.get(id=rec.session_id)).steps
    assert await page.locator("#marks li[data-kind=step]").count() == len(steps)
    assert await page.locator("#marks li[data-kind=answer]").count() >= 14
    assert await page.locator("#marks li[data-kind=identity]").count() == 1
    assert await page.locator("#marks li[data-kind=presence]").count() == 2

    await page.click("#marks li[data-kind=finding]")
    await _wait_at(page, 40_400)
    second = await Recording.get(session_id=rec.session_id, kind="customer_av", segment=2)
    src = await page.eval_on_selector("#video", "v => v.currentSrc")
    assert src.endswith(f"/{second.id}")
    current = await page.eval_on_selector("#video", "v => v.currentTime")
    assert abs(current - 10.4) < 0.3
    assert await page.text_content("#position") == "00:40"
    active = await page.text_content("#marks li.active")
    assert active is not None and "第二张人脸" in active
    await page.screenshot(path=str(screenshot_dir / "qa-replay-second-face.png"), full_page=True)

    # A step in the first segment (the latest that starts in it): back to segment 1.
    first_ends = Scenario().segment_ms
    start, step_id = max((plays[0][0], sid) for sid, plays in rec.plays.items()
                         if 1_000 < plays[0][0] < first_ends - 2_000)
    title = next(s["title"] for s in steps if s["id"] == step_id)
    await page.click(f"#marks li[data-kind=step]:has-text('{title}')")
    await _wait_at(page, start)
    first = await Recording.get(session_id=rec.session_id, kind="customer_av", segment=1)
    assert (await page.eval_on_selector("#video", "v => v.currentSrc")).endswith(f"/{first.id}")
    await page.screenshot(path=str(screenshot_dir / "qa-replay-step.png"), full_page=True)
    assert errors == []

    assert await AuditEntry.filter(action="replay.view", object_id=rec.session_id).exists()
    played = await AuditEntry.filter(action="recording.play").values_list("object_id",
                                                                          flat=True)
    assert {str(first.id), str(second.id)} <= set(played)


async def test_replay_access_and_downloads_are_audited_R41(
        harness: Harness, media_kit: MediaKit) -> None:
    h = harness
    rec = await record_session(h, media_kit, Scenario())
    r = await h.as_("agent01", "GET", f"/qa/sessions/{rec.session_id}/replay")
    assert r.status == 404  # an agent does not replay
    r = await h.as_("auditor01", "GET", f"/qa/sessions/{rec.session_id}/replay")
    assert r.status == 200, r.body
    segment = r.body["recordings"]["customer_av"][0]
    assert segment["start_ms"] == 0
    got = await h.request("GET", segment["url"] + "?download=1")
    assert got.status == 200 and got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["X-Content-SHA256"] == segment["sha256"]
    downloads = await AuditEntry.filter(action="recording.download",
                                        object_id=str(segment["id"])).count()
    assert downloads == 1
    assert (await h.request("GET", segment["url"].replace("/media/", "/media/x"))).status == 401
    view = await AuditEntry.filter(action="replay.view", object_id=rec.session_id).first()
    assert view is not None and view.actor_label.startswith("auditor01")
