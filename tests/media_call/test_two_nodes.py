"""Two app nodes on one database and one Redis (infra/cluster.py, issue 13): the customer's offer
reaching one node and the agent's the other still meet in one room; closing the call through
the node without the room closes it on its owner with every segment registered; and the room
of a node that died is recovered — the session interrupted, the dead node's unfinished segment
salvaged and registered, the owner record dropped (R-30). Real aiortc parties over the API."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, cast
from uuid import UUID

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from api.keys import CALL_HUB, DATABASE, ROOMS
from app.factory import create_app, speech_settings
from infra.cluster import OWNER_KEY
from infra.config import Settings, load_config
from infra.database import activate
from media.call.client import CallClient
from media.recording.packets import EncodedPacket
from media.recording.segments import SegmentWriter
from models.sessions import Recording, RecordingSession, SessionEvent
from testing.call_media import EncodedMedia, PrerecordedTrack, write_test_media
from tests.h5.test_call_e2e import _publish_short_script
from tests.harness import HERE, Harness, Walk
from tests.media_call.conftest import speaking_media
from workflow.speech import prepare_session_speech

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _node(name: str, database_url: str, redis_url: str, data_dir: Path) -> Harness:
    port = _free_port()
    settings = Settings(
        profile="test", data_dir=data_dir, database_url=database_url, redis_url=redis_url,
        run_worker_in_process=False, run_jobs_in_process=False, tts_engines="espeak",
        node_id=name, node_url=f"http://127.0.0.1:{port}", call_segment_seconds=5.0,
    )
    app = create_app(load_config(settings))
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    return Harness(load_config(settings), client)


@pytest_asyncio.fixture
async def nodes(database_url: str, redis_url: str,
                tmp_path: Path) -> AsyncIterator[tuple[Harness, Harness]]:
    """Node A and node B: one data folder (the shared evidence storage), one database, one
    Redis; the test's own database context is node A's."""
    a = await _node("node-a", database_url, redis_url, tmp_path / "data")
    b = await _node("node-b", database_url, redis_url, tmp_path / "data")
    activate(a.app[DATABASE])
    await a.redis.flushdb()
    await a.app[ROOMS].cluster.heartbeat()
    await b.app[ROOMS].cluster.heartbeat()
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> EncodedMedia:
    path = write_test_media(tmp_path_factory.mktemp("m") / "party.webm", seconds=4,
                            size=(320, 240), keyframe_interval=15, video_bitrate=300_000)
    return EncodedMedia.load(path)


async def _join(node: Harness, media: EncodedMedia, path: str, token: str) -> CallClient:
    client = CallClient(audio=PrerecordedTrack(media, "audio"),
                        video=PrerecordedTrack(media, "video"))

    async def signal(sdp: str, type_: str) -> tuple[str, str]:
        r = await node.request("POST", path, token=token, json={"sdp": sdp, "type": type_})
        assert r.status == 200, r.body
        return r.body["sdp"], r.body["type"]

    await client.connect(signal)
    await client.wait_open()
    return client


async def _call(a: Harness, agent_node: Harness, media: EncodedMedia, tmp_path: Path,
                ) -> tuple[Walk, CallClient, CallClient]:
    """A session in its call: the customer joined on node A, the agent on `agent_node`."""
    await _publish_short_script(a)
    walk = await a.walk_to("identity_verified")
    sid = walk.session_id
    await prepare_session_speech(a.deps, speech_settings(a.config), a.redis, UUID(sid))
    await a.as_("agent01", "POST", f"/sessions/{sid}/call/start", json={"location": HERE})
    agent_media = EncodedMedia.load(speaking_media(tmp_path))
    customer = await _join(a, media, f"/calls/{sid}/customer/offer", walk.customer_token)
    agent = await _join(agent_node, agent_media, f"/calls/{sid}/agent/offer",
                        await agent_node.login("agent01"))
    # The script may start only once the server records both parties: the console and
    # the rehearsal agent wait for it too; on a busy machine it comes after the data channel.
    for _ in range(300):
        parties = (await RecordingSession.get(id=sid)).call_parties or {}
        if all((parties.get(role) or {}).get("recording") for role in ("customer", "agent")):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"both parties not recorded within 30 s: {parties}")
    return walk, customer, agent


async def test_parties_entering_through_different_nodes_meet_in_one_room(
    nodes: tuple[Harness, Harness], media: EncodedMedia, tmp_path: Path,
) -> None:
    a, b = nodes
    walk, customer, agent = await _call(a, b, media, tmp_path)
    sid = walk.session_id
    try:
        # One room, on node A (the first to open it); node B forwarded the agent there.
        assert a.app[CALL_HUB].connected_roles(sid) == {"customer", "agent"}
        assert not b.app[CALL_HUB].has_room(sid)
        assert await a.redis.get(OWNER_KEY + sid) == b"node-a"
        r = await b.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 200, r.body
        # The first step's speech is played once, by the owner, and heard in full.
        for _ in range(300):
            if await SessionEvent.filter(session_id=sid, type="answer_opened").exists():
                break
            await asyncio.sleep(0.1)
        played = await SessionEvent.filter(session_id=sid, type="tts_started")
        assert len(played) == 1
        assert (await a.ack(walk, "opening")).status == 201
        # Aborting through node B closes the room on node A first: every segment is kept.
        r = await b.as_("agent01", "POST", f"/sessions/{sid}/abort",
                        json={"reason": "测试结束"})
        assert r.status == 200 and r.body["state"] == "aborted", r.body
        assert not a.app[CALL_HUB].has_room(sid)
        assert await a.redis.get(OWNER_KEY + sid) is None
    finally:
        await customer.close()
        await agent.close()
    kinds = set(await Recording.filter(session_id=sid).values_list("kind", flat=True))
    assert kinds == {"customer_av", "agent_av", "tts"}
    assert not list((tmp_path / "data" / "files" / sid).rglob("*.part"))


async def test_the_room_of_a_dead_node_is_recovered_R30(
    nodes: tuple[Harness, Harness], media: EncodedMedia, tmp_path: Path,
) -> None:
    """A node that stops announcing itself (killed) held a room: another node interrupts the
    session, salvages the segment it was still writing and drops its owner record."""
    a, _ = nodes
    walk = await a.walk_to("disclosing")
    sid = walk.session_id
    storage = tmp_path / "data" / "files"
    # What a killed node leaves: its owner record, and an open segment as a .part file in its
    # recording spool (one data folder: the spool is on the disk every node shares).
    spool = tmp_path / "data" / "spool" / "node-dead"
    writer = SegmentWriter(spool, sid, "customer_av", segment_seconds=60)
    writer.expect(audio=True, video=True)
    packets = sorted([(t, "video", data, i % 15 == 0) for i, (t, data) in enumerate(media.video)]
                     + [(t, "audio", data, True) for t, data in media.audio])
    for t, kind, data, key in packets:  # 4 s of both, as they arrive
        rate = 90_000 if kind == "video" else 48_000
        media_kind = cast(Literal["audio", "video"], kind)
        writer.write(EncodedPacket(media_kind, data, timestamp=round(t * rate), clock_rate=rate,
                                   keyframe=key, received_at=1_765_000_000 + t, epoch=1))
    part = next((spool / sid / "customer_av").glob("*.part"))
    killed = part.with_name("00009.webm.part")
    shutil.copyfile(part, killed)  # the bytes on disk when the process died (no trailer)
    writer._abandon_open_segment()
    part.unlink(missing_ok=True)
    await a.redis.set(OWNER_KEY + sid, "node-dead")

    for _ in range(200):  # each node checks every ttl/2 = 3 s
        if await a.redis.get(OWNER_KEY + sid) is None:
            break
        await asyncio.sleep(0.1)
    assert await a.redis.get(OWNER_KEY + sid) is None
    session = await RecordingSession.get(id=sid)
    assert session.state.value == "interrupted" and session.call_parties == {}
    lost = await SessionEvent.get(session_id=sid, type="call_node_lost")
    assert "node-dead" in lost.data["reason"]
    salvaged = await Recording.get(session_id=sid, kind="customer_av", segment=9)
    assert salvaged.duration_ms >= 2500  # all but the last cluster (at most a second)
    assert salvaged.path == f"{sid}/customer_av/00009.webm"  # stored, under its object key
    assert (storage / salvaged.path).is_file()
    assert not [p for p in (spool / sid).rglob("*") if p.is_file()]


async def test_a_redis_blip_neither_stops_the_script_s_speech_nor_the_node_commands(
    nodes: tuple[Harness, Harness], media: EncodedMedia, tmp_path: Path,
) -> None:
    """Issue 18: every subscription of both nodes is cut (as a Redis restart or a network blip
    does); the step follower and the node commands subscribe again and catch up from the
    timeline: the script's first step is still played once (the follower used to die, and the
    call went silent), and an abort sent to the other node still closes the room."""
    a, b = nodes
    walk, customer, agent = await _call(a, a, media, tmp_path)
    sid = walk.session_id
    try:
        killed = await a.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(killed) >= 4  # both nodes' step followers and command listeners at least
        r = await b.as_("agent01", "POST", f"/sessions/{sid}/script/start")
        assert r.status == 200, r.body
        for _ in range(300):
            if await SessionEvent.filter(session_id=sid, type="answer_opened").exists():
                break
            await asyncio.sleep(0.1)
        assert len(await SessionEvent.filter(session_id=sid, type="tts_started")) == 1
        r = await b.as_("agent01", "POST", f"/sessions/{sid}/abort", json={"reason": "测试结束"})
        assert r.status == 200 and r.body["state"] == "aborted", r.body
        assert not a.app[CALL_HUB].has_room(sid)
    finally:
        await customer.close()
        await agent.close()
