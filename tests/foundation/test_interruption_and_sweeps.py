"""R-30: interruption and resume within the window; the background sweep expires stale
sessions and lapsed interruptions, and seals completed sessions (R-31)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from models.sessions import RecordingSession, Signature
from tests.harness import HERE, Harness
from workflow.expiry import sweep
from workflow.sealing import verify_manifest


def _advance_clock(harness: Harness, delta: timedelta) -> None:
    real = harness.deps.clock
    harness.deps.clock = lambda: real() + delta


async def test_an_interrupted_call_resumes_and_replays_the_step_R30(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.hear(walk)
    assert (await harness.ack(walk, "opening")).status == 201
    sid = walk.session_id
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/interrupt",
                          json={"reason": "客户网络断开"})
    assert r.status == 200 and r.body["state"] == "interrupted"
    r = await harness.ack(walk, "agent-identity")
    assert r.status == 409  # nothing is acknowledged while interrupted
    _advance_clock(harness, timedelta(minutes=5))
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                          json={"location": HERE})
    assert r.status == 200 and r.body["state"] == "disclosing"
    assert r.body["current_step"]["id"] == "agent-identity"
    events = (await harness.as_("qa01", "GET", f"/sessions/{sid}/events")).body["events"]
    resumed = next(e for e in events if e["type"] == "call_resumed")
    assert resumed["data"]["replay_step_id"] == "agent-identity"
    assert resumed["data"]["gap_ms"] >= 5 * 60 * 1000


async def test_resume_after_the_window_is_refused_and_the_sweep_expires_it(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("in_call")
    sid = walk.session_id
    await harness.as_("agent01", "POST", f"/sessions/{sid}/call/interrupt",
                      json={"reason": "坐席网络断开"})
    _advance_clock(harness, timedelta(minutes=31))
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/resume",
                          json={"location": HERE})
    assert r.status == 409 and r.body["code"] == "resume_window_passed"
    result = await sweep(harness.deps)
    assert sid in {str(s) for s in result.expired}
    assert await harness.state(walk) == "expired"


async def test_stale_sessions_expire(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    fresh = await harness.walk_to("invited")
    await RecordingSession.filter(id=walk.session_id).update(
        updated_at=harness.deps.clock() - timedelta(days=8))
    result = await sweep(harness.deps)
    assert [str(s) for s in result.expired] == [walk.session_id]
    assert await harness.state(walk) == "expired"
    assert await harness.state(fresh) == "invited"


async def test_completed_sessions_are_sealed_and_verify_R31(harness: Harness) -> None:
    walk = await harness.walk_to("qa_pending")
    assert await verify_manifest(harness.deps, UUID(walk.session_id)) == []
    r = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/verify")
    assert (r.body["ok"], r.body["problems"], r.body["status"]) == (True, [], "intact")
    session = await RecordingSession.get(id=walk.session_id)
    assert session.manifest is not None and len(session.manifest["signature"]) > 40


async def test_the_verify_command_names_what_was_altered_R31(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from app.cli import main as cli_main

    walk = await harness.walk_to("qa_pending")
    monkeypatch.setenv("SHUANGLU_PROFILE", "test")
    monkeypatch.setenv("SHUANGLU_DATA_DIR", str(harness.config.data_dir))
    monkeypatch.setenv("DATABASE_URL", harness.config.database_url)
    assert await asyncio.to_thread(cli_main, ["verify", walk.session_id]) == 0
    signature = await Signature.get(session_id=walk.session_id)
    path = harness.files / signature.image_path
    path.chmod(0o640)
    path.write_bytes(path.read_bytes() + b"x")
    assert await asyncio.to_thread(cli_main, ["verify", walk.session_id]) == 1
    assert f"signature:{signature.image_path} was altered" in capsys.readouterr().out


async def test_an_altered_signature_file_is_detected_R31(harness: Harness) -> None:
    walk = await harness.walk_to("qa_pending")
    signature = await Signature.get(session_id=walk.session_id)
    path = harness.files / signature.image_path
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.chmod(0o640)
    path.write_bytes(bytes(data))
    problems = await verify_manifest(harness.deps, UUID(walk.session_id))
    assert problems == [f"signature:{signature.image_path} was altered"]


async def test_an_altered_timeline_is_detected_R31(harness: Harness) -> None:
    from models.sessions import SessionEvent

    walk = await harness.walk_to("qa_pending")
    await SessionEvent.filter(session_id=walk.session_id, seq=3).update(ip="10.9.9.9")
    problems = await verify_manifest(harness.deps, UUID(walk.session_id))
    assert problems == ["timeline was altered"]
