"""One workflow transaction on a session (workflow.core.locked, issue 14): the session's steps,
its largest column, are written only when they were replaced, and the transaction's events are
published together, in their order, after the commit."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import pytest

from models.sessions import RecordingSession
from security.audit import Actor
from tests.harness import Harness
from workflow.core import locked
from workflow.event_types import EventType
from workflow.events import channel_for

pytestmark = pytest.mark.timeout(60)
TEST = Actor.system("test")


async def test_steps_are_written_only_when_replaced(harness: Harness) -> None:
    walk = await harness.walk_to("created")
    sid = UUID(walk.session_id)
    async with locked(harness.deps, sid, None) as unit:
        original = unit.session.steps
        # Written behind the unit's back in its own transaction: a save that wrote the steps
        # it read would undo this.
        marked = [dict(original[0], marker="kept"), *original[1:]]
        await RecordingSession.filter(id=sid).using_db(unit.conn).update(steps=marked)
        unit.session.speaking_step = "s-x"
    stored = await RecordingSession.get(id=sid)
    assert stored.steps[0]["marker"] == "kept"  # the steps were not written again
    assert stored.speaking_step == "s-x"  # the rest of the row was

    async with locked(harness.deps, sid, None) as unit:
        unit.session.steps = [dict(step, audio=None) for step in original]
    stored = await RecordingSession.get(id=sid)
    assert "marker" not in stored.steps[0] and stored.steps[0]["audio"] is None
    assert [s["id"] for s in stored.steps] == [s["id"] for s in original]


async def test_a_transaction_s_events_are_published_together_in_order(
        harness: Harness) -> None:
    walk = await harness.walk_to("created")
    sid = UUID(walk.session_id)
    pubsub = harness.redis.pubsub()
    await pubsub.subscribe(channel_for(sid))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    try:
        async with locked(harness.deps, sid, None) as unit:
            for n in range(3):
                await unit.event(TEST, EventType.PRESENCE_MARK, {
                    "type": "face_lost", "at_s": float(n), "message": "", "faces": n})
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(received) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    received.append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()
    assert [m["data"]["faces"] for m in received] == [0, 1, 2]
    seqs = [m["seq"] for m in received]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
