"""Static files carry content versions (issue 17 item 7, h5/assets.py): WeChat's browser keeps
old scripts, so every script and style reference is versioned by content, the versioned file is
cached for good and anything else is revalidated; pages are never stored."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from h5.assets import IMMUTABLE, Assets
from tests.harness import Harness

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(120)]


async def test_pages_and_modules_reference_their_files_by_version(harness: Harness) -> None:
    page = await harness.client.get("/console")
    html = await page.text()
    assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
    script = re.search(r'src="/static/console\.js\?v=([0-9a-f]{12})"', html)
    assert script is not None and re.search(r'href="/static/common\.css\?v=[0-9a-f]{12}"', html)
    module = await harness.client.get(f"/static/console.js?v={script.group(1)}")
    body = await module.text()
    assert module.status == 200 and module.headers["Cache-Control"] == IMMUTABLE
    assert module.content_type == "text/javascript"
    imported = re.search(r'from "/static/api\.js\?v=([0-9a-f]{12})"', body)
    assert imported is not None
    # Unversioned or an old version: served, but revalidated every time.
    for query in ("", "?v=000000000000"):
        stale = await harness.client.get(f"/static/console.js{query}")
        assert stale.status == 200 and stale.headers["Cache-Control"] == "no-cache"
    etag = module.headers["ETag"]
    again = await harness.client.get("/static/console.js", headers={"If-None-Match": etag})
    assert again.status == 304
    for path in ("/static/..%2Fassets.py", "/static/missing.js", "/static/%2Fetc%2Fpasswd"):
        assert (await harness.client.get(path)).status == 404
    resume = await harness.client.get("/h5/resume")  # re-entry with the agent's code
    assert resume.status == 200 and "customer.js?v=" in await resume.text()


def test_a_changed_import_changes_the_version_of_its_importers(tmp_path: Path) -> None:
    (tmp_path / "b.js").write_text("export const b = 1;\n")
    (tmp_path / "a.js").write_text('import { b } from "/static/b.js";\nconsole.log(b);\n')
    (tmp_path / "p.html").write_text('<script type="module" src="/static/a.js"></script>'
                                     '<a href="/static/replay.html?session=x">x</a>')
    assets = Assets(tmp_path)
    page, a, b = assets.get("p.html"), assets.get("a.js"), assets.get("b.js")
    assert page is not None and a is not None and b is not None
    assert f"/static/a.js?v={a.version}".encode() in page.body
    assert b'"/static/replay.html?session=x"' in page.body  # only scripts and styles
    assert f'"/static/b.js?v={b.version}"'.encode() in a.body
    (tmp_path / "b.js").write_text("export const b = 2;\n")
    stat = (tmp_path / "b.js").stat()
    os.utime(tmp_path / "b.js", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    b2, a2, page2 = assets.get("b.js"), assets.get("a.js"), assets.get("p.html")
    assert b2 is not None and a2 is not None and page2 is not None
    assert b2.version != b.version and a2.version != a.version
    assert f"/static/a.js?v={a2.version}".encode() in page2.body
