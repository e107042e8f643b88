"""Static files with content versions (issue 17 item 7): WeChat's in-app browser keeps old
JavaScript long after a deployment, and a page whose HTML is new but whose modules are old
breaks in ways no one can reproduce.

Every reference to a script or style sheet in a page or a module (`"/static/customer.js"`, also
in `import ... from "/static/api.js"`) is served as `"/static/customer.js?v=<hash>"`, the hash
being of the file as served (its own references rewritten first, so a change in `api.js`
changes the version of every module that imports it). A request with the current version is
answered `Cache-Control: public, max-age=31536000, immutable`; anything else (no version, an
old one) `no-cache`, so a stale copy is always revalidated. No build step: the rewrite happens
when a file is first served and again when it changes on disk.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

VERSIONED = re.compile(r"""(["'])/static/([A-Za-z0-9_\-./]+\.(?:js|css))\1""")
REWRITTEN = (".html", ".js", ".css")
IMMUTABLE = "public, max-age=31536000, immutable"
SECURITY_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    version: str
    content_type: str
    mtime_ns: int


class Assets:
    """The files of one folder as served, with their versions (cached until a file changes)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[str, Asset] = {}

    def _path(self, name: str) -> Path | None:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def get(self, name: str, _seen: frozenset[str] = frozenset()) -> Asset | None:
        """The file `name` as served, or None when there is no such file under the root."""
        path = self._path(name)
        if path is None:
            return None
        mtime = path.stat().st_mtime_ns
        cached = self._cache.get(name)
        if (cached is not None and cached.mtime_ns == mtime and not _seen
                and all(self._current(dep) for dep in self._references(cached.body))):
            return cached
        raw = path.read_bytes()
        body = raw
        if path.suffix in REWRITTEN and name not in _seen:
            body = self._rewrite(raw, _seen | {name})
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            content_type = "text/javascript"
        asset = Asset(body, hashlib.sha256(body).hexdigest()[:12], content_type, mtime)
        self._cache[name] = asset
        return asset

    def _references(self, body: bytes) -> list[tuple[str, str]]:
        """(name, version) of each versioned reference in an already rewritten body."""
        text = body.decode("utf-8", errors="replace")
        return re.findall(r"/static/([A-Za-z0-9_\-./]+\.(?:js|css))\?v=([0-9a-f]{12})", text)

    def _current(self, reference: tuple[str, str]) -> bool:
        name, version = reference
        asset = self.get(name)
        return asset is not None and asset.version == version

    def _rewrite(self, raw: bytes, seen: frozenset[str]) -> bytes:
        text = raw.decode("utf-8")

        def versioned(match: re.Match[str]) -> str:
            quote, name = match.group(1), match.group(2)
            asset = self.get(name, seen) if name not in seen else None
            if asset is None:
                return match.group(0)
            return f"{quote}/static/{name}?v={asset.version}{quote}"

        return VERSIONED.sub(versioned, text).encode("utf-8")

    def response(self, name: str, version: str | None, *, page: bool = False) -> web.Response:
        """The file as a response: immutable when asked for by its current version, else
        revalidated; pages (HTML) are never stored (they carry invitation tokens)."""
        asset = self.get(name)
        if asset is None:
            raise web.HTTPNotFound()
        if page or asset.content_type == "text/html":
            cache = "no-store"
        elif version == asset.version:
            cache = IMMUTABLE
        else:
            cache = "no-cache"
        headers = {"Cache-Control": cache, "ETag": f'"{asset.version}"', **SECURITY_HEADERS}
        return web.Response(body=asset.body, content_type=asset.content_type,
                            charset="utf-8" if asset.content_type.startswith("text/") else None,
                            headers=headers)
