"""R-30, R-31: sealing never signs absence. A recording or signature file that is missing, short
or not what was registered stops the seal (evidence_incomplete, on the timeline, audited, the
branch's supervisors alerted) until the file is back; an aborted or expired session that
recorded anything is sealed as incomplete; and verification tells not sealed, incomplete,
altered and intact apart, in the API, the CLI and the offline archive check."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from tortoise.transactions import in_transaction

from app.cli import main as cli_main
from archive.offline import verify_archive
from models.audit import AuditEntry
from models.people import User
from models.sessions import Recording, RecordingSession, SessionEvent, Signature
from security.audit import Actor
from security.seal_keys import DatabaseKeyring
from security.seal_manifest import BODY_FIELDS_V2, VerifyStatus, chain, sign
from tests.harness import Harness, Walk
from workflow import call
from workflow.expiry import sweep
from workflow.sealing import verify_manifest, verify_session

SEGMENT = b"\x1aE\xdf\xa3" + bytes(range(256)) * 40  # stands in for a WebM segment
FIRST_SEGMENT = 100  # clear of the segments the harness registers for the walk itself


@pytest.fixture
def cli_env(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI opens the harness's database and data folder (same secrets file)."""
    monkeypatch.setenv("SHUANGLU_PROFILE", "test")
    monkeypatch.setenv("SHUANGLU_DATA_DIR", str(harness.config.data_dir))
    monkeypatch.setenv("DATABASE_URL", harness.config.database_url)


async def cli(*args: str) -> int:
    return await asyncio.to_thread(cli_main, list(args))


async def record(harness: Harness, walk: Walk, segments: int = 2) -> list[Recording]:
    """Segments written through the storage and registered as the call hub does."""
    sid = UUID(walk.session_id)
    rows = []
    for n in range(FIRST_SEGMENT, FIRST_SEGMENT + segments):
        stored = harness.deps.storage.put(f"sessions/{sid}/recordings/customer_av/{n:05d}.webm",
                                          SEGMENT + bytes([n % 256]))
        now = harness.deps.clock()
        rows.append(await call.register_recording(
            harness.deps, Actor.system("media"), sid, call.NewRecording(
                kind="customer_av", segment=n, path=stored.path, sha256=stored.sha256,
                size_bytes=stored.size_bytes, duration_ms=60_000, started_at=now, ended_at=now)))
    return rows


def stored(harness: Harness, relative: str) -> Path:
    return harness.files / relative


async def events_of(walk: Walk, type_: str) -> list[SessionEvent]:
    return await SessionEvent.filter(session_id=walk.session_id, type=type_).order_by("seq")


async def _receive(ws: Any, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        message = await ws.receive_json(timeout=10)
        if predicate(message):
            return message  # type: ignore[no-any-return]


def _alert(message: dict[str, Any]) -> bool:
    return message["type"] == "event" and message["event"]["type"] == "evidence_incomplete_alert"


@pytest.mark.timeout(180)
async def test_a_missing_recording_stops_the_seal_until_it_is_restored_R31(
    harness: Harness, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    walk = await harness.walk_to("in_call")
    first, second = await record(harness, walk)
    await harness.walk_to("completed", walk=walk)
    gone = stored(harness, second.path)
    kept = gone.read_bytes()
    gone.unlink()  # e.g. a worker that wrote to another data folder
    supervisor = await harness.login("sup01")
    customer = await harness.client.ws_connect("/api/v1/live")
    await customer.send_json({"role": "customer", "token": walk.customer_token})
    await _receive(customer, lambda m: m["type"] == "snapshot")
    async with harness.client.ws_connect("/api/v1/live") as ws:
        await ws.send_json({"role": "staff", "token": supervisor,
                            "session_id": walk.session_id})
        await _receive(ws, lambda m: m["type"] == "snapshot")
        result = await sweep(harness.deps)
        alert = (await _receive(ws, _alert))["event"]
    sid = UUID(walk.session_id)
    # The customer's page sees the state change, never the staff alert.
    moved = await _receive(customer, lambda m: m["type"] == "event")
    assert moved["event"]["type"] == "evidence_incomplete" and "problems" not in moved["event"]
    assert sid in result.refused and sid not in result.sealed

    # Nothing was signed; the state says why, for everyone to see.
    session = await RecordingSession.get(id=sid)
    assert session.state == "evidence_incomplete" and session.manifest is None
    assert session.sealed_at is None
    r = await harness.as_("sup01", "GET", f"/sessions/{sid}")
    assert (r.body["state"], r.body["state_label"]) == ("evidence_incomplete", "证据不完整")
    name = f"recording:customer_av:{second.segment}"
    [refusal] = await events_of(walk, "evidence_incomplete")
    assert refusal.to_state == "evidence_incomplete"
    assert refusal.data["problems"] == [{
        "item": name, "path": second.path, "problem": "missing",
        "detail": f"file {second.path} is missing"}]
    audited = await AuditEntry.filter(object_id=str(sid),
                                      action__in=["session.evidence_incomplete",
                                                  "session.evidence_alert"]).order_by("id")
    sup01 = await User.get(username="sup01")
    assert [e.action for e in audited] == ["session.evidence_incomplete",
                                           "session.evidence_alert"]
    assert sup01.id in audited[1].details["supervisors"]
    assert audited[1].details["items"] == [name]
    assert (alert["branch_id"], alert["session_id"], alert["state"]) == (
        session.branch_id, str(sid), "evidence_incomplete")
    assert "证据不完整" in alert["message"] and alert["problems"] == refusal.data["problems"]

    # Verification says incomplete (not altered, not intact) and names the file.
    r = await harness.as_("qa01", "GET", f"/sessions/{sid}/verify")
    assert (r.body["ok"], r.body["status"], r.body["sealed"]) == (False, "incomplete", False)
    assert r.body["incomplete"] == [f"not sealed: {name}: file {second.path} is missing"]
    assert r.body["altered"] == [] and r.body["problems"] == r.body["incomplete"]
    capsys.readouterr()
    assert await cli("verify", walk.session_id) == 3
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out and f"{name}: file {second.path} is missing" in out

    # Still missing: the next sweep refuses again without repeating the timeline or the alert.
    result = await sweep(harness.deps)
    assert sid in result.refused
    assert len(await events_of(walk, "evidence_incomplete")) == 1
    assert await AuditEntry.filter(object_id=str(sid),
                                   action="session.evidence_alert").count() == 1

    # Restored on the shared storage: sealed on the next sweep and on to QA as usual.
    gone.write_bytes(kept)
    result = await sweep(harness.deps)
    assert sid in result.sealed and await harness.state(walk) == "qa_pending"
    # (The alerts did not stop the customer's page from following the session.)
    assert not _alert(await _receive(customer, lambda m: m["type"] == "event"
                                     and m["event"]["type"] != "evidence_incomplete"))
    await customer.close()
    session = await RecordingSession.get(id=sid)
    assert session.manifest is not None and session.manifest["complete"] is True
    items = {i["name"]: i["sha256"] for i in session.manifest["items"]}
    assert items[name] == second.sha256
    assert items[f"recording:customer_av:{first.segment}"] == first.sha256
    [sealed] = await events_of(walk, "sealed")
    assert (sealed.from_state, sealed.to_state) == ("evidence_incomplete", "sealed")
    assert await verify_manifest(harness.deps, sid) == []
    capsys.readouterr()
    assert await cli("verify", walk.session_id) == 0
    assert "INTACT" in capsys.readouterr().out


@pytest.mark.timeout(180)
async def test_short_or_changed_files_are_refused_each_named_R31(harness: Harness) -> None:
    walk = await harness.walk_to("in_call")
    [segment] = await record(harness, walk, segments=1)
    await harness.walk_to("completed", walk=walk)
    sid = UUID(walk.session_id)
    signature = await Signature.get(session_id=sid)
    image = stored(harness, signature.image_path)
    original_image = image.read_bytes()
    image.write_bytes(original_image[: len(original_image) // 2])  # truncated signature
    clip = stored(harness, segment.path)
    clip.write_bytes(SEGMENT[:100])  # a short segment
    assert sid in (await sweep(harness.deps)).refused
    [first] = await events_of(walk, "evidence_incomplete")
    # The cheap checks come first: while a file is short nothing is hashed.
    assert [(p["item"], p["problem"]) for p in first.data["problems"]] == [
        (f"recording:customer_av:{segment.segment}", "size_differs")]
    assert first.data["problems"][0]["detail"] == (
        f"file {segment.path} is 100 bytes, {segment.size_bytes} were registered when it was "
        f"written")

    # The segment back, the signature still truncated: a new problem, reported and alerted.
    clip.write_bytes(SEGMENT + bytes([segment.segment % 256]))
    assert sid in (await sweep(harness.deps)).refused
    second = (await events_of(walk, "evidence_incomplete"))[-1]
    assert second.seq > first.seq and second.to_state == "evidence_incomplete"
    assert second.data["problems"] == [{
        "item": f"signature:{signature.image_path}", "path": signature.image_path,
        "problem": "hash_differs",
        "detail": f"file {signature.image_path} differs from the image stored at signing "
                  f"(SHA-256)"}]
    assert await AuditEntry.filter(object_id=str(sid),
                                   action="session.evidence_alert").count() == 2
    session = await RecordingSession.get(id=sid)
    assert session.state == "evidence_incomplete" and session.manifest is None

    # A segment of the right size whose bytes are not what was registered is refused too.
    image.write_bytes(original_image)
    flipped = bytearray(clip.read_bytes())
    flipped[10] ^= 0x01
    clip.write_bytes(bytes(flipped))
    assert sid in (await sweep(harness.deps)).refused
    last = (await events_of(walk, "evidence_incomplete"))[-1]
    assert [p["problem"] for p in last.data["problems"]] == ["hash_differs"]
    assert (await RecordingSession.get(id=sid)).manifest is None


@pytest.mark.timeout(120)
async def test_verify_of_an_unsealed_session_says_not_sealed_R31(
    harness: Harness, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    walk = await harness.walk_to("in_call")
    r = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/verify")
    assert r.status == 200
    assert (r.body["ok"], r.body["status"], r.body["state"], r.body["sealed"]) == (
        False, "not_sealed", "in_call", False)
    assert r.body["problems"] == ["session is not sealed yet (state: in_call)"]
    assert r.body["altered"] == [] and "in_call (通话中)" in r.body["notes"][0]
    capsys.readouterr()
    assert await cli("verify", walk.session_id) == 4
    out = capsys.readouterr().out
    assert "NOT SEALED" in out and "in_call" in out and "ALTERED" not in out
    # Aborted before anything was recorded: there is nothing to seal, and it says so.
    early = await harness.walk_to("invited")
    r = await harness.as_("agent01", "POST", f"/sessions/{early.session_id}/abort",
                          json={"reason": "客户改期"})
    assert r.status == 200 and r.body["state"] == "aborted"
    result = await sweep(harness.deps)
    assert UUID(early.session_id) not in [*result.sealed_incomplete, *result.refused]
    verdict = await verify_session(harness.deps, UUID(early.session_id))
    assert verdict.status == VerifyStatus.NOT_SEALED
    assert "nothing was recorded" in verdict.notes[0]


@pytest.mark.timeout(240)
async def test_an_aborted_session_is_sealed_as_incomplete_and_verifies_so_offline_R31(
    harness: Harness, cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    walk = await harness.walk_to("in_call")
    [segment] = await record(harness, walk, segments=1)
    sid = UUID(walk.session_id)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/abort",
                          json={"reason": "客户临时有事"})
    assert r.status == 200 and r.body["state"] == "aborted"
    result = await sweep(harness.deps)
    assert sid in result.sealed_incomplete and sid not in result.sealed
    session = await RecordingSession.get(id=sid)
    assert session.state == "aborted" and session.manifest is not None  # terminal, kept
    manifest = session.manifest
    assert (manifest["version"], manifest["complete"], manifest["end"], manifest["reason"]) == (
        3, False, "aborted", "客户临时有事")
    assert "signature" in manifest["missing"] and "recording" not in manifest["missing"]
    assert all(m.startswith(("acknowledgement:", "signature")) for m in manifest["missing"])
    name = f"recording:customer_av:{segment.segment}"
    assert {"timeline", "acknowledgements", name} <= {i["name"] for i in manifest["items"]}
    [sealed] = await events_of(walk, "sealed")
    assert (sealed.from_state, sealed.to_state, sealed.data["complete"]) == (
        "aborted", "aborted", False)
    assert (await sweep(harness.deps)).sealed_incomplete == []  # sealed once

    r = await harness.as_("qa01", "GET", f"/sessions/{sid}/verify")
    assert (r.body["ok"], r.body["status"], r.body["complete"], r.body["altered"]) == (
        False, "incomplete", False, [])
    assert r.body["incomplete"][0] == ("the session ended aborted before it was complete "
                                       "(reason: 客户临时有事)")
    assert "signature was never recorded" in r.body["incomplete"]

    export = tmp_path / "aborted"
    assert await cli("export", walk.session_id, str(export)) == 0
    capsys.readouterr()
    assert await cli("verify-archive", str(export), "--keyring",
                     str(export / "keys" / "DEMO-BANK.json")) == 3
    out = capsys.readouterr().out
    assert "INTACT BUT INCOMPLETE" in out and "ALTERED" not in out
    assert "incomplete: the session ended aborted before it was complete" in out
    report = verify_archive(export)
    assert report.status == VerifyStatus.INCOMPLETE and report.problems == []

    # One byte flipped in the exported segment: altered, and named.
    flipped = tmp_path / "flipped"
    shutil.copytree(export, flipped)
    index = json.loads((flipped / "index.json").read_text())
    target = flipped / index["items"][name]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert await cli("verify-archive", str(flipped)) == 1
    out = capsys.readouterr().out
    assert "ALTERED" in out and f"  - {name} was altered" in out
    assert verify_archive(flipped).problems == [f"{name} was altered"]


@pytest.mark.timeout(180)
async def test_an_expired_call_is_sealed_incomplete_once_its_files_are_there_R30_R31(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("in_call")
    [segment] = await record(harness, walk, segments=1)
    sid = UUID(walk.session_id)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/interrupt",
                          json={"reason": "客户网络断开"})
    assert r.status == 200
    clip = stored(harness, segment.path)
    kept = clip.read_bytes()
    clip.unlink()
    real = harness.deps.clock
    harness.deps.clock = lambda: real() + timedelta(minutes=31)  # past the resume window
    result = await sweep(harness.deps)
    # Expired, then refused in the same sweep: the state stays expired, nothing is signed.
    assert sid in result.expired and sid in result.refused
    session = await RecordingSession.get(id=sid)
    assert session.state == "expired" and session.manifest is None
    [refusal] = await events_of(walk, "evidence_incomplete")
    assert (refusal.from_state, refusal.to_state) == ("expired", "expired")
    assert await AuditEntry.filter(object_id=str(sid),
                                   action="session.evidence_alert").exists()
    verdict = await verify_session(harness.deps, sid)
    assert verdict.status == VerifyStatus.INCOMPLETE and verdict.complete is None
    assert verdict.incomplete == [
        f"not sealed: recording:customer_av:{segment.segment}: file {segment.path} is missing"]

    clip.write_bytes(kept)
    result = await sweep(harness.deps)
    assert sid in result.sealed_incomplete
    session = await RecordingSession.get(id=sid)
    assert session.state == "expired" and session.manifest is not None
    assert (session.manifest["end"], session.manifest["reason"]) == (
        "expired", "resume window passed")
    verdict = await verify_session(harness.deps, sid)
    assert (verdict.status, verdict.altered) == (VerifyStatus.INCOMPLETE, [])


@pytest.mark.timeout(180)
async def test_a_manifest_that_signed_a_missing_file_is_not_called_intact_R31(
    harness: Harness,
) -> None:
    """What sealing wrote before it failed closed: "missing" as a file's hash, signed."""
    walk = await harness.walk_to("in_call")
    [segment] = await record(harness, walk, segments=1)
    await harness.walk_to("qa_pending", walk=walk)
    sid = UUID(walk.session_id)
    session = await RecordingSession.get(id=sid)
    assert session.manifest is not None
    name = f"recording:customer_av:{segment.segment}"
    items = [{**i, "sha256": "missing"} if i["name"] == name else i
             for i in session.manifest["items"]]
    body = {k: session.manifest[k] for k in BODY_FIELDS_V2} | {
        "version": 2, "items": items, "chain": chain(items)}
    async with in_transaction() as conn:
        signer = await DatabaseKeyring(harness.deps.cipher).signer_for(
            conn, session.institution_id, Actor.system("test"))
    await RecordingSession.filter(id=sid).update(manifest=sign(body, signer.sign))
    stored(harness, segment.path).unlink()
    verdict = await verify_session(harness.deps, sid)
    assert verdict.status == VerifyStatus.INCOMPLETE and verdict.altered == []
    assert verdict.incomplete == [
        f"{name} was sealed without its file (already missing when sealed)"]
    # The evidence that was sealed with a real hash still counts: changing it is alteration.
    await SessionEvent.filter(session_id=sid, seq=2).update(ip="10.9.9.9")
    verdict = await verify_session(harness.deps, sid)
    assert verdict.status == VerifyStatus.ALTERED
    assert verdict.altered == ["timeline was altered"]
