"""Routes of the web front: the customer H5 pages, the staff pages and their static files.

The pages are plain HTML + modern JavaScript (no build step), phone-first for customers and
friendly to WeChat's in-app browser; they talk to the JSON API and the live WebSocket only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from h5.assets import Assets

STATIC = Path(__file__).with_name("static")
ASSETS = web.AppKey("h5_assets", Assets)


def _serve(request: web.Request, name: str, *, page: bool = False) -> web.Response:
    response = request.app[ASSETS].response(name, request.query.get("v"), page=page)
    if not page and request.headers.get("If-None-Match") == response.headers["ETag"]:
        return web.Response(status=304, headers={
            k: response.headers[k] for k in ("ETag", "Cache-Control")})
    return response


def _page(request: web.Request, name: str) -> web.Response:
    return _serve(request, name, page=True)


async def customer_page(request: web.Request) -> web.Response:
    # The invitation token stays in the path only until the page has exchanged it (the page
    # then replaces the URL); no-referrer keeps it out of any outgoing Referer header.
    return _page(request, "customer.html")


async def console_page(request: web.Request) -> web.Response:
    return _page(request, "console.html")


async def qa_workbench_page(request: web.Request) -> web.Response:
    return _page(request, "qa-workbench.html")


async def script_editor_page(request: web.Request) -> web.Response:
    return _page(request, "script-editor.html")


async def static_file(request: web.Request) -> web.Response:
    """A static file, its script and style references versioned (h5/assets.py)."""
    return _serve(request, request.match_info["name"])


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/h5/invite/{token}", customer_page)
    app.router.add_get("/h5/session", customer_page)
    # Re-entry with the agent's one-time code, without any link (issue 17 item 1).
    app.router.add_get("/h5/resume", customer_page)
    # Channel entries (bot/): WeChat web authorisation and signed bank-app deep links.
    app.router.add_get("/h5/wx/{ref}", customer_page)
    app.router.add_get("/h5/bank/{ref}", customer_page)
    app.router.add_get("/console", console_page)
    # Staff desktop pages (issue 17): the QA workbench and the product owners' script editor.
    app.router.add_get("/qa", qa_workbench_page)
    app.router.add_get("/script-editor", script_editor_page)
    app[ASSETS] = Assets(STATIC)
    app.router.add_get("/static/{name:[A-Za-z0-9_.-]+}", static_file)
