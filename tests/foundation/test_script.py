"""R-24: the script advances only on a clear affirmative answer; a negative answer pauses it
for the agent; acknowledgements carry their offset in the recording and are idempotent."""

from __future__ import annotations

from models.sessions import Acknowledgement
from testing import handwriting as synthetic
from tests.harness import Harness


async def test_steps_advance_only_on_affirmative_answers_R24(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    played = await harness.play_script(walk)
    assert played[0] == "opening" and "agent-identity" in played
    assert "elderly-intro" not in played  # the customer is 46: no 60+ reminders
    assert played[-2:] == ["signature", "closing"]
    assert await harness.state(walk) == "signing"
    acks = await Acknowledgement.filter(session_id=walk.session_id).order_by("id")
    # every step but the closing words (no answer due) has its answer, in order
    assert [a.step_id for a in acks] == played[:-1]
    assert acks[-1].answer_kind == "signature"
    offsets = [a.offset_ms for a in acks]
    assert offsets == sorted(offsets) and offsets[0] >= 0


async def test_customers_aged_60_or_more_get_the_extra_steps(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing", birth="19500307")
    played = await harness.play_script(walk)
    assert played[1] == "elderly-intro" and "elderly-confirm" in played


async def test_a_negative_answer_pauses_until_the_agent_explains_R24(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    step = await harness.current_step(walk)
    assert step is not None
    await harness.hear(walk)
    r = await harness.ack(walk, step["id"], answer="negative")
    assert r.status == 201 and r.body["session"]["paused"] is True
    r = await harness.ack(walk, step["id"])
    assert r.status == 409 and r.body["code"] == "session_paused"
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/script/resume",
                          json={"note": "已向客户解释犹豫期含义，客户表示理解"})
    assert r.status == 200 and r.body["paused"] is False
    # the same step is played again, its answer waits for the replay, and is then accepted
    assert (await harness.current_step(walk))["id"] == step["id"]  # type: ignore[index]
    r = await harness.ack(walk, step["id"])
    assert r.status == 409 and r.body["code"] == "answer_not_open"
    await harness.hear(walk)
    r = await harness.ack(walk, step["id"])
    assert r.status == 201
    answers = await Acknowledgement.filter(session_id=walk.session_id).values_list(
        "answer", flat=True)
    assert [str(a) for a in answers] == ["negative", "affirmative"]


async def test_an_unclear_answer_also_pauses(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    step = await harness.current_step(walk)
    await harness.hear(walk)
    r = await harness.ack(walk, step["id"], answer="unclear")  # type: ignore[index]
    assert r.body["session"]["paused"] is True


async def test_a_retried_acknowledgement_is_stored_once(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    step = await harness.current_step(walk)
    await harness.hear(walk)
    first = await harness.ack(walk, step["id"], event_id="retry-0001")  # type: ignore[index]
    again = await harness.ack(walk, step["id"], event_id="retry-0001")  # type: ignore[index]
    assert first.status == 201 and again.status == 200 and again.body["duplicate"] is True
    assert again.body["acknowledgement"]["id"] == first.body["acknowledgement"]["id"]
    assert await Acknowledgement.filter(session_id=walk.session_id).count() == 1


async def test_an_answer_to_a_stale_step_is_refused(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    r = await harness.ack(walk, "cooling-off")
    assert r.status == 409 and r.body["code"] == "step_mismatch"
    assert r.body["current_step_id"] == "opening"


async def test_the_agent_cannot_skip_a_step_that_needs_an_answer(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/script/advance",
                          json={"step_id": "opening"})
    assert r.status == 409 and r.body["code"] == "acknowledgement_required"


async def test_written_and_closing_steps_are_not_answered_with_a_button(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.play_script(walk, until="signature")
    r = await harness.ack(walk, "signature")
    assert r.status == 409 and r.body["code"] == "step_needs_writing"
    await harness.sign(walk, 1)
    r = await harness.ack(walk, "closing")
    assert r.status == 409 and r.body["code"] == "step_needs_no_answer"


async def test_the_risk_sentence_must_be_copied_R25(harness: Harness) -> None:
    """The page sends the handwriting, never the text: the server reads it (R-25)."""
    walk = await harness.walk_to("disclosing", product="YA-NJF-002")  # participating annuity
    await harness.play_script(walk, until="risk-sentence")
    wrong = synthetic.written("本人已阅读保险条款和产品说明书了解本产品的特点和保单利益的确定性",
                              signature=False)
    r = await harness.request("POST", "/customer/signature", token=walk.customer_token,
                              json=wrong)
    assert r.status == 422, r.body
    await harness.sign(walk)
    assert (await harness.current_step(walk))["id"] == "signature"  # type: ignore[index]
    acks = await Acknowledgement.filter(session_id=walk.session_id, step_id="risk-sentence")
    assert [a.answer_kind for a in acks] == ["handwriting"]
    assert acks[0].text.startswith("本人已阅读保险条款")  # what the server read


async def test_a_signature_that_is_not_an_image_is_refused_R25(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.play_script(walk, until="signature")
    strokes = synthetic.written(None, signature=True)["signature_strokes"]
    r = await harness.request("POST", "/customer/signature", token=walk.customer_token, json={
        "signature_strokes": strokes, "image_base64": "bm90IGFuIGltYWdlIGF0IGFsbA==",
    })
    assert r.status == 422 and r.body["code"] == "signature_not_image"
    r = await harness.request("POST", "/customer/signature", token=walk.customer_token, json={
        "signature_strokes": strokes, "image_base64": "!!!! not base64 !!!!",
    })
    assert r.status == 422
