"""The call hub's recordings on S3 (issue 13 item 2, R-30, R-31): real aiortc parties call
through an app whose evidence store is S3 (moto's server on loopback); every segment the
recorder writes into the node's spool is stored in S3 and registered under its object key, the
session seals and verifies from S3, and the spool is left empty. The speech the session needs is
rendered once and published to the store, and a cache on another node fetches it instead of
rendering it. A dead node's spool (a killed recorder's .part file, a closed segment it never
stored) is salvaged into S3 by the node that recovers it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from app.factory import speech_settings
from media.call.client import CallClient
from media.recording.packets import EncodedPacket
from media.recording.segments import SegmentWriter
from media.recording.spool import Spool
from media.tts.cache import SpeechCache
from models.sessions import Recording, RecordingSession
from security.seal_manifest import VerifyStatus
from storage import ObjectStore, open_store
from testing.call_media import EncodedMedia, PrerecordedTrack, write_test_media
from tests.harness import HERE, Harness
from tests.s3server import bucket_url
from workflow.expiry import sweep
from workflow.sealing import verify_session
from workflow.speech import prepare_session_speech

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> EncodedMedia:
    path = write_test_media(tmp_path_factory.mktemp("m") / "party.webm", seconds=4,
                            size=(320, 240), keyframe_interval=15, video_bitrate=300_000)
    return EncodedMedia.load(path)


async def _join(h: Harness, media: EncodedMedia, path: str, token: str) -> CallClient:
    client = CallClient(audio=PrerecordedTrack(media, "audio"),
                        video=PrerecordedTrack(media, "video"))

    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await h.request("POST", path, token=token, json={"sdp": sdp, "type": type_})
        assert r.status == 200, r.body
        return r.body["sdp"], r.body["type"]

    await client.connect(signal)
    await client.wait_open()
    return client


@pytest.fixture
def settings_overrides(s3_endpoint: str) -> dict[str, Any]:
    return {"storage_url": bucket_url(s3_endpoint), "call_segment_seconds": 1.0,
            "node_id": "node-s3"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.one_database
async def test_a_call_recorded_by_the_hub_lands_in_s3_and_verifies_R31(
        harness: Harness, media: EncodedMedia, tmp_path: Path) -> None:
    h = harness
    store = h.deps.storage
    walk = await h.walk_to("identity_verified")
    sid = walk.session_id
    # The session's speech: rendered here, published to the store.
    assert await prepare_session_speech(h.deps, speech_settings(h.config, store), h.redis,
                                        UUID(sid))
    session = await RecordingSession.get(id=sid)
    audio = next(s["audio"] for s in session.steps if s.get("audio"))
    cached = await store.keys(f"tts-cache/{audio['cache_key'][:2]}/{audio['cache_key']}/")
    assert [k.rsplit("/", 1)[1] for k in cached] == ["audio.opus", "audio.wav", "meta.json"]
    # Another node's empty cache fetches it (rendered once anywhere, played anywhere).
    elsewhere = await SpeechCache(tmp_path / "other-node", store).fetch(audio["cache_key"])
    assert elsewhere is not None and elsewhere.wav_sha256 == audio["sha256"]
    assert elsewhere.wav_path.is_file()

    r = await h.as_("agent01", "POST", f"/sessions/{sid}/call/start", json={"location": HERE})
    assert r.status == 200, r.body
    customer = await _join(h, media, f"/calls/{sid}/customer/offer", walk.customer_token)
    agent = await _join(h, media, f"/calls/{sid}/agent/offer", await h.login("agent01"))
    try:
        await asyncio.sleep(3.5)  # a few 1 s segments of each party, as they arrive
        r = await h.as_("agent01", "POST", f"/sessions/{sid}/abort", json={"reason": "测试结束"})
        assert r.status == 200 and r.body["state"] == "aborted", r.body
    finally:
        await customer.close()
        await agent.close()
    rows = await Recording.filter(session_id=sid).order_by("kind", "segment")
    assert {r.kind for r in rows} >= {"customer_av", "agent_av"}
    assert len(rows) >= 4
    for row in rows:
        assert row.path == f"{sid}/{row.kind}/{row.segment:05d}.webm"
        info = await store.stat(row.path)
        assert info is not None and info.size_bytes == row.size_bytes
        assert await store.sha256(row.path) == row.sha256
    spool = h.config.spool_dir / "node-s3"
    assert not [p for p in spool.rglob("*") if p.is_file()]  # everything stored, nothing left
    assert not h.config.files_dir.exists() or not any(h.config.files_dir.rglob("*.webm"))

    # The aborted session is sealed (as incomplete) from what S3 holds, and verifies.
    result = await sweep(h.deps)
    assert UUID(sid) in result.sealed_incomplete
    verdict = await verify_session(h.deps, UUID(sid))
    assert verdict.status == VerifyStatus.INCOMPLETE and not verdict.altered, verdict.problems


async def _write_part(writer: SegmentWriter, media: EncodedMedia) -> None:
    writer.expect(audio=True, video=True)
    packets = sorted([(t, "video", data, i % 15 == 0) for i, (t, data) in enumerate(media.video)]
                     + [(t, "audio", data, True) for t, data in media.audio])
    for t, kind, data, key in packets:
        rate = 90_000 if kind == "video" else 48_000
        writer.write(EncodedPacket(kind, data, timestamp=round(t * rate),  # type: ignore[arg-type]
                                   clock_rate=rate, keyframe=key,
                                   received_at=1_765_000_000 + t, epoch=1))


async def test_a_dead_nodes_spool_is_salvaged_into_s3_R30(
        s3_endpoint: str, media: EncodedMedia, tmp_path: Path) -> None:
    """Node A died: in its spool (a shared disk) a segment it closed but never stored and the
    .part file it was writing. Node B salvages both into S3; numbers already taken in the store
    (segment 1, stored by A before) are not reused."""
    store: ObjectStore = open_store(bucket_url(s3_endpoint), tmp_path)
    base = tmp_path / "spool"
    sid = "5d0c1a3e-0000-4000-8000-000000000001"
    dead = Spool(base, "node-a", store)
    stored_before = await store.put_bytes(f"{sid}/customer_av/00001.webm", b"stored by A")
    closed = SegmentWriter(dead.root, sid, "customer_av", segment_seconds=60)
    await _write_part(closed, media)
    await closed.finish()  # a closed 00001.webm in A's spool, never stored
    writer = SegmentWriter(dead.root, sid, "customer_av", segment_seconds=60)
    await _write_part(writer, media)
    part = dead.root / sid / "customer_av" / "00002.webm.part"
    shutil.copyfile(part, tmp_path / "bytes-at-death")  # no trailer: the process was killed
    writer._abandon_open_segment()
    shutil.copyfile(tmp_path / "bytes-at-death", part)

    node_b = Spool(base, "node-b", store)
    result = await node_b.salvage(sid, "node-a")
    assert result.unreadable == []
    assert [(e.kind, e.segment) for e in result.salvaged] == [("customer_av", 2),
                                                              ("customer_av", 3)]
    for event in result.salvaged:
        assert event.path == f"{sid}/customer_av/{event.segment:05d}.webm"
        assert await store.sha256(event.path) == event.sha256
        assert event.duration_ms >= 2500 and event.ended_at > event.started_at
    assert await store.get_bytes(f"{sid}/customer_av/00001.webm") == b"stored by A"
    assert stored_before.sha256 == hashlib.sha256(b"stored by A").hexdigest()
    assert not [p for p in (dead.root / sid).rglob("*") if p.is_file()]
    await store.close()
