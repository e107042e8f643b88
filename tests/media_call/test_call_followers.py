"""The call's followers (workflow.call_followers, issue 14 and 18): they act only for the sessions
whose call room is on this node, and read such a session once per event that moves its script,
for all of them, instead of once per follower and per event of every session; the step follower
survives a dropped Redis subscription. No database (the session reads are counted); the last
test runs on the tests' real Redis."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis

from models import lean
from workflow.call_followers import StepFollower
from workflow.events import channel_for

pytestmark = pytest.mark.timeout(15)


class FakeHub:
    def __init__(self, rooms: set[str]) -> None:
        self.rooms = rooms
        self.closed: list[str] = []

    def has_room(self, session_id: str) -> bool:
        return session_id in self.rooms

    def room_ids(self) -> list[str]:
        return sorted(self.rooms)

    async def close(self, session_id: str) -> None:
        self.closed.append(session_id)
        self.rooms.discard(session_id)


class Listener:
    def __init__(self) -> None:
        self.told: list[tuple[UUID, Any]] = []

    async def follow(self, session_id: UUID, session: Any) -> None:
        self.told.append((session_id, session))


def _message(session_id: UUID, seq: int, type_: str, to_state: str = "") -> dict[str, Any]:
    return {"type": "pmessage", "channel": f"session-events:{session_id}".encode(),
            "data": json.dumps({"seq": seq, "type": type_, "to_state": to_state}).encode()}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """The session reads of the followers; each reading is the session at event_seq 10."""
    done: list[UUID] = []

    async def by_pk(_model: Any, pk: UUID, *_: Any, **__: Any) -> Any:
        done.append(pk)
        # Not disclosing: nothing to play (the play itself is the call tests' subject).
        return SimpleNamespace(id=pk, event_seq=10, state=SimpleNamespace(value="created"),
                               paused=False)

    monkeypatch.setattr(lean, "by_pk", by_pk)
    return done


def _follower(rooms: set[str]) -> tuple[StepFollower, FakeHub, Listener, Listener]:
    hub = FakeHub(rooms)
    voice, spoken = Listener(), Listener()
    presence = SimpleNamespace(held=set())
    follower = StepFollower(hub, None, None, presence, (voice, spoken))  # type: ignore[arg-type]
    return follower, hub, voice, spoken


async def test_events_of_sessions_without_a_room_here_are_not_followed(
        reads: list[UUID]) -> None:
    elsewhere = uuid4()
    follower, hub, voice, spoken = _follower(set())
    for seq, type_ in enumerate(["step_started", "answer_opened", "script_paused"], start=1):
        await follower.on_message(_message(elsewhere, seq, type_))
    await follower.on_message(_message(elsewhere, 4, "expired", to_state="expired"))
    assert reads == [] and voice.told == [] and spoken.told == [] and hub.closed == []


async def test_one_read_per_event_that_moves_the_script_for_all_followers(
        reads: list[UUID]) -> None:
    here = uuid4()
    follower, _, voice, spoken = _follower({str(here)})
    await follower.on_message(_message(here, 8, "step_started"))
    assert reads == [here]  # one read for the play and both listeners
    assert [s for _, s in voice.told] == [s for _, s in spoken.told]
    assert len(voice.told) == 1 and voice.told[0][1].event_seq == 10
    # Events that move nothing the followers use are not followed and read nothing.
    for seq, type_ in ((9, "tts_started"), (10, "presence_mark"), (11, "party_connected")):
        await follower.on_message(_message(here, seq, type_))
    assert reads == [here] and len(voice.told) == 1
    # An event already reflected in the reading (seq ≤ its event_seq) needs no new read; a
    # later one does.
    await follower.on_message(_message(here, 10, "answer_opened"))
    assert reads == [here] and len(voice.told) == 2
    await follower.on_message(_message(here, 12, "answer_opened"))
    assert reads == [here, here] and len(spoken.told) == 3


async def test_a_room_closed_by_an_expiry_elsewhere_is_closed_and_forgotten(
        reads: list[UUID]) -> None:
    here = uuid4()
    follower, hub, _, _ = _follower({str(here)})
    await follower.on_message(_message(here, 3, "step_started"))
    await follower.on_message(_message(here, 4, "expired", to_state="expired"))
    assert hub.closed == [str(here)] and reads == [here]
    await follower.room_closed(here)
    # A room opened again for the session starts from a fresh reading.
    hub.rooms.add(str(here))
    await follower.on_message(_message(here, 5, "step_started"))
    assert reads == [here, here]


async def test_the_step_follower_survives_a_dropped_subscription_and_catches_up(
        redis_url: str, reads: list[UUID], monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis drops the follower's pub/sub connection (CLIENT KILL): it subscribes again,
    catches up from the timeline once, and follows the events published after (R-23)."""
    here = uuid4()
    follower, _, voice, _ = _follower({str(here)})
    caught_up = asyncio.Event()

    async def catch_up() -> None:
        caught_up.set()

    monkeypatch.setattr(follower, "catch_up", catch_up)
    redis = Redis.from_url(redis_url)
    task = asyncio.create_task(follower.run(redis))
    # A party connected: the session's channel is subscribed (and confirmed) before the read.
    await asyncio.wait_for(follower.channels.add(channel_for(here)), 5)

    async def publish_until_followed(seq: int) -> None:
        # Publishing before the subscription is made reaches no one: publish until followed.
        told = len(voice.told)
        while len(voice.told) == told:
            await redis.publish(channel_for(here), json.dumps({"seq": seq, "type": "step_started"}))
            await asyncio.sleep(0.05)

    try:
        async with asyncio.timeout(10):
            await publish_until_followed(20)
            assert int(await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
            await caught_up.wait()
            await publish_until_followed(30)
            # The room closed: its channel is let go, and nothing is held subscribed.
            await follower.room_closed(here)
            for _ in range(100):  # Redis counts the unsubscription once it has read it
                subscribers = dict(await redis.pubsub_numsub(channel_for(here)))
                if subscribers[channel_for(here).encode()] == 0:
                    break
                await asyncio.sleep(0.05)
            assert subscribers[channel_for(here).encode()] == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await redis.aclose()
    assert [s.event_seq for _, s in voice.told][-1] == 10 and reads[-1] == here
