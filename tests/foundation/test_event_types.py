"""Typed evidence (issue 18): every timeline event type has a payload model, and `Unit.event`
refuses data that does not fit it before anything is written, so an unchecked event is never
sealed; what is stored is the writer's data, unchanged (R-23, R-30)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from models.sessions import RecordingSession, SessionEvent
from security.audit import Actor
from tests.harness import Harness
from workflow import event_types
from workflow.core import locked
from workflow.event_types import PAYLOADS, EventType, InvalidEvent

pytestmark = pytest.mark.timeout(60)
TEST = Actor.system("test")
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("workflow", "qa", "app", "api", "bot", "media", "aftercall", "archive", "reporting",
            "rehearsal")


def test_every_event_type_has_a_payload_model() -> None:
    assert set(PAYLOADS) == set(EventType)


def test_every_event_type_is_written_somewhere() -> None:
    """No dead names: each member is used by product code (its writer), not only declared."""
    source = "\n".join(
        path.read_text(encoding="utf-8") for package in PACKAGES
        for path in (ROOT / package).rglob("*.py") if path.name != "event_types.py")
    used = set(re.findall(r"EventType\.([A-Z_]+)", source))
    assert {e.name for e in EventType} - used == set()


@pytest.mark.parametrize(("type_", "data", "problem"), [
    (EventType.TTS_STARTED, {"step_id": "s1", "clip_id": "s1@4", "extra": 1}, "extra"),
    (EventType.TTS_STARTED, {"step_id": "s1", "clipid": "s1@4"}, "clip_id"),
    (EventType.TTS_STARTED, {"step_id": "s1"}, "clip_id"),
    (EventType.STEP_STARTED, {"step_id": "s1", "index": "2"}, "index"),  # no coercion
    (EventType.PARTY_CONNECTED, {"role": "customer", "recording": 1}, "recording"),
    (EventType.COMPLETED, {"note": "x"}, "note"),
    (EventType.ANSWER_OPENED, {"step_id": "s1", "index": 0, "by": "guess"}, "by"),
])
def test_data_that_does_not_fit_is_refused(type_: EventType, data: dict[str, Any],
                                           problem: str) -> None:
    with pytest.raises(InvalidEvent, match=problem):
        event_types.check(type_, data)


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="unknown event type"):
        event_types.check("made_up", {})  # type: ignore[arg-type]


def test_optional_fields_may_be_left_out() -> None:
    event_types.check(EventType.SEALED, {})
    event_types.check(EventType.SEALED, {"complete": False, "end": "aborted", "reason": "x"})
    event_types.check(EventType.CUSTOMER_REENTERED, {"via": "wechat", "state": "opened"})
    event_types.check(EventType.ACKNOWLEDGED, {"step_id": "s1", "index": 0, "answer": "affirmative",
                                               "answer_kind": "button", "offset_ms": 12})


async def test_a_refused_event_is_never_written(harness: Harness) -> None:
    walk = await harness.walk_to("created")
    sid = UUID(walk.session_id)
    before = await RecordingSession.get(id=sid)
    with pytest.raises(InvalidEvent):
        async with locked(harness.deps, sid, None) as unit:
            await unit.event(TEST, EventType.SEGMENT_UNREADABLE, {"path": "a", "size": 3})
    after = await RecordingSession.get(id=sid)
    assert after.event_seq == before.event_seq
    assert not await SessionEvent.filter(session_id=sid, type="segment_unreadable").exists()


async def test_the_stored_data_is_the_writer_s_own(harness: Harness) -> None:
    """The model checks, it does not rewrite: left-out optional fields stay left out (the
    sealed timeline hashes exactly what was written)."""
    walk = await harness.walk_to("created")
    sid = UUID(walk.session_id)
    data = {"type": "face_lost", "at_s": 3, "message": "离开画面", "faces": 0}
    async with locked(harness.deps, sid, None) as unit:
        written = await unit.event(TEST, EventType.PRESENCE_MARK, data)
    stored = await SessionEvent.get(session_id=sid, seq=written.seq)
    assert stored.type == "presence_mark"
    assert stored.data == data and "distance" not in stored.data
