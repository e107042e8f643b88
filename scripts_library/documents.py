"""Product documents as real pages for the customer's phone (R-25).

A show_document step names its document in the script (`document: {title, file, sha256,
min_page_seconds}` or `{title, generated: agent_licence_card, ...}`). The file lives under the
documents root (the script library folder unless the configuration's documents folder,
``SHUANGLU_DOCUMENTS_DIR``, says otherwise: `use_folders`, called by the composition root) and
is one of:

- ``.pdf``: every page rendered with pypdfium2;
- ``.png`` / ``.jpg``: one page;
- ``.txt``: a text source typeset here (title, ``#`` headings, ``!`` emphasised paragraphs such
  as the 责任免除 clauses, plain paragraphs) with Noto Sans CJK — the sample library's documents
  are written this way, so the repository holds their text, not their pictures.

The agent's licence card is not a product file: it is drawn from the agent's name, licence
number and institution when the session's steps are rendered.

Pages are PNGs `PAGE_WIDTH` px wide (greyscale, 16 levels, 4 bits), stored by their SHA-256 in a
`PageStore` (a local folder, read through from the shared evidence store when the app has
one: `share_pages`), with an index per rendering (source hash, renderer version) so a document
is rendered once in the whole cluster. The session's
steps pin the page count and every page's hash; the customer is served exactly those bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from storage import ObjectStore

RENDERER_VERSION = "4"
PAGE_WIDTH = 1080
PAGE_HEIGHT = 1528  # A4's proportions at PAGE_WIDTH
SUPPORTED_SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".txt")
MAX_PAGES = 60
FONT_DIR = Path("/usr/share/fonts/opentype/noto")
LICENCE_CARD = "agent_licence_card"
_SC = 2  # the Simplified Chinese face in the Noto CJK collections


_store_lock = threading.Lock()


class DocumentError(Exception):
    """A document cannot be turned into pages; `message` is Chinese."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


# Without a configuration (a tool, a test): ~/.cache/shuanglu.
DEFAULT_CACHE = Path.home() / ".cache" / "shuanglu"


@dataclass(frozen=True)
class Folders:
    """Where the scripts' document files are (None: the library's own folder) and the cache
    whose `documents` folder keeps the rendered pages; from the configuration
    (infra.config.Config.documents_dir and cache_dir)."""

    documents: Path | None
    cache: Path = DEFAULT_CACHE


_folders: list[Folders] = []


def use_folders(folders: Folders) -> None:
    """The process's folders from now on (the composition root: the app while it runs, a CLI
    command); the latest given wins until it is released."""
    with _store_lock:
        _folders.append(folders)


def release_folders(folders: Folders) -> None:
    with _store_lock:
        if folders in _folders:
            _folders.remove(folders)


def documents_root() -> Path:
    given = _folders[-1].documents if _folders else None
    if given is not None:
        return given
    from scripts_library.catalogue import LIBRARY_DIR

    return LIBRARY_DIR


def _cache_root() -> Path:
    return _folders[-1].cache if _folders else DEFAULT_CACHE


class PageStore(Protocol):
    """Where rendered pages live, by SHA-256 (write-once), and the index of each rendering."""

    def put_page(self, data: bytes) -> str: ...

    def get_page(self, sha256: str) -> bytes | None: ...

    def get_index(self, key: str) -> list[dict[str, Any]] | None: ...

    def put_index(self, key: str, pages: list[dict[str, Any]]) -> None: ...


class LocalPageStore:
    """`<root>/pages/<sha[:2]>/<sha>.png` and `<root>/index/<key>.json`; written through a
    temporary file and renamed, so a reader never sees half a page. With a `remote` object
    store (shared by every node) each page and index is also stored there under
    ``documents/…`` (write-once, by content; a cache, so no retention lock) and a local miss
    is read from there: a page rendered on one node is served by any. Blocking, like the
    rendering: call it from a worker thread where it matters."""

    def __init__(self, root: Path, remote: ObjectStore | None = None) -> None:
        self.root = root
        self.remote = remote

    def _remote_put(self, key: str, data: bytes) -> None:
        if self.remote is None:
            return
        from storage import ObjectExists

        # Another rendering of the same index stored first: that one stays.
        with contextlib.suppress(ObjectExists):
            self.remote.put_bytes_sync(f"documents/{key}", data, retain=False)

    def _remote_get(self, key: str) -> bytes | None:
        if self.remote is None:
            return None
        from storage import StoreError

        try:
            return self.remote.get_bytes_sync(f"documents/{key}")
        except StoreError:
            return None

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def _page(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256")
        return self.root / "pages" / sha256[:2] / f"{sha256}.png"

    def put_page(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self._page(sha).exists():
            self._write(self._page(sha), data)
        self._remote_put(self._page(sha).relative_to(self.root).as_posix(), data)
        return sha

    def get_page(self, sha256: str) -> bytes | None:
        data: bytes | None
        try:
            data = self._page(sha256).read_bytes()
        except FileNotFoundError:
            data = self._remote_get(self._page(sha256).relative_to(self.root).as_posix())
            if data is None or hashlib.sha256(data).hexdigest() != sha256:
                return None
            self._write(self._page(sha256), data)
        except ValueError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    def get_index(self, key: str) -> list[dict[str, Any]] | None:
        path = self.root / "index" / f"{key}.json"
        if not path.exists():
            raw = self._remote_get(f"index/{key}.json")
            if raw is None:
                return None
            self._write(path, raw)
        pages: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        return pages if all(self.get_page(p["sha256"]) is not None for p in pages) else None

    def put_index(self, key: str, pages: list[dict[str, Any]]) -> None:
        data = json.dumps(pages).encode()
        self._write(self.root / "index" / f"{key}.json", data)
        self._remote_put(f"index/{key}.json", data)


_stores: dict[Path, LocalPageStore] = {}
_shared: list[ObjectStore] = []


def page_store(root: Path | None = None) -> LocalPageStore:
    """The page store (the configured cache's ``documents`` folder by default), reading through the
    shared object store when the app set one (`share_pages`)."""
    folder = root or _cache_root() / "documents"
    with _store_lock:
        store = _stores.setdefault(folder, LocalPageStore(folder))
        store.remote = _shared[-1] if _shared else None
        return store


def share_pages(remote: ObjectStore) -> None:
    """Pages are also kept in (and read from) ``remote`` from now on (the app's evidence
    store, set at start-up; the latest app started in this process wins)."""
    with _store_lock:
        _shared.append(remote)


def unshare_pages(remote: ObjectStore) -> None:
    """The app that shared ``remote`` stops."""
    with _store_lock:
        if remote in _shared:
            _shared.remove(remote)


# -- drawing ---------------------------------------------------------------------------------


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "NotoSansCJK-Bold.ttc" if bold else "NotoSansCJK-Regular.ttc"
    return ImageFont.truetype(str(FONT_DIR / name), size, index=_SC)


_LEVELS = [min(15, round(v / 17)) for v in range(256)]
_GREYS = [c for i in range(16) for c in (i * 17,) * 3]


def _png(image: Image.Image) -> bytes:
    """Greyscale in 16 levels, 4 bits a pixel: text pages stay sharp and small (~90 kB at
    1080 px) and take 0.06 s to encode."""
    levels = image.convert("L").point(_LEVELS)
    paletted = Image.frombytes("P", levels.size, levels.tobytes())
    paletted.putpalette(_GREYS)
    out = io.BytesIO()
    paletted.save(out, "PNG", bits=4)
    return out.getvalue()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont,
          width: int) -> list[str]:
    lines, line = [], ""
    for char in text:
        if draw.textlength(line + char, font=font) > width:
            # Chinese line breaking: closing punctuation never starts a line.
            if char in "，。、；：！？）」』》" and line:
                line += char
                continue
            lines.append(line)
            line = ""
        line += char
    if line:
        lines.append(line)
    return lines


@dataclass(frozen=True)
class _Block:
    kind: str  # title | heading | strong | text
    text: str


def _blocks(source: str) -> list[_Block]:
    paragraphs = [p.strip() for p in source.replace("\r\n", "\n").split("\n\n") if p.strip()]
    blocks = []
    for index, paragraph in enumerate(paragraphs):
        joined = "".join(line.strip() for line in paragraph.split("\n"))
        if index == 0:
            blocks.append(_Block("title", joined))
        elif joined.startswith("#"):
            blocks.append(_Block("heading", joined.lstrip("#").strip()))
        elif joined.startswith("!"):
            blocks.append(_Block("strong", joined[1:].strip()))
        else:
            blocks.append(_Block("text", joined))
    return blocks


def typeset(source: str) -> list[Image.Image]:
    """A text document as phone pages: big type (54 px of 1080: about 17 CSS px on a 390 px
    phone before zooming, for elderly readers), a running page number."""
    margin, body = 64, 54
    fonts = {"title": _font(66, True), "heading": _font(58, True), "strong": _font(body, True),
             "text": _font(body)}
    leading = {"title": 92, "heading": 80, "strong": 80, "text": 80}
    gap = {"title": 40, "heading": 16, "strong": 24, "text": 24}
    pages: list[Image.Image] = []
    page = draw = None
    y = 0

    def new_page() -> None:
        nonlocal page, draw, y
        page = Image.new("L", (PAGE_WIDTH, PAGE_HEIGHT), 255)
        draw = ImageDraw.Draw(page)
        pages.append(page)
        y = margin

    new_page()
    bottom = PAGE_HEIGHT - margin - 60
    for block in _blocks(source):
        assert draw is not None
        font = fonts[block.kind]
        lines = _wrap(draw, block.text, font, PAGE_WIDTH - 2 * margin)
        if block.kind == "heading" and y + leading["heading"] + 2 * leading["text"] > bottom:
            new_page()
        for line in lines:
            if y + leading[block.kind] > bottom:
                new_page()
            assert draw is not None
            x = margin
            if block.kind == "title":
                x = (PAGE_WIDTH - int(draw.textlength(line, font=font))) // 2
            if block.kind == "strong":
                draw.rectangle((margin - 16, y - 4, margin - 8, y + leading["strong"] - 12),
                               fill=0)
            draw.text((x, y), line, font=font, fill=0)
            y += leading[block.kind]
        y += gap[block.kind]
    footer = _font(34)
    for number, image in enumerate(pages, 1):
        text = f"第 {number} 页 / 共 {len(pages)} 页"
        d = ImageDraw.Draw(image)
        d.text(((PAGE_WIDTH - int(d.textlength(text, font=footer))) // 2,
                PAGE_HEIGHT - margin - 20), text, font=footer, fill=90)
    return pages


def licence_card(name: str, licence_no: str, institution: str) -> Image.Image:
    """The agent's licence card, drawn from the agent's record for this session."""
    card = Image.new("L", (PAGE_WIDTH, 700), 255)
    d = ImageDraw.Draw(card)
    d.rounded_rectangle((12, 12, PAGE_WIDTH - 12, 688), radius=36, outline=40, width=6)
    d.rectangle((12, 12, PAGE_WIDTH - 12, 150), fill=60)
    title = "保险销售从业人员执业证"
    big = _font(64, True)
    d.text(((PAGE_WIDTH - int(d.textlength(title, font=big))) // 2, 38), title, font=big,
           fill=255)
    d.rectangle((60, 200, 320, 540), outline=120, width=4)
    d.text((118, 345), "本人照片", font=_font(44), fill=150)
    label, value = _font(40), _font(48, True)
    y = 200
    fields = (("姓　　名", name), ("执业证编号", licence_no), ("所属机构", institution))
    for caption, text in fields:
        d.text((370, y), caption, font=label, fill=80)
        wrapped = _wrap(d, text, value, PAGE_WIDTH - 370 - 50) or [""]
        for k, part in enumerate(wrapped[:2]):
            d.text((370, y + 50 + k * 60), part, font=value, fill=0)
        y += 110 + 60 * min(len(wrapped), 2)
    note = "仅供本次远程双录核对销售人员身份使用"
    small = _font(34)
    d.text(((PAGE_WIDTH - int(d.textlength(note, font=small))) // 2, 610), note, font=small,
           fill=110)
    return card


def _fit(image: Image.Image) -> Image.Image:
    image = image.convert("L")
    if image.width != PAGE_WIDTH:
        height = max(1, round(image.height * PAGE_WIDTH / image.width))
        image = image.resize((PAGE_WIDTH, height), Image.Resampling.LANCZOS)
    return image


def _pdf_pages(data: bytes) -> Iterable[Image.Image]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise DocumentError("PDF 文件无法打开") from exc
    try:
        if len(pdf) > MAX_PAGES:
            raise DocumentError(f"文件超过 {MAX_PAGES} 页")
        for page in pdf:
            yield page.render(scale=PAGE_WIDTH / page.get_width(), grayscale=True).to_pil()
    finally:
        pdf.close()


def source_pages(suffix: str, data: bytes) -> list[Image.Image]:
    """The pages of a document file's bytes."""
    suffix = suffix.lower()
    if suffix == ".pdf":
        pages = list(_pdf_pages(data))
    elif suffix in (".png", ".jpg", ".jpeg"):
        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                pages = [opened.copy()]
        except OSError as exc:
            raise DocumentError("图片文件无法打开") from exc
    elif suffix == ".txt":
        pages = typeset(data.decode("utf-8"))
    else:
        raise DocumentError(f"不支持的文件类型 {suffix}（可用 PDF、PNG、JPG 或 TXT）")
    if not pages:
        raise DocumentError("文件没有任何页面")
    return [_fit(p) for p in pages]


def resolve(file: str, root: Path | None = None) -> Path:
    """The document file under the documents root; never outside it."""
    base = (root or documents_root()).resolve()
    path = (base / file).resolve()
    if not path.is_relative_to(base):
        raise DocumentError(f"文件路径 {file} 不在文件库目录内")
    return path


def _pin(store: PageStore, key: str, render: Any) -> list[dict[str, Any]]:
    pages = store.get_index(key)
    if pages is None:
        pages = []
        for image in render():
            pages.append({"sha256": store.put_page(_png(image)), "width": image.width,
                          "height": image.height})
        store.put_index(key, pages)
    return pages


def file_pages(file: str, expected_sha256: str | None = None, store: PageStore | None = None,
               root: Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(source SHA-256, pages) of a document file, rendered once per content."""
    path = resolve(file, root)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"找不到文件 {file}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise DocumentError(f"文件 {file} 的内容与话术中登记的 SHA-256 不一致，已拒绝使用")
    key = hashlib.sha256(f"{RENDERER_VERSION}:{PAGE_WIDTH}:{path.suffix.lower()}:{digest}"
                         .encode()).hexdigest()
    pages = _pin(store or page_store(), key, lambda: source_pages(path.suffix, data))
    return digest, pages


def licence_pages(name: str, licence_no: str, institution: str,
                  store: PageStore | None = None) -> tuple[str, list[dict[str, Any]]]:
    material = json.dumps([LICENCE_CARD, RENDERER_VERSION, name, licence_no, institution],
                          ensure_ascii=False)
    key = hashlib.sha256(material.encode()).hexdigest()
    pages = _pin(store or page_store(), key,
                 lambda: [licence_card(name, licence_no, institution)])
    return key, pages
