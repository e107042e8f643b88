"""Signing (R-25): the hand-copied risk sentence and the customer's signature, each stored
write-once with the strokes it was written with and, when a script step asks for it, taken as
that step's answer (R-24).

The page never says what was written: it sends the strokes (points with times) and the image
it drew. The hand-copy is written one character per box; the server refuses blank boxes,
zig-zags and scribbles, reads the boxes offline (media.handwriting) and compares the reading
with the text to copy (character error rate at most the step's `max_cer`). A signature needs
real strokes: not a dot, not a ruled line, not a tiny mark. The strokes (JSON) are stored next
to the image and sealed with it (workflow.sealing).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from media.handwriting import recognizer
from media.handwriting.ink import MalformedInk, grid_problems, pad_problems, parse_grid, parse_pad
from media.handwriting.reading import DEFAULT_MAX_CER, CopyReading, read_copy, writable
from models.sales import Product
from models.sessions import (
    Acknowledgement,
    AnswerValue,
    RecordingSession,
    SessionState,
    Signature,
)
from scripts_library.render import SessionStep
from security.cpu import run_cpu
from workflow.call import (
    RISK_SENTENCE_PRODUCTS,
    WRITTEN_ANSWERS,
    _advance,
    _offset_ms,
    require_answer_open,
)
from workflow.consent_texts import RISK_SENTENCE
from workflow.core import WorkflowDeps, locked, require_state
from workflow.errors import Conflict, InvalidInput, NotFound
from workflow.event_types import EventType
from workflow.principals import CustomerPrincipal
from workflow.steps import at_current

# The smallest image that can show a signature or a row of boxes; an 8×8 PNG cannot.
MIN_IMAGE_SIDE = 100
MIN_IMAGE_AREA = 100 * 60
# A pad drawn at three device pixels per CSS pixel is about 2 megapixels; more is not a pad.
MAX_IMAGE_PIXELS = 8_000_000


def _image_kind(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    return None


def _image_header(image: bytes, max_bytes: int) -> str:
    """The cheap checks, before anything is decoded: type, size and the pixel count read from
    the header (a small PNG may claim 6000×6600 pixels)."""
    kind = _image_kind(image)
    if kind is None:
        raise InvalidInput("signature_not_image", "签名图片格式不正确，请重新签名")
    if len(image) > max_bytes:
        raise InvalidInput("signature_too_large", "签名图片过大，请重新签名")
    try:
        with Image.open(io.BytesIO(image)) as opened:
            width, height = opened.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("signature_not_image", "签名图片无法读取，请重新签名") from exc
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidInput("signature_too_large", "签名图片过大，请重新签名")
    return kind


def _check_image(image: bytes, max_bytes: int) -> str:
    """The image is a PNG or JPEG of a written pad: big enough, with ink on paper (decodes it:
    run it in the CPU pool)."""
    kind = _image_header(image, max_bytes)
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("L", (400, 400))
            grey = opened.convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("signature_not_image", "签名图片无法读取，请重新签名") from exc
    width, height = grey.size
    if min(width, height) < 40 or max(width, height) < MIN_IMAGE_SIDE \
            or width * height < MIN_IMAGE_AREA:
        raise InvalidInput("signature_image_too_small",
                           "签名图片太小，看不清笔迹，请在签名区内重新书写")
    small = grey.resize((min(width, 200), min(height, 200)))
    dark = sum(small.histogram()[:128]) / (small.width * small.height)
    if dark < 0.002 or dark > 0.6:
        raise InvalidInput("signature_image_blank",
                           "签名图片中没有可辨认的笔迹，请在签名区内重新书写")
    return kind


@dataclass(frozen=True)
class Written:
    """What the strokes passed: the copy's reading (None for a signature alone)."""

    strokes: dict[str, Any]
    reading: CopyReading | None
    expected: str | None


def _expected(session: RecordingSession, step: SessionStep | None,
              product: Product, copied_before: bool) -> tuple[str | None, bool, float]:
    """(text to copy or None, signature needed, max CER) for the step or the final signing."""
    if step is not None:
        if step.answer == "handwritten_copy":
            return step.copy_text, False, float(step.max_cer or DEFAULT_MAX_CER)
        return None, True, DEFAULT_MAX_CER
    needs_copy = product.product_type in RISK_SENTENCE_PRODUCTS and not copied_before
    return (RISK_SENTENCE if needs_copy else None), True, DEFAULT_MAX_CER


def _wrong_boxes(expected: str, boxes: tuple[int, ...]) -> str:
    shown = "、".join(f"第 {i + 1} 个字「{expected[i]}」" for i in boxes[:8])
    more = f"等 {len(boxes)} 个字" if len(boxes) > 8 else ""
    return shown + more


def check_writing(copy_raw: Any, signature_raw: Any, expected: str | None, needs_signature: bool,
                  max_cer: float, model_cache_dir: Path | None = None) -> Written:
    """Validates the strokes and reads the copy (blocking: run it off the event loop); the
    recogniser's model folders go under `model_cache_dir` (the configuration's cache)."""
    if expected is not None and copy_raw is None:
        raise InvalidInput("copy_missing", "请先在字格中逐字抄录风险提示语句")
    if needs_signature and signature_raw is None:
        raise InvalidInput("signature_missing", "请先在签名区亲笔签名")
    if expected is None and copy_raw is not None:
        raise InvalidInput("copy_not_asked", "本环节不需要抄录，请刷新页面")
    if not needs_signature and signature_raw is not None:
        raise InvalidInput("signature_not_asked", "本环节只需抄录，请刷新页面")
    strokes: dict[str, Any] = {}
    reading = None
    try:
        if expected is not None:
            target = writable(expected)
            grid = parse_grid(copy_raw, len(target))
            reports, problem = grid_problems(grid)
            if problem:
                raise InvalidInput("handwriting_unclear", problem, wrong_boxes=[
                    r.index + 1 for r in reports if r.blank or r.scribbled])
            reading = read_copy(recognizer(cache_dir=model_cache_dir), grid, target)
            if reading.comparison.cer > max_cer:
                raise InvalidInput(
                    "handwriting_mismatch",
                    "抄录内容与要求的语句不一致："
                    f"{_wrong_boxes(target, reading.comparison.wrong_boxes)}"
                    "没有写对或看不清，请在这些字格中重新工整书写",
                    wrong_boxes=[i + 1 for i in reading.comparison.wrong_boxes],
                    cer=round(reading.comparison.cer, 3))
            strokes["copy"] = grid.to_json()
        if needs_signature:
            pad = parse_pad(signature_raw)
            problem = pad_problems(pad)
            if problem:
                raise InvalidInput("signature_not_handwritten", problem)
            strokes["signature"] = pad.to_json()
    except MalformedInk as exc:
        raise InvalidInput("strokes_malformed", exc.message) from exc
    return Written(strokes, reading, expected)


async def sign(
    deps: WorkflowDeps, principal: CustomerPrincipal, copy: Any, signature: Any, image: bytes
) -> Signature:
    """R-25: the hand-copied sentence (read and compared, where the step or product needs it)
    and/or the signature, with the image the page drew; stored, sealed later, and the answer of
    its step."""
    _image_header(image, deps.settings.max_signature_bytes)  # cheap: before the state
    session = await RecordingSession.get_or_none(id=principal.session_id)
    if session is None:
        raise NotFound("session_not_found", "找不到该录制会话")
    step = _written_step(session)  # the state, before anything is decoded
    kind = await run_cpu(_check_image, image, deps.settings.max_signature_bytes)
    product = await Product.get(id=session.product_id)
    copied = await Signature.filter(session_id=session.id).exclude(risk_sentence="").exists()
    expected, needs_signature, max_cer = _expected(session, step, product, copied)
    # Recognition takes ~0.3 s: outside the session's lock, then the step is checked again.
    written = await run_cpu(check_writing, copy, signature, expected, needs_signature, max_cer,
                            deps.settings.model_cache_dir)
    async with locked(deps, principal.session_id, None) as unit:
        session = unit.session
        again = _written_step(session)
        if (again.id if again else None) != (step.id if step else None):
            raise Conflict("step_mismatch", "页面上的话术步骤已变化，请刷新后再书写")
        count = await Signature.filter(session_id=session.id).using_db(unit.conn).count()
        base = f"sessions/{session.id}/signature-{count + 1}"
        stored = await deps.storage.put_bytes(f"{base}.{kind}", image)
        ink = json.dumps(written.strokes, ensure_ascii=False, sort_keys=True,
                         separators=(",", ":")).encode()
        stored_ink = await deps.storage.put_bytes(f"{base}.strokes.json", ink)
        reading = written.reading
        now = deps.clock()
        signature = await Signature.create(
            session_id=session.id, risk_sentence=expected or "", image_path=stored.path,
            image_sha256=stored.sha256, strokes_path=stored_ink.path,
            strokes_sha256=stored_ink.sha256,
            recognised_text=reading.text if reading else "",
            cer=round(reading.comparison.cer, 4) if reading else None,
            engine=reading.engine if reading else "", at=now,
            offset_ms=_offset_ms(session, now), using_db=unit.conn,
        )
        await unit.event(principal.actor, EventType.SIGNED, {
            "image_sha256": stored.sha256, "strokes_sha256": stored_ink.sha256,
            "offset_ms": signature.offset_ms, "step_id": step.id if step else None,
            "copied": bool(expected), "recognised_text": signature.recognised_text,
            "cer": signature.cer, "engine": signature.engine,
        })
        if step is not None:
            # The written answer is the acknowledgement of its step.
            await Acknowledgement.create(
                session_id=session.id, step_id=step.id, step_index=session.current_step,
                answer_kind="handwriting" if step.answer == "handwritten_copy"
                else "signature",
                answer=AnswerValue.AFFIRMATIVE, text=(expected or "")[:500], at=now,
                offset_ms=signature.offset_ms, client_event_id=f"signature-{signature.id}",
                using_db=unit.conn,
            )
            await _advance(unit, principal.actor, step)
    return signature


def _written_step(session: RecordingSession) -> SessionStep | None:
    """The script step waiting for a hand-copy or signature; None in the final signing state.
    Raises the 409 when the session is in neither, or the step's answer is not open yet."""
    if session.state == SessionState.DISCLOSING and not session.paused:
        step = at_current(session)
        if step.answer in WRITTEN_ANSWERS:
            if session.speaking_step == step.id:
                raise Conflict("step_still_speaking", "请先听完本项内容再签名")
            require_answer_open(session, step)
            return step
    require_state(session, "sign")
    return None
