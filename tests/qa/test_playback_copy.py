"""The playback copy of a sealed session (R-41): one MP4 with both parties side by side, the TTS
mixed into the audio, the Beijing wall-clock time, the session id and the script step burned
into every frame, interruptions shown as cards, on the recording clock. Made from real sealed
WebM segments (VP8 + Opus, as the recorder writes them) without touching them (R-31), served
through the replay tickets and audited like a segment."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import av
import numpy as np
import pytest

from api.keys import DATABASE, JOBS
from app import factory
from media.playback import PlaybackPlan, RenderSettings, SourceSegment, Span, overlay
from media.playback.compose import compose, to_i420
from models.audit import AuditEntry
from models.sessions import Recording
from qa.playback import (
    COPY_NAME,
    SIDECAR_NAME,
    PlaybackSettings,
    catch_up,
    make_playback_copy,
    playback_folder,
)
from qa.timeline import load_timeline
from tests.harness import PASSWORDS, Harness
from tests.qa.conftest import SCREENSHOTS
from tests.qa.simulate import MediaKit, Scenario, record_session
from workflow.expiry import SweepResult
from workflow.sealing import verify_manifest

# Media tests: the dialect changes nothing there. The job-queue test (with the catch-up's
# query) runs on every database.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
RATE = 48_000


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evidence(h: Harness, sid: str) -> dict[str, str]:
    """Every file under the session's folder except the copy's own: path → SHA-256."""
    folder = h.files / sid
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.parent.name != "playback"}


def _decode_audio(path: Path) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    chunks = []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(chunks)


def _rms(samples: np.ndarray, start_ms: int, end_ms: int) -> float:
    window = samples[start_ms * RATE // 1000:end_ms * RATE // 1000]
    return float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))


def _frame_at(path: Path, at_ms: int) -> av.VideoFrame:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time * 1000 >= at_ms:
                return frame
    raise AssertionError(f"no frame at {at_ms} ms")


def _luma(rgb: np.ndarray) -> np.ndarray:
    i420 = to_i420(rgb)
    return i420.reshape(-1)[:rgb.shape[0] * rgb.shape[1]].reshape(rgb.shape[:2]).astype(np.int16)


def _differing(frame_luma: np.ndarray, expected_rgb: np.ndarray) -> int:
    """Pixels of a decoded region that are far from an overlay drawn for comparison."""
    return int(np.count_nonzero(np.abs(frame_luma - _luma(expected_rgb)) > 64))


@SQLITE
async def test_playback_copy_of_a_sealed_session_with_an_interruption_R41(
        harness: Harness, media_kit: MediaKit) -> None:
    h = harness
    rec = await record_session(h, media_kit, Scenario(interrupt_after="product",
                                                      interruption_ms=6000))
    sid = rec.session_id
    root = h.files
    before = _evidence(h, sid)
    t = await load_timeline(UUID(sid))
    assert t.interruptions and t.clips

    # Before the job ran: the replay page says the copy is being made.
    r = await h.as_("qa01", "GET", f"/qa/sessions/{sid}/replay")
    assert r.status == 200, r.body
    assert r.body["playback"] == {"status": "pending", "label": "回放副本生成中"}
    ticket = r.body["recordings"]["customer_av"][0]["url"].split("/")[-2]
    got = await h.request("GET", f"/api/v1/replay/playback/{ticket}")
    assert got.status == 404 and got.body["code"] == "playback_not_ready"

    outcome = await make_playback_copy(h.deps, UUID(sid), redis=h.redis)
    assert outcome.status == "made", outcome
    folder = playback_folder(root, sid)
    copy = folder / COPY_NAME
    sidecar = json.loads((folder / SIDECAR_NAME).read_text())
    assert sidecar["status"] == "ok" and sidecar["problems"] == []
    assert sidecar["sha256"] == _sha(copy)
    assert "libx264" in sidecar["encoder"]["video"] and "aac" in sidecar["encoder"]["audio"]
    datetime.fromisoformat(sidecar["made_at"])
    rows = await Recording.filter(session_id=sid).order_by("id")
    assert {(s["recording_id"], s["sha256"]) for s in sidecar["sources"]} == \
        {(r.id, r.sha256) for r in rows}
    assert all(s["used"] and s["sha256_read"] == s["sha256"] for s in sidecar["sources"])

    # One video and one audio stream, as long as the call (recording clock, 1:1).
    with av.open(str(copy)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        video = c.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 960, 424)
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.duration is not None
        duration_ms = c.duration * 1000 // av.time_base
    assert abs(duration_ms - t.end_ms) < 300, (duration_ms, t.end_ms)
    assert abs(sidecar["duration_ms"] - t.end_ms) < 100

    # The TTS is in the mixed audio where each clip played; the interruption is silent.
    audio = _decode_audio(copy)
    gap = t.interruptions[0]
    assert gap.end_ms is not None
    silence = _rms(audio, gap.start_ms + 300, gap.end_ms - 300)
    assert silence < 0.001, silence
    for clip in t.clips:
        level = _rms(audio, clip.start_ms + 100, clip.end_ms - 100)
        assert level > 0.02 and level > 20 * silence, (clip.step_id, level, silence)

    # Burned in: the Beijing time and position of that very second, the session id, the step.
    started = rec.started_at
    play = next(p for p in t.plays if p.step_id == "product")
    at = play.start_ms + 1500
    frame = _frame_at(copy, at)
    second = int(frame.time * 1000) // 1000 * 1000
    luma = frame.to_ndarray(format="gray").astype(np.int16)
    top, bottom = luma[:32], luma[-32:]
    right = overlay.top_band(960, 32, started, second, sid)
    wrong_time = overlay.top_band(960, 32, started, second + 1000, sid)
    wrong_session = overlay.top_band(960, 32, started, second, "0" * 36)
    assert _differing(top, right) * 5 < min(_differing(top, wrong_time),
                                             _differing(top, wrong_session))
    assert overlay.wall_clock(started, second).startswith(
        started.astimezone(overlay.BEIJING).strftime("%Y-%m-%d"))
    index = play.index
    title = f"第 {index + 1}/{len(t.steps)} 步 · {t.steps[index].title}"
    assert _differing(bottom, overlay.bottom_band(960, 32, title)) * 5 < _differing(
        bottom, overlay.bottom_band(960, 32, "话术已结束"))
    assert _differing(top, right) < 200

    # During the interruption both tiles are the card.
    frame = _frame_at(copy, gap.start_ms + 2000)
    tile = frame.to_ndarray(format="gray").astype(np.int16)[32:392, :480]
    note = f"{gap.reason} · 时长 {overlay.position(gap.end_ms - gap.start_ms)}"
    card = overlay.card(480, 360, "通话中断", note, alert=True)
    diff = np.abs(tile - _luma(card))
    diff[6:30, 6:60] = 0  # the party's name tag is drawn over it
    assert np.count_nonzero(diff > 64) < 200
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _frame_at(copy, at).to_image().save(SCREENSHOTS / "playback-copy-step.png")
    frame.to_image().save(SCREENSHOTS / "playback-copy-interruption.png")

    # The sealed evidence is untouched and still verifies.
    assert _evidence(h, sid) == before
    assert await verify_manifest(h.deps, UUID(sid)) == []

    # Idempotent: a second run finds the sidecar matching and writes nothing.
    stat = copy.stat()
    sidecar_raw = (folder / SIDECAR_NAME).read_bytes()
    again = await make_playback_copy(h.deps, UUID(sid), redis=h.redis)
    assert again.status == "unchanged"
    assert (copy.stat().st_ino, copy.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert (folder / SIDECAR_NAME).read_bytes() == sidecar_raw
    assert sorted(p.name for p in folder.iterdir()) == sorted([COPY_NAME, SIDECAR_NAME])

    # QA plays and downloads it through the replay ticket; both are audited.
    r = await h.as_("qa01", "GET", f"/qa/sessions/{sid}/replay")
    view = r.body["playback"]
    assert view["status"] == "ok" and view["sha256"] == sidecar["sha256"]
    got = await h.request("GET", view["url"])
    assert got.status == 200 and got.headers["Content-Type"] == "video/mp4"
    assert got.headers["X-Content-SHA256"] == sidecar["sha256"]
    assert hashlib.sha256(got.body).hexdigest() == sidecar["sha256"]
    ranged = await h.request("GET", view["url"], headers={"Range": "bytes=0-99"})
    assert ranged.status == 206
    plays = await AuditEntry.filter(action="recording.play", object_type="playback",
                                    object_id=sid)
    assert len(plays) == 1 and plays[0].actor_label.startswith("qa01")
    got = await h.request("GET", view["url"] + "?download=1")
    assert got.status == 200 and got.headers["Content-Disposition"].startswith("attachment")
    assert await AuditEntry.filter(action="recording.download", object_type="playback",
                                   object_id=sid).count() == 1
    assert (await h.request("GET", view["url"].replace("/playback/", "/playback/x"))).status \
        == 401


@SQLITE
async def test_a_damaged_or_missing_segment_is_reported_and_the_rest_is_played_R41(
        harness: Harness, media_kit: MediaKit) -> None:
    h = harness
    rec = await record_session(h, media_kit, Scenario())
    sid = rec.session_id
    root = h.files
    altered = await Recording.get(session_id=sid, kind="customer_av", segment=2)
    lost = await Recording.get(session_id=sid, kind="agent_av", segment=1)
    (root / altered.path).write_bytes(b"\x1a\x45\xdf\xa3 not a webm any more")
    (root / lost.path).unlink()

    outcome = await make_playback_copy(h.deps, UUID(sid), redis=h.redis)
    assert outcome.status == "made"
    sidecar = outcome.sidecar
    assert sidecar is not None and sidecar["status"] == "partial"
    assert sorted(sidecar["problems"]) == ["客户录像第 2 段：与封存哈希不符",
                                           "销售人员录像第 1 段：文件缺失"]
    by_id = {s["recording_id"]: s for s in sidecar["sources"]}
    assert by_id[altered.id]["problem"] == "hash_mismatch" and not by_id[altered.id]["used"]
    assert by_id[lost.id]["problem"] == "missing"
    copy = playback_folder(root, sid) / COPY_NAME
    assert sidecar["sha256"] == _sha(copy)
    with av.open(str(copy)) as c:
        assert c.duration is not None
        assert c.duration * 1000 // av.time_base >= rec.end_ms - 300
    # Where the altered segment was, the customer's tile says so (the agent's still plays).
    at = (await load_timeline(UUID(sid))).offset(altered.started_at) + 3000
    tile = _frame_at(copy, at).to_ndarray(format="gray").astype(np.int16)[32:392, :480]
    card = overlay.card(480, 360, "录像无法读取", "第 2 段与封存哈希不符", alert=True)
    diff = np.abs(tile - _luma(card))
    diff[6:30, 6:60] = 0
    assert np.count_nonzero(diff > 64) < 200

    r = await h.as_("qa01", "GET", f"/qa/sessions/{sid}/replay")
    assert r.status == 200
    assert r.body["playback"]["status"] == "partial"
    assert r.body["playback"]["problems"] == sidecar["problems"]
    assert (await h.request("GET", r.body["playback"]["url"])).status == 200
    # Idempotent in the partial state too.
    assert (await make_playback_copy(h.deps, UUID(sid))).status == "unchanged"


def test_an_undecodable_segment_with_its_sealed_hash_is_left_out_R41(tmp_path: Path,
                                                                     media_kit: MediaKit) -> None:
    """A segment that was sealed broken: its hash matches, decoding fails; the copy is still
    made, with the failure named."""
    good = tmp_path / "agent.webm"
    media_kit.write_segment(good, 3000, np.zeros(3 * RATE, np.float32))
    broken = tmp_path / "customer.webm"
    broken.write_bytes(good.read_bytes()[:200] + b"\x00" * 5000)
    segments = (
        SourceSegment(1, "customer_av", 1, str(broken), _sha(broken), 0, 3000),
        SourceSegment(2, "agent_av", 1, str(good), _sha(good), 0, 3000),
    )
    plan = PlaybackPlan("s-1", "2026-11-28T02:31:05+00:00", 3000, segments,
                        steps=(Span(0, 3000, "第 1/1 步 · 测试"),),
                        settings=RenderSettings())
    result = compose(plan, tmp_path / "out.mp4")
    customer, agent = result.sources
    assert customer.problem == "decode_error" and agent.problem is None
    assert result.video_frames == 45 and result.sha256 == _sha(tmp_path / "out.mp4")
    top = _frame_at(tmp_path / "out.mp4", 1000).to_ndarray(format="gray")[:32]
    band = overlay.top_band(960, 32, datetime.fromisoformat(plan.recording_started_at), 1000,
                            "s-1")
    assert "2026-11-28 10:31:06" in overlay.wall_clock(
        datetime.fromisoformat(plan.recording_started_at), 1000)
    assert _differing(top.astype(np.int16), band) < 200


async def test_sealed_sessions_get_their_copy_through_the_job_queue_R41(
        harness: Harness, media_kit: MediaKit, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker loop queues a copy for each session it seals, plus a catch-up; the catch-up
    finds sealed sessions without a copy and the job receiver makes it."""
    h = harness
    rec = await record_session(h, media_kit, Scenario())
    sid = UUID(rec.session_id)

    queued: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        async def enqueue(self, name: str, **kwargs: Any) -> None:
            queued.append((name, kwargs))

    async def sealed_one(deps: Any) -> SweepResult:
        return SweepResult(expired=[], sealed=[sid])

    monkeypatch.setattr(factory, "sweep", sealed_one)
    deps = dataclasses.replace(h.deps, jobs=Recorder())
    loop = asyncio.create_task(factory.worker_loop(deps, h.app[DATABASE], 3600))
    try:
        for _ in range(100):
            if len(queued) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
    assert queued == [("after_call_sweep", {}), ("playback_copy", {"session_id": str(sid)}),
                      ("playback_catch_up", {})]

    # The real broker and receiver: the catch-up queues the session, the job makes the copy.
    jobs = h.app[JOBS]
    async with h.jobs_running(max_async_tasks=2):
        assert await catch_up(h.deps, h.redis, jobs, PlaybackSettings()) == 1
        sidecar = playback_folder(h.files, sid) / SIDECAR_NAME
        for _ in range(1800):  # the render runs in a child process; the machine may be busy
            if sidecar.exists():
                break
            await asyncio.sleep(0.1)
        assert json.loads(sidecar.read_text())["status"] == "ok"
    # Nothing left to catch up (the pass is rate-limited too).
    assert await catch_up(h.deps, h.redis, jobs, PlaybackSettings()) == 0
    await h.redis.delete("playback:catch-up")
    assert await catch_up(h.deps, h.redis, jobs, PlaybackSettings()) == 0


@SQLITE
async def test_replay_page_shows_the_copy_once_made_R41(
        harness: Harness, media_kit: MediaKit, browser: Any) -> None:
    h = harness
    rec = await record_session(h, media_kit, Scenario())
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(h.client.make_url(f"/static/replay.html?session={rec.session_id}")))
    await page.fill("#username", "qa01")
    await page.fill("#password", PASSWORDS["qa01"])
    await page.click("#login")
    await page.wait_for_selector("#marks li[data-kind=step]")
    assert await page.text_content("#playbackStatus") == "回放副本生成中"
    assert not await page.is_visible("#playback")

    assert (await make_playback_copy(h.deps, UUID(rec.session_id))).status == "made"
    await page.reload()
    await page.wait_for_selector("#playback", state="visible")
    status = await page.text_content("#playbackStatus")
    assert status is not None and status.startswith("回放副本（时长")
    src = await page.eval_on_selector("#playback", "v => v.currentSrc || v.src")
    assert "/api/v1/replay/playback/" in src
    href = await page.get_attribute("#playbackDownload", "href")
    assert href is not None and href.endswith("?download=1")
    # Opening the page does not play it (preload="none"): nothing audited yet.
    assert not await AuditEntry.filter(action="recording.play", object_type="playback").exists()
    playable = await page.evaluate(
        "document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64001f, "
        "mp4a.40.2\"')")
    if playable:  # Chromium builds without H.264 cannot decode it; the server side still must
        await page.eval_on_selector("#playback", "v => { v.muted = true; return v.play(); }")
        await page.wait_for_function("document.querySelector('#playback').readyState >= 1")
        duration = await page.eval_on_selector("#playback", "v => v.duration")
        end_ms = (await load_timeline(UUID(rec.session_id))).end_ms  # completed at
        assert abs(duration * 1000 - end_ms) < 500
        assert await AuditEntry.filter(action="recording.play", object_type="playback",
                                       object_id=rec.session_id).count() == 1
    await page.screenshot(path=str(SCREENSHOTS / "playback-replay-page.png"), full_page=True)
    assert errors == []
    print("browser can play H.264/AAC MP4:", repr(playable))
