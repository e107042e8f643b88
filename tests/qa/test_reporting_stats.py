"""Statistics (R-55) on a known data set built through the real API: sessions by outcome,
identity pass rates, QA pass rates and median durations, by agent, product, branch and period."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.sessions import RecordingSession
from tests.harness import FAILED, PASSED, PASSWORDS, Harness, Walk, consent_body
from tests.qa.simulate import FakeClock
from tests.qa.verdict_kit import queue_with_findings

TL = "YA-TL-003"


async def _recorded(h: Harness, clock: FakeClock, call_minutes: int, verdict: str | None,
                    agent: str = "agent01", product: str = "YA-ZSS-001",
                    failed_identity_first: bool = False) -> Walk:
    w = await h.walk_to("consented", agent, product=product)
    if failed_identity_first:
        r = await h.as_("engine01", "POST", f"/sessions/{w.session_id}/identity-checks",
                        json={"ocr": PASSED, "face": FAILED, "liveness": PASSED})
        assert r.status == 201, r.body
    w = await h.walk_to("in_call", agent, walk=w)
    clock.advance(call_minutes * 60_000)
    w = await h.walk_to("qa_pending", agent, walk=w)
    if verdict:
        # A clean report for a pass; for a reject the inspector adds the problem.
        await queue_with_findings(h, w.session_id)
        body: dict[str, Any] = {"verdict": verdict}
        if verdict == "reject":
            body["findings"] = [{"message": "销售人员未说明犹豫期", "at_ms": 1000}]
        r = await h.as_("qa01", "POST", f"/qa/sessions/{w.session_id}/verdict", json=body)
        assert r.status == 201, r.body
    return w


async def test_statistics_match_a_known_data_set_R55(harness: Harness) -> None:
    h = harness
    clock = FakeClock()
    h.deps.clock = clock
    await _recorded(h, clock, 10, "pass")
    await _recorded(h, clock, 20, "pass", failed_identity_first=True)
    await _recorded(h, clock, 30, "reject")
    declined = await h.walk_to("opened")
    r = await h.request("POST", "/customer/consent", token=declined.customer_token,
                        json=consent_body(agree_recording=False))
    assert r.status == 200 and r.body["state"] == "declined", r.body
    failed = await h.walk_to("consented")
    for _ in range(3):
        r = await h.as_("engine01", "POST", f"/sessions/{failed.session_id}/identity-checks",
                        json={"ocr": PASSED, "face": FAILED, "liveness": PASSED})
    assert r.body["state"] == "identity_failed", r.body
    await h.walk_to("invited")
    await _recorded(h, clock, 15, "pass", agent="agent02", product=TL)
    older = await _recorded(h, clock, 25, None, agent="agent02", product=TL)
    # One session of the previous month (statistics count by creation date, China time).
    await RecordingSession.filter(id=older.session_id).update(
        created_at=datetime(2020, 1, 15, 3, 0, tzinfo=UTC))

    r = await h.as_("admin01", "GET", "/stats?group_by=agent")
    assert r.status == 200, r.body
    assert r.body["scope"] == "institution"
    by_agent = {row["label"]: row for row in r.body["items"]}
    a1, a2 = by_agent["王小明"], by_agent["李晓红"]
    assert a1["sessions"] == 6
    assert a1["outcomes"] == {"qa_passed": 2, "qa_rejected": 1, "awaiting_qa": 0,
                              "in_progress": 1, "declined": 1, "identity_failed": 1,
                              "expired": 0, "aborted": 0}
    # Identity: 4 sessions tried, 3 passed; attempts 3 ok + 1 failed + 3 failed = 3 of 7.
    assert a1["identity_pass_rate"] == 0.75
    assert a1["identity_attempt_pass_rate"] == round(3 / 7, 4)
    assert a1["qa_pass_rate"] == round(2 / 3, 4)
    # The walk itself takes a little call time (the speech it plays): the medians are over the
    # sessions' real call lengths, each the minutes the test added plus that.
    calls: dict[str, list[float]] = {}
    for row in await RecordingSession.filter(completed_at__isnull=False).prefetch_related(
            "agent__user"):
        assert row.recording_started_at is not None and row.completed_at is not None
        call_ms = (row.completed_at - row.recording_started_at).total_seconds() * 1000
        calls.setdefault(row.agent.user.username, []).append(call_ms)
    assert sorted(len(v) for v in calls.values()) == [2, 3]
    for minutes, ms in zip((10, 20, 30, 15, 25), sorted(calls["agent01"]) + sorted(
            calls["agent02"]), strict=True):
        assert minutes * 60_000 <= ms < (minutes + 3) * 60_000
    assert a1["median_call_ms"] == round(statistics.median(calls["agent01"]))
    assert a2["sessions"] == 2 and a2["outcomes"]["awaiting_qa"] == 1
    assert a2["qa_pass_rate"] == 1.0
    assert a2["median_call_ms"] == round(statistics.median(calls["agent02"]))
    total = r.body["total"]
    assert total["sessions"] == 8 and total["qa_pass_rate"] == 0.75
    assert total["median_call_ms"] == round(statistics.median(  # 10, 15, 20, 25, 30 minutes
        calls["agent01"] + calls["agent02"]))

    r = await h.as_("admin01", "GET", "/stats?group_by=product")
    by_product = {row["label"]: row["sessions"] for row in r.body["items"]}
    assert sorted(by_product.values()) == [2, 6]

    r = await h.as_("admin01", "GET", "/stats?group_by=period&period=month")
    by_month = {row["key"]: row["sessions"] for row in r.body["items"]}
    now = datetime.now(UTC) + timedelta(hours=8)
    assert by_month == {"2020-01": 1, f"{now.year}-{now.month:02d}": 7}
    r = await h.as_("admin01", "GET", "/stats?group_by=period&period=month&from=2020-01-01"
                    "&to=2020-02-01")
    assert r.body["total"]["sessions"] == 1

    r = await h.as_("sup01", "GET", "/stats?group_by=branch")
    assert r.body["scope"] == "branch" and r.body["items"][0]["sessions"] == 8
    for bad in ("group_by=colour", "period=year", "from=yesterday",
                "from=2026-11-02&to=2026-11-01"):
        r = await h.as_("admin01", "GET", f"/stats?{bad}")
        assert r.status == 422, bad
    r = await h.as_("qa01", "GET", "/stats")
    assert r.status == 403


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_dashboard_draws_the_statistics_without_external_scripts_R55(
        harness: Harness, browser: Any, screenshot_dir: Path) -> None:
    h = harness
    clock = FakeClock()
    h.deps.clock = clock
    await _recorded(h, clock, 12, "pass")
    await _recorded(h, clock, 18, "reject")
    await _recorded(h, clock, 9, "pass", agent="agent02", product=TL)
    page = await browser.new_page()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    await page.goto(str(h.client.make_url("/static/dashboard.html")))
    await page.fill("#username", "admin01")
    await page.fill("#password", PASSWORDS["admin01"])
    await page.click("#login")
    await page.wait_for_selector("#rows tr")
    assert await page.text_content("#kTotal") == "3"
    assert await page.text_content("#kQa") == "66.7%"
    await page.select_option("#groupBy", "agent")
    await page.wait_for_function("document.querySelectorAll('#rows tr').length === 2")
    cells = await page.eval_on_selector_all(
        "#rows tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert sorted(c[:4] for c in cells) == [["李晓红", "1", "1", "0"], ["王小明", "2", "1", "1"]]
    assert await page.locator("#outcomes rect").count() == 3  # 2+1 outcome segments
    assert await page.locator("#durations rect").count() == 2
    await page.screenshot(path=str(screenshot_dir / "qa-dashboard.png"), full_page=True)
    origin = str(h.client.make_url("/"))
    assert all(url.startswith(origin) for url in requests)
