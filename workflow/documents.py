"""Documents shown page by page (R-25): the server times every page view by its own clock and
a show_document step is confirmed only once every page was shown long enough.

The page reports each page it brings on screen (POST /customer/documents/views) and page 0 when
the document leaves the screen; each report closes the view before it: the timeline gets
`document_page_viewed` {step_id, document, page, shown_ms} with the time measured between the
two reports on the server's clock, and `document_page_opened` for the page now shown. Views of
one page add up (a customer may page back). `require_pages_shown` is called by the
acknowledgement of a show_document step: it closes the open view and refuses (409, naming the
pages) while a page was never shown or shown for less than the script's `min_page_seconds`.
Steps of old script versions whose document is only a name have no pages and no such rule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.sessions import RecordingSession, SessionEvent, SessionState
from scripts_library.render import SessionStep
from security.audit import Actor
from workflow.core import Unit, WorkflowDeps, locked
from workflow.errors import Conflict, InvalidInput
from workflow.event_types import EventType
from workflow.principals import CustomerPrincipal
from workflow.steps import at_current

OPENED = EventType.DOCUMENT_PAGE_OPENED
VIEWED = EventType.DOCUMENT_PAGE_VIEWED


def pinned(step: SessionStep) -> dict[str, Any] | None:
    """The step's pinned pages, or None for a step without a real document."""
    document = step.document_pages
    return document if isinstance(document, dict) and document.get("page_count") else None


async def _open_view(unit: Unit) -> SessionEvent | None:
    last = await SessionEvent.filter(session_id=unit.session.id, type__in=[OPENED, VIEWED]) \
        .using_db(unit.conn).order_by("-seq").first()
    return last if last is not None and last.type == OPENED else None


async def _close_open_view(unit: Unit, actor: Actor, now: datetime) -> None:
    opened = await _open_view(unit)
    if opened is None:
        return
    shown_ms = max(0, int((now - opened.at).total_seconds() * 1000))
    await unit.event(actor, VIEWED, {**opened.data, "shown_ms": shown_ms})


async def view_page(deps: WorkflowDeps, principal: CustomerPrincipal, step_id: str,
                    page: int) -> dict[str, Any]:
    """The customer's page shows `page` (1-based) of the current step's document; 0: none."""
    async with locked(deps, principal.session_id, None) as unit:
        session = unit.session
        now = deps.clock()
        await _close_open_view(unit, principal.actor, now)
        if page == 0:
            return progress(session, await shown_by_page(unit, session))
        if session.state != SessionState.DISCLOSING:
            raise Conflict("no_document_now", "当前没有需要阅读的文件")
        step = at_current(session)
        if step.id != step_id:
            raise Conflict("step_mismatch", "页面上的话术步骤已变化，请刷新",
                           current_step_id=step.id)
        document = pinned(step)
        if document is None:
            raise Conflict("step_has_no_pages", "该步骤没有需要逐页阅读的文件")
        if not 1 <= page <= int(document["page_count"]):
            raise InvalidInput("page_out_of_range",
                               f"页码应在 1 到 {document['page_count']} 之间")
        await unit.event(principal.actor, OPENED, {
            "step_id": step_id, "document": document["title"], "page": page,
            "page_sha256": document["pages"][page - 1]["sha256"]})
        return progress(session, await shown_by_page(unit, session))


async def shown_by_page(unit: Unit, session: RecordingSession,
                        now: datetime | None = None) -> dict[int, int]:
    """Milliseconds each page of the current step's document was shown (an open view counts
    up to `now` when given)."""
    step_id = at_current(session).id if session.steps else ""
    events = await SessionEvent.filter(session_id=session.id, type__in=[VIEWED, OPENED]) \
        .using_db(unit.conn).order_by("seq")
    shown: dict[int, int] = {}
    for event in events:
        if event.data.get("step_id") != step_id:
            continue
        page = int(event.data.get("page", 0))
        if event.type == VIEWED:
            shown[page] = shown.get(page, 0) + int(event.data.get("shown_ms", 0))
    if now is not None:
        opened = await _open_view(unit)
        if opened is not None and opened.data.get("step_id") == step_id:
            page = int(opened.data.get("page", 0))
            shown[page] = shown.get(page, 0) + max(
                0, int((now - opened.at).total_seconds() * 1000))
    return shown


def progress(session: RecordingSession, shown: dict[int, int]) -> dict[str, Any]:
    """Per page of the current step's document: shown ms and whether that is enough."""
    if session.state != SessionState.DISCLOSING or not session.steps:
        return {"pages": [], "complete": False}
    document = pinned(at_current(session))
    if document is None:
        return {"pages": [], "complete": True}
    need = int(document["min_page_seconds"]) * 1000
    pages = [{"page": n, "shown_ms": shown.get(n, 0), "enough": shown.get(n, 0) >= need}
             for n in range(1, int(document["page_count"]) + 1)]
    return {"pages": pages, "min_page_ms": need, "complete": all(p["enough"] for p in pages)}


def _pages_text(pages: list[int]) -> str:
    return "、".join(f"第 {p} 页" for p in pages)


async def require_pages_shown(unit: Unit, actor: Actor, step: SessionStep,
                              now: datetime) -> None:
    """R-25: a show_document step is confirmed only after every page was shown for at least
    `min_page_seconds` by the server's clock (closes the open view first)."""
    document = pinned(step)
    if document is None:
        return
    await _close_open_view(unit, actor, now)
    shown = await shown_by_page(unit, unit.session)
    need = int(document["min_page_seconds"]) * 1000
    count = int(document["page_count"])
    unseen = [n for n in range(1, count + 1) if n not in shown]
    short = [n for n in range(1, count + 1) if n in shown and shown[n] < need]
    if not unseen and not short:
        return
    reasons = []
    if unseen:
        reasons.append(f"{_pages_text(unseen)}还没有看")
    if short:
        reasons.append(f"{_pages_text(short)}停留不足 {document['min_page_seconds']} 秒")
    raise Conflict("document_not_read",
                   f"请先逐页阅读《{document['title']}》（共 {count} 页）："
                   + "；".join(reasons) + "。每页至少阅读 "
                   f"{document['min_page_seconds']} 秒后再确认",
                   unseen_pages=unseen, short_pages=short)
