"""Every transition of the session state machine through the API, its timeline events,
the live events on Redis, and 409s for illegal transitions (design: the state machine)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from models.sessions import SessionEvent
from tests.harness import HERE, PASSED, Harness, consent_body
from tests.qa.verdict_kit import queue_with_findings
from workflow.events import channel_for


async def test_every_transition_appends_an_event_in_order(harness: Harness) -> None:
    walk = await harness.walk_to("qa_pending")
    await queue_with_findings(harness, walk.session_id)  # a clean automated report
    r = await harness.as_("qa01", "POST", f"/qa/sessions/{walk.session_id}/verdict",
                          json={"verdict": "pass", "comments": "完整"})
    assert r.status == 201, r.body
    events = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/events")
    states = [e["to_state"] for e in events.body["events"] if e["to_state"]]
    assert states[:6] == ["created", "invited", "opened", "consented", "identity_verified",
                          "in_call"]
    assert "disclosing" in states and "signing" in states
    assert states[-4:] == ["completed", "sealed", "qa_pending", "qa_passed"]
    seqs = [e["seq"] for e in events.body["events"]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_qa_rejection_ends_in_qa_rejected(harness: Harness) -> None:
    walk = await harness.walk_to("qa_pending")
    await queue_with_findings(harness, walk.session_id)
    r = await harness.as_("qa01", "POST", f"/qa/sessions/{walk.session_id}/verdict", json={
        "verdict": "reject", "findings": [{"requirement": "R-24", "message": "第三步回答不清晰"}]})
    assert r.status == 201, r.body
    assert await harness.state(walk) == "qa_rejected"


async def test_transitions_are_published_on_redis_for_live_pages(harness: Harness) -> None:
    walk = await harness.walk_to("created")
    pubsub = harness.redis.pubsub()
    await pubsub.subscribe(channel_for(walk.session_id))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    await harness.walk_to("opened", walk=walk)
    received: list[dict[str, Any]] = []
    while len(received) < 2:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None, "expected a published event"
        received.append(json.loads(message["data"]))
    await pubsub.aclose()
    assert [m["to_state"] for m in received] == ["invited", "opened"]
    stored = await SessionEvent.filter(session_id=walk.session_id).order_by("seq")
    assert [e.seq for e in stored][-2:] == [m["seq"] for m in received]


async def test_illegal_transitions_get_409_with_a_chinese_message(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    sid = walk.session_id
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start",
                          json={"location": HERE})
    assert r.status == 409
    assert r.content_type == "application/problem+json"
    assert r.body["code"] == "illegal_transition"
    assert "不能执行" in r.body["detail"] and r.body["state"] == "opened"
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    assert r.status == 409
    r = await harness.as_("engine01", "POST", f"/sessions/{sid}/identity-checks",
                          json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    assert r.status == 409
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/complete")
    assert r.status == 409
    # consenting twice is illegal too
    await harness.request("POST", "/customer/consent", token=walk.customer_token,
                          json=consent_body())
    r = await harness.request("POST", "/customer/consent", token=walk.customer_token,
                              json=consent_body())
    assert r.status == 409


async def test_completion_needs_the_whole_script_and_the_signature(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.play_script(walk, until="signature")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/complete")
    assert r.status == 409 and r.body["code"] == "illegal_transition"


async def test_abort_from_a_call_and_nothing_moves_afterwards(harness: Harness) -> None:
    walk = await harness.walk_to("in_call")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/abort",
                          json={"reason": "客户临时有事"})
    assert r.status == 200 and r.body["state"] == "aborted"
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/script/start")
    assert r.status == 409
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/abort",
                          json={"reason": "again"})
    assert r.status == 409


async def test_a_supervisor_may_abort_a_session_of_the_branch(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    r = await harness.as_("sup01", "POST", f"/sessions/{walk.session_id}/abort",
                          json={"reason": "重复录制"})
    assert r.status == 200 and r.body["state"] == "aborted"


async def test_one_application_one_session_R26(harness: Harness) -> None:
    walk = await harness.walk_to("created")
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": walk.order_id, "location": HERE})
    assert r.status == 409 and r.body["code"] == "order_already_recorded"
    # after an abort the application may be recorded again (rectification)
    await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/abort",
                      json={"reason": "重新录制"})
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": walk.order_id, "location": HERE})
    assert r.status == 201


async def test_concurrent_acknowledgements_are_serialised(harness: Harness) -> None:
    """Five answers to one step at once: exactly one is taken, the others see the new step
    (on PostgreSQL this needs the session row lock)."""
    walk = await harness.walk_to("disclosing")
    step = await harness.current_step(walk)
    assert step is not None
    await harness.hear(walk)
    results = await asyncio.gather(*[harness.ack(walk, step["id"]) for _ in range(5)])
    statuses = sorted(r.status for r in results)
    assert statuses == [201, 409, 409, 409, 409], [r.body for r in results]
    # Each loser waited for the winner and then saw the next step: not a write collision.
    assert {r.body["code"] for r in results if r.status == 409} == {"step_mismatch"}
    events = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}/events")
    assert len(events.body["acknowledgements"]) == 1
