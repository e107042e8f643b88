"""The cluster (issue 13): HAProxy in front of two app nodes, a separate worker, one Redis, one
PostgreSQL database and the evidence on an S3 endpoint, all real processes on loopback
(deploy/local_cluster.py, the same as `bin/cluster`). A real-WebRTC session (the rehearsal's
synthetic customer and agent, through HAProxy only) is running when the node holding its call
is killed with SIGKILL; the other node notices, the session is interrupted, the agent resumes,
both parties rejoin through HAProxy on the surviving node, and the session completes, is
sealed by the worker from the evidence on S3 and verifies intact (R-30, R-31).

Needs PostgreSQL (DATABASE_URL), like the other PostgreSQL runs of the suite.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from deploy.local_cluster import LocalCluster, database_for
from infra.cluster import OWNER_KEY
from infra.config import Settings, load_config
from rehearsal.agent import AgentOptions
from rehearsal.customer import CustomerOptions
from rehearsal.progress import Progress
from rehearsal.run import RehearsalOptions, rehearse
from testing import identity_material as synth
from tests.harness import PASSWORDS, Harness
from tests.rehearsal.test_rehearsal import _publish_short_script, _session_with_invitation

PG_URL = os.environ.get("DATABASE_URL", "")
pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not PG_URL.startswith("postgres"),
                       reason="the cluster runs on PostgreSQL: set DATABASE_URL (bin/test does "
                              "in CI)"),
]
# The nodes' keep-alive: a dead node's session must be interrupted within this plus 5 s.
KEEPALIVE_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    name = f"shuanglu_cluster_{uuid.uuid4().hex[:8]}"
    with LocalCluster(tmp_path_factory.mktemp("cluster"), database_for(PG_URL, name),
                      nodes=2) as running:
        yield running


@pytest_asyncio.fixture
async def api(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[Harness]:
    """The API through HAProxy, as any client would use it."""
    client = aiohttp.ClientSession(base_url=cluster.url)
    try:
        yield Harness(load_config(Settings(profile="test", data_dir=tmp_path)),
                      client)  # type: ignore[arg-type]
    finally:
        await client.close()


async def _wait(what: str, check: Any, seconds: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


async def test_a_node_killed_mid_call_the_session_resumes_and_seals_on_the_other_R30_R31(
    cluster: LocalCluster, api: Harness, tmp_path: Path,
) -> None:
    card = synth.random_identity(random.Random("cluster"), today=date.today(), min_age=30,
                                 max_age=59)
    await _publish_short_script(api)
    sid, link = await _session_with_invitation(api, card)
    redis = Redis.from_url(cluster.env()["REDIS_URL"])
    out = io.StringIO()
    play = asyncio.create_task(rehearse(RehearsalOptions(
        base_url=cluster.url, session_id=sid,
        customer=CustomerOptions(link=link, name=card.name, id_number=card.id_number,
                                 answers="voice", cache_dir=tmp_path / "clips"),
        agent=AgentOptions("agent01", PASSWORDS["agent01"], cache_dir=tmp_path / "clips"),
        timeout_s=900), Progress(out=out)))
    try:
        async def third_step() -> dict[str, Any] | None:
            if play.done():
                raise AssertionError(f"the rehearsal ended early: {play.exception()!r}\n"
                                     + out.getvalue())
            r = await api.as_("qa01", "GET", f"/sessions/{sid}")
            body: dict[str, Any] = r.body
            return body if body["state"] == "disclosing" and body["steps_done"] >= 3 else None

        await _wait("the script's third step", third_step, 600, every=0.5)
        raw_owner = await redis.get(OWNER_KEY + sid)
        assert isinstance(raw_owner, bytes), raw_owner
        owner = raw_owner.decode()
        assert owner.startswith("node-"), owner
        killed_at = time.monotonic()
        killed_wall = time.time()
        cluster.kill(owner)

        async def interrupted() -> bool:
            r = await api.as_("qa01", "GET", f"/sessions/{sid}/events")
            return r.status == 200 and any(e["type"] == "call_node_lost"
                                           for e in r.body["events"])

        await _wait("the interruption", interrupted, KEEPALIVE_S + 5)
        noticed_s = time.monotonic() - killed_at
        outcome = await play
    finally:
        if not play.done():
            play.cancel()
        await redis.aclose()
    print(out.getvalue())
    assert outcome.completed, out.getvalue()
    survivor = await Redis.from_url(cluster.env()["REDIS_URL"]).get(OWNER_KEY + sid)
    assert survivor is None  # the room closed at completion, on the surviving node

    async def sealed() -> dict[str, Any] | None:
        r = await api.as_("qa01", "GET", f"/sessions/{sid}")
        return r.body if r.body["state"] in ("qa_pending", "qa_passed", "qa_rejected") else None

    await _wait("the worker's seal", sealed, 180, every=1.0)
    verdict = await api.as_("qa01", "GET", f"/sessions/{sid}/verify")
    assert verdict.status == 200 and verdict.body["status"] == "intact", verdict.body

    events = (await api.as_("qa01", "GET", f"/sessions/{sid}/events")).body["events"]
    lost = next(e for e in events if e["type"] == "call_node_lost")
    assert owner in lost["data"]["reason"]
    resumed = next(e for e in events if e["type"] == "call_resumed")
    assert resumed["data"]["gap_ms"] > 0
    recordings = (await api.as_("qa01", "GET", f"/sessions/{sid}/recordings")).body["items"]
    customer = sorted((r for r in recordings if r["kind"] == "customer_av"),
                      key=lambda r: r["started_at"])
    # Recorded until (at most a second or two before) the kill, then again after the rejoin.
    ends = [datetime.fromisoformat(r["ended_at"]).timestamp() for r in customer]
    before = [e for e in ends if e <= killed_wall + 1]
    lost_s = killed_wall - max(before)
    print(f"kill noticed after {noticed_s:.1f} s; recording lost before the kill {lost_s:.1f} s")
    assert noticed_s <= KEEPALIVE_S + 5
    assert lost_s <= 2.5
    assert any(datetime.fromisoformat(r["started_at"]).timestamp() > killed_wall
               for r in customer)
