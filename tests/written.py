"""Test helpers for what the customer writes and reads (R-25), for the harness and the tests:
the body of POST /customer/signature for the current written step (synthetic handwriting:
strokes and image, never the text), and reading every page of a show_document step with the
workflow clock moved on by each page's minimum time instead of sleeping."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from models.sales import Product
from models.sessions import RecordingSession, Signature
from testing import handwriting as synthetic
from workflow.call import RISK_SENTENCE_PRODUCTS
from workflow.consent_texts import RISK_SENTENCE


async def written_body(session_id: str, seed: int = 0) -> dict[str, Any]:
    """The body for the session's current written step, or the final signing state (the risk
    sentence too, where the product needs it and it was not copied yet)."""
    session = await RecordingSession.get(id=session_id)
    if session.state.value == "disclosing":
        step = session.steps[session.current_step]
        if step["answer"] == "handwritten_copy":
            return synthetic.written(step["copy_text"], signature=False, seed=seed)
        return synthetic.written(None, signature=True, seed=seed)
    product = await Product.get(id=session.product_id)
    copied = await Signature.filter(session_id=session.id).exclude(risk_sentence="").exists()
    needs = product.product_type in RISK_SENTENCE_PRODUCTS and not copied
    return synthetic.written(RISK_SENTENCE if needs else None, signature=True, seed=seed)


class SteppedClock:
    """The workflow clock, moved on on demand (time travel forward only)."""

    def __init__(self, clock: Any) -> None:
        self.base = clock
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return self.base() + self.offset  # type: ignore[no-any-return]

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def stepped_clock(harness: Any) -> SteppedClock:
    """The harness's workflow clock, replaced (once) by one the tests can move on."""
    deps = harness.deps
    if not isinstance(deps.clock, SteppedClock):
        deps.clock = SteppedClock(deps.clock)
    return deps.clock  # type: ignore[no-any-return]


async def read_documents(harness: Any, session_id: str, token: str,
                         extra_seconds: float = 0.2,
                         advance: Callable[[float], Any] | None = None) -> None:
    """Every page of the current show_document step viewed for its minimum time, the last view
    closed by the server's clock (the page's own report of leaving). `advance(seconds)` moves
    the workflow clock on (default: the harness's stepped clock); with a real call, whose
    recording runs on real time, pass `asyncio.sleep` and wait."""
    session = await RecordingSession.get(id=session_id)
    step = session.steps[session.current_step]
    document = step.get("document_pages") or {}
    move = advance or stepped_clock(harness).advance
    for page in range(1, int(document.get("page_count", 0)) + 1):
        r = await harness.request("POST", "/customer/documents/views", token=token,
                                  json={"step_id": step["id"], "page": page})
        assert r.status == 201, r.body
        moved = move(float(document.get("min_page_seconds", 0)) + extra_seconds)
        if inspect.isawaitable(moved):
            await moved
    if document:
        r = await harness.request("POST", "/customer/documents/views", token=token,
                                  json={"step_id": step["id"], "page": 0})
        assert r.status == 201, r.body


async def play_script(harness: Any, w: Any, agent: str = "agent01",
                      until: str | None = None) -> list[str]:
    """The harness's play_script with the customer reading every page of a document before
    confirming it and writing (synthetic strokes) where a step asks for writing."""
    played = []
    while (step := await harness.current_step(w)) is not None:
        if step["id"] == until:
            await harness.hear(w)
            break
        played.append(step["id"])
        await harness.hear(w)
        if step["answer"] in ("handwritten_copy", "signature"):
            r = await harness.request("POST", "/customer/signature", token=w.customer_token,
                                      json=await written_body(w.session_id))
            assert r.status == 201, r.body
        elif step["answer"] == "none":
            if step["speaker"] == "tts":
                continue
            r = await harness.as_(agent, "POST", f"/sessions/{w.session_id}/script/advance",
                                  json={"step_id": step["id"]})
            assert r.status == 200, r.body
        else:
            if step["answer"] == "show_document":
                await read_documents(harness, w.session_id, w.customer_token)
            r = await harness.ack(w, step["id"])
            assert r.status == 201, r.body
    return played


def quick_documents_script(product: str, version: int = 2, seconds: int = 1) -> str:
    """The sample script of `product` as a new version whose documents need `seconds` per page
    (browser tests read every page in real time)."""
    import re

    from scripts_library.catalogue import LIBRARY_DIR

    source = (LIBRARY_DIR / product / "v1.yaml").read_text(encoding="utf-8")
    source = source.replace("  version: 1\n", f"  version: {version}\n", 1)
    return re.sub(r"min_page_seconds: \d+", f"min_page_seconds: {seconds}", source)


async def publish(harness: Any, source: str) -> None:
    r = await harness.as_("po01", "POST", "/scripts", json={"yaml": source})
    assert r.status == 201, r.body
    for user, action in [("po01", "submit"), ("po02", "approve"), ("po02", "publish")]:
        r = await harness.as_(user, "POST", f"/scripts/{r.body['id']}/{action}")
        assert r.status == 200, r.body


async def write_in_browser(page: Any, selector: str, char_strokes: list[list[tuple[float, float]]],
                           every: int = 2) -> None:
    """Writes strokes (unit coordinates of the element) with the mouse, as a finger would."""
    box = await page.locator(selector).bounding_box()
    assert box is not None
    for stroke in char_strokes:
        points = stroke[::every] + ([stroke[-1]] if len(stroke) % every != 1 else [])
        x0, y0 = points[0]
        await page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        await page.mouse.down()
        for x, y in points[1:]:
            await page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        await page.mouse.up()


async def write_copy_in_browser(page: Any, text: str, seed: int = 0) -> None:
    """The hand-copy written box by box in the page's grid with synthetic handwriting."""
    import random

    from media.handwriting.reading import writable

    rng = random.Random(seed)
    for index, char in enumerate(writable(text)):
        selector = f"#copyGrid .copy-cell:nth-child({index + 1}) canvas"
        await page.locator(selector).scroll_into_view_if_needed()
        strokes, _ = synthetic.character(char, synthetic.STYLES["neat"], rng)
        await write_in_browser(page, selector, [[(x, y) for x, y, _ in s] for s in strokes])


async def sign_in_browser(page: Any, selector: str = "#signPad", name: str = "张三丰",
                          seed: int = 0) -> None:
    """A signature: the name written across the pad with synthetic handwriting."""
    import random

    rng = random.Random(seed)
    await page.locator(selector).scroll_into_view_if_needed()
    box = await page.locator(selector).bounding_box()
    assert box is not None
    cell = min(box["height"] * 0.8, box["width"] / len(name)) / box["width"]
    tall = cell * box["width"] / box["height"]
    strokes = []
    for k, char in enumerate(name):
        written, _ = synthetic.character(char, synthetic.STYLES["hurried"], rng)
        strokes += [[(0.03 + k * cell + x * cell, 0.1 + y * tall) for x, y, _ in s]
                    for s in written]
    await write_in_browser(page, selector, strokes)


async def read_pages_in_browser(page: Any, page_count: int, timeout_s: float = 60) -> None:
    """Pages through the shown document with 下一页, each page until the page says it was read
    long enough, then waits for the page to say every page was read."""
    deadline = timeout_s * 1000
    for number in range(1, page_count + 1):
        await page.wait_for_function(
            """(label) => document.querySelector('#docPage').textContent === label
                && document.querySelector('#docTimer').textContent.includes('本页已读')
                || document.querySelector('#docTimer').textContent.includes('全部页面已阅读')
                && document.querySelector('#docPage').textContent === label""",
            arg=f"第 {number} / {page_count} 页", timeout=deadline)
        if number < page_count:
            await page.locator("#docNext").click()
    await page.wait_for_function(
        "() => document.querySelector('#docTimer').textContent.includes('全部页面已阅读')",
        timeout=deadline)
