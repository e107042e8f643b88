"""Documents, hand-copy and signature through the API (R-25): the pages gate the answer of a
show_document step by the server's clock; the hand-copy is read from its strokes (never a text
the page sends) and refused when wrong, blank or scribbled; a signature needs real strokes; the
strokes are sealed with the image and an altered strokes file is named."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest

from models.sessions import SessionEvent, Signature
from testing import handwriting as synthetic
from tests.harness import Harness, Walk, png_bytes
from tests.written import play_script, read_documents, stepped_clock, written_body
from workflow.consent_texts import RISK_SENTENCE
from workflow.sealing import verify_manifest

pytestmark = pytest.mark.timeout(240)
PARTICIPATING = "YA-NJF-002"


async def _at(harness: Harness, step_id: str) -> Walk:
    w = await harness.walk_to("disclosing", product=PARTICIPATING)
    await play_script(harness, w, until=step_id)
    return w


async def _post(harness: Harness, w: Walk, body: dict[str, Any]) -> Any:
    return await harness.request("POST", "/customer/signature", token=w.customer_token,
                                 json=body)


async def _view(harness: Harness, w: Walk, step_id: str, page: int) -> Any:
    return await harness.request("POST", "/customer/documents/views", token=w.customer_token,
                                 json={"step_id": step_id, "page": page})


async def test_every_page_must_be_shown_long_enough_before_confirming_R25(
        harness: Harness) -> None:
    w = await _at(harness, "notice")
    step = await harness.current_step(w)
    assert step is not None
    document = step["document_pages"]
    assert document["title"] == "人身保险投保提示书" and document["page_count"] >= 2
    assert len(document["pages"]) == document["page_count"]
    clock = stepped_clock(harness)
    # Nothing read yet.
    r = await harness.ack(w, "notice")
    assert r.status == 409 and r.body["code"] == "document_not_read", r.body
    assert "第 1 页" in r.body["detail"] and "还没有看" in r.body["detail"]
    # Page 1 long enough, page 2 only 2 s, the rest never.
    assert (await _view(harness, w, "notice", 1)).status == 201
    clock.advance(document["min_page_seconds"] + 1)
    assert (await _view(harness, w, "notice", 2)).status == 201
    clock.advance(2)
    r = await harness.ack(w, "notice")
    assert r.status == 409 and r.body["code"] == "document_not_read"
    assert r.body["short_pages"] == [2], r.body
    assert r.body["unseen_pages"] == list(range(3, document["page_count"] + 1))
    assert f"停留不足 {document['min_page_seconds']} 秒" in r.body["detail"]
    # A page out of range, another step's id.
    assert (await _view(harness, w, "notice", 99)).status == 422
    assert (await _view(harness, w, "documents", 1)).status == 409
    # Read the rest (page 2 again: views of one page add up).
    await read_documents(harness, w.session_id, w.customer_token)
    r = await harness.ack(w, "notice")
    assert r.status == 201, r.body
    views = [e.data for e in await SessionEvent.filter(
        session_id=w.session_id, type="document_page_viewed").order_by("seq")
        if e.data["step_id"] == "notice"]
    shown_ms = views[0].pop("shown_ms")
    assert views[0] == {"step_id": "notice", "document": "人身保险投保提示书", "page": 1,
                        "page_sha256": document["pages"][0]["sha256"]}
    # The server's clock (moved on by the test) plus the real time the requests took.
    assert 0 <= shown_ms - (document["min_page_seconds"] + 1) * 1000 < 1500
    assert {v["page"] for v in views} == set(range(1, document["page_count"] + 1))
    assert all(v["shown_ms"] >= 0 for v in views[1:])


async def test_pages_are_served_to_the_session_only_R25(harness: Harness) -> None:
    w = await _at(harness, "agent-identity")
    step = await harness.current_step(w)
    assert step is not None and step["document_pages"]["source"] == "agent_licence_card"
    sha = step["document_pages"]["pages"][0]["sha256"]
    r = await harness.request("GET", f"/customer/documents/pages/{sha}", token=w.customer_token)
    assert r.status == 200 and r.content_type == "image/png" and r.body[:4] == b"\x89PNG"
    import hashlib

    assert hashlib.sha256(r.body).hexdigest() == sha
    r = await harness.request("GET", f"/customer/documents/pages/{'0' * 64}",
                              token=w.customer_token)
    assert r.status == 404
    other = await harness.walk_to("in_call", agent="agent02")
    r = await harness.request("GET", f"/customer/documents/pages/{sha}",
                              token=other.customer_token)
    assert r.status == 404  # another agent's card: not in that session


async def test_the_hand_copy_is_read_not_trusted_R25(harness: Harness) -> None:
    w = await _at(harness, "risk-sentence")
    # The old body (the text itself) is refused.
    old = {"risk_sentence": RISK_SENTENCE,
           "image_base64": synthetic.sign_body(synthetic.grid(RISK_SENTENCE))["image_base64"]}
    r = await _post(harness, w, old)
    assert r.status == 422
    # The wrong sentence, written well.
    wrong = ("我今天去银行存款买基金收益稳定高" * 3)[:38]
    r = await _post(harness, w, synthetic.sign_body(synthetic.grid(wrong, seed=4)))
    assert r.status == 422 and r.body["code"] == "handwriting_mismatch", r.body
    assert "抄录内容与要求的语句不一致" in r.body["detail"] and len(r.body["wrong_boxes"]) > 30
    # Blank and zig-zag boxes are named.
    r = await _post(harness, w, synthetic.sign_body(
        synthetic.grid(RISK_SENTENCE, seed=5, blank=(2,), zigzags=(30,))))
    assert r.status == 422 and r.body["code"] == "handwriting_unclear"
    assert r.body["detail"].startswith("第 3 个字格没有写字；第 31 个字格像是乱画或涂抹")
    assert r.body["wrong_boxes"] == [3, 31]  # the page marks them for rewriting
    # A signature where a copy is asked; malformed strokes.
    r = await _post(harness, w, synthetic.sign_body(signature=synthetic.pad()))
    assert r.status == 422 and r.body["code"] == "copy_missing"
    bad = synthetic.sign_body(synthetic.grid(RISK_SENTENCE, seed=1))
    bad["copy_strokes"]["boxes"][0][0][0] = ["x", 1, 2]
    r = await _post(harness, w, bad)
    assert r.status == 422 and r.body["code"] == "strokes_malformed"
    assert await Signature.filter(session_id=w.session_id).count() == 0
    # The right sentence in a shaky hand.
    r = await _post(harness, w, synthetic.sign_body(
        synthetic.grid(RISK_SENTENCE, "shaky", seed=6)))
    assert r.status == 201, r.body
    assert r.body["cer"] <= 0.06
    signature = await Signature.get(session_id=w.session_id)
    assert signature.risk_sentence == RISK_SENTENCE and signature.engine.startswith("paddleocr")
    stored = json.loads(await harness.deps.storage.get_bytes(signature.strokes_path))
    assert stored["copy"]["kind"] == "grid" and len(stored["copy"]["boxes"]) == 38
    assert "signature" not in stored
    event = await SessionEvent.get(session_id=w.session_id, type="signed")
    assert event.data["strokes_sha256"] == signature.strokes_sha256
    assert event.data["recognised_text"] == signature.recognised_text
    assert (await harness.current_step(w) or {}).get("id") == "signature"


async def test_a_signature_needs_real_strokes_R25(harness: Harness) -> None:
    w = await _at(harness, "signature")
    pad = synthetic.pad()
    for body, code in [
        (synthetic.sign_body(signature=pad, image=synthetic.black_png(8)),
         "signature_image_too_small"),
        (synthetic.sign_body(signature=pad, image=png_bytes(300, 200)), "signature_image_blank"),
        ({"image_base64": synthetic.sign_body(signature=pad)["image_base64"]},
         "signature_missing"),
        # A good picture with a dot or a line as strokes: the strokes decide.
        (synthetic.sign_body(signature=synthetic.dot_pad(), image=synthetic.drawn_png(pad)),
         "signature_not_handwritten"),
        (synthetic.sign_body(signature=synthetic.line_pad(), image=synthetic.drawn_png(pad)),
         "signature_not_handwritten"),
    ]:
        r = await _post(harness, w, body)
        assert r.status == 422 and r.body["code"] == code, (code, r.body)
    assert await Signature.filter(session_id=w.session_id).count() == 1  # the hand-copy
    r = await _post(harness, w, synthetic.sign_body(signature=pad))
    assert r.status == 201, r.body


async def test_strokes_are_sealed_and_an_altered_strokes_file_is_named_R25_R31(
        harness: Harness) -> None:
    w = await harness.walk_to("disclosing", product=PARTICIPATING)
    await play_script(harness, w)
    await harness.walk_to("qa_pending", walk=w)
    assert await verify_manifest(harness.deps, UUID(w.session_id)) == []
    signatures = await Signature.filter(session_id=w.session_id).order_by("id")
    assert len(signatures) == 2 and all(s.strokes_path for s in signatures)
    from models.sessions import RecordingSession

    session = await RecordingSession.get(id=w.session_id)
    assert session.manifest is not None
    names = {i["name"] for i in session.manifest["items"]}
    assert {f"strokes:{s.strokes_path}" for s in signatures} <= names
    # Alter one stroke of the signature.
    path = harness.deps.storage.local_path(signatures[1].strokes_path)
    assert path is not None  # the local backend
    data = json.loads(path.read_text())
    data["signature"]["strokes"][0][0][0] += 5
    path.chmod(0o640)
    path.write_text(json.dumps(data))
    problems = await verify_manifest(harness.deps, UUID(w.session_id))
    assert any(f"strokes:{signatures[1].strokes_path}" in p for p in problems), problems


async def test_written_body_helper_writes_what_the_step_asks_R25(harness: Harness) -> None:
    w = await _at(harness, "risk-sentence")
    body = await written_body(w.session_id)
    assert set(body) == {"copy_strokes", "image_base64"}
