"""Product documents as real pages (R-25): the lint refuses a document that is only a name or a
file that is missing or changed; PDF, image and text sources become 1080 px pages cached by
content; rendering a session pins the page count and hashes; the licence card is drawn from the
agent's values."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image, ImageDraw

from scripts_library import RenderContext, ScriptDocument, content_hash, lint, render
from scripts_library import documents as docs
from scripts_library.render import MissingValuesError, RenderError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The folders the composition root would set from the configuration.
    monkeypatch.setattr(docs, "_folders", [docs.Folders(documents=None, cache=tmp_path / "cache")])


def _step(data: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in data["steps"] if s["id"] == step_id)


def _codes(document: ScriptDocument) -> dict[str, str]:
    return {f.code: f.severity.value for f in lint(document)}


def test_a_document_that_is_only_a_name_is_not_publishable_but_loads_R25(
        sample_data: Callable[[str], dict[str, Any]],
        from_data: Callable[[dict[str, Any], str], ScriptDocument]) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "notice")["document"] = "投保提示书"
    document = from_data(data, "old.yaml")
    finding = next(f for f in lint(document) if f.code == "document-without-pages")
    assert finding.severity.value == "error" and finding.step_id == "notice"
    assert "只有名称" in finding.message
    # An old version's content hash does not depend on the fields added since.
    assert '"max_cer"' not in __import__("scripts_library").canonical_json(document)


def test_missing_changed_or_unpinned_files_are_reported_R25(
        sample_data: Callable[[str], dict[str, Any]],
        from_data: Callable[[dict[str, Any], str], ScriptDocument]) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "notice")["document"]["file"] = "_documents/nowhere.txt"
    assert _codes(from_data(data, "a.yaml"))["document-file-missing"] == "error"
    data = sample_data("YA-ZSS-001")
    _step(data, "notice")["document"]["sha256"] = "0" * 64
    assert _codes(from_data(data, "b.yaml"))["document-sha256-mismatch"] == "error"
    data = sample_data("YA-ZSS-001")
    del _step(data, "notice")["document"]["sha256"]
    assert _codes(from_data(data, "c.yaml"))["document-not-pinned"] == "warning"
    data = sample_data("YA-ZSS-001")
    _step(data, "notice")["document"]["file"] = "_documents/tishishu.docx"
    assert _codes(from_data(data, "d.yaml"))["document-file-type"] == "error"
    data = sample_data("YA-ZSS-001")
    _step(data, "notice")["document"]["file"] = "../../../etc/hosts.txt"
    assert _codes(from_data(data, "e.yaml"))["document-file-missing"] == "error"


def _pdf(pages: int) -> bytes:
    images = []
    for n in range(pages):
        image = Image.new("L", (1240, 1754), 255)
        ImageDraw.Draw(image).rectangle((100, 100 + 200 * n, 900, 200 + 200 * n), fill=0)
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=150)
    return out.getvalue()


def test_pdf_and_image_files_become_cached_phone_pages_R25(tmp_path: Path) -> None:
    (tmp_path / "terms.pdf").write_bytes(_pdf(3))
    Image.new("RGB", (600, 400), "white").save(tmp_path / "card.jpg")
    store = docs.LocalPageStore(tmp_path / "pages")
    digest, pages = docs.file_pages("terms.pdf", store=store, root=tmp_path)
    assert len(pages) == 3 and {p["width"] for p in pages} == {1080}
    assert pages[0]["height"] == round(1754 * 1080 / 1240)
    page = store.get_page(pages[0]["sha256"])
    assert page is not None and page.startswith(b"\x89PNG")
    assert len({p["sha256"] for p in pages}) == 3  # three different pages
    # Rendered once: the second call reads the index.
    assert docs.file_pages("terms.pdf", digest, store=store, root=tmp_path)[1] == pages
    _, (card,) = docs.file_pages("card.jpg", store=store, root=tmp_path)
    assert (card["width"], card["height"]) == (1080, 720)
    with pytest.raises(docs.DocumentError, match="SHA-256 不一致"):
        docs.file_pages("terms.pdf", "f" * 64, store=store, root=tmp_path)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    with pytest.raises(docs.DocumentError, match="PDF 文件无法打开"):
        docs.file_pages("broken.pdf", store=store, root=tmp_path)
    with pytest.raises(docs.DocumentError, match="不在文件库目录内"):
        docs.resolve("../x.pdf", tmp_path)
    assert store.get_page("../../etc/passwd") is None


def test_a_text_source_is_typeset_with_page_numbers_R25() -> None:
    source = "标题\n\n# 第一条\n\n" + "\n\n".join(["!责任免除条款的内容。" * 12] * 12)
    pages = docs.typeset(source)
    assert len(pages) >= 2 and all(p.size == (1080, 1528) for p in pages)
    # Ink on every page (the text and the running page number).
    assert all(cast(tuple[int, int], p.getextrema())[0] < 50 for p in pages)


def test_rendering_pins_every_documents_pages_and_draws_the_licence_card_R25(
        sample: Callable[[str], ScriptDocument],
        order_values: Callable[[str], dict[str, object]]) -> None:
    document = sample("YA-NJF-002")
    rendered = render(document, RenderContext(customer_age=45,
                                              values=order_values("YA-NJF-002")))
    shown = {s.id: s for s in rendered.steps if s.answer.value == "show_document"}
    assert set(shown) == {"agent-identity", "brochure", "notice", "documents"}
    card = shown["agent-identity"].document_pages
    assert card is not None and card["source"] == "agent_licence_card"
    assert card["page_count"] == 1 and card["min_page_seconds"] == 3
    notice = shown["notice"].document_pages
    assert notice is not None and notice["title"] == "人身保险投保提示书"
    assert notice["page_count"] == len(notice["pages"]) >= 2
    store = docs.page_store()
    assert all(store.get_page(p["sha256"]) for p in notice["pages"])
    # Another agent: another card; the same agent: the same card.
    other = dict(order_values("YA-NJF-002"), agent_name="赵六")
    again = render(document, RenderContext(customer_age=45, values=other))
    assert next(s for s in again.steps if s.id == "agent-identity").document_pages != card
    assert content_hash(document) == rendered.content_hash


def test_the_licence_card_needs_the_agents_values_R25(
        sample: Callable[[str], ScriptDocument],
        order_values: Callable[[str], dict[str, object]]) -> None:
    values = order_values("YA-ZSS-001")
    del values["agent_licence_no"]
    with pytest.raises(MissingValuesError) as error:
        render(sample("YA-ZSS-001"), RenderContext(customer_age=45, values=values))
    assert "agent_licence_no" in error.value.missing


def test_a_document_file_gone_after_publishing_stops_the_session_R25(
        sample: Callable[[str], ScriptDocument],
        order_values: Callable[[str], dict[str, object]],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = docs.Folders(documents=tmp_path, cache=tmp_path / "cache")  # an empty library
    monkeypatch.setattr(docs, "_folders", [empty])
    with pytest.raises(RenderError, match="无法显示：找不到文件 _documents/"):
        render(sample("YA-ZSS-001"), RenderContext(customer_age=45,
                                                   values=order_values("YA-ZSS-001")))
