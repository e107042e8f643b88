"""Routes of the web front: the customer H5 pages, the agent console and their static files.

The pages are plain HTML + modern JavaScript (no build step), phone-first for customers and
friendly to WeChat's in-app browser; they talk to the JSON API and the live WebSocket only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff"}


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC / name, headers=NO_STORE)


async def customer_page(request: web.Request) -> web.FileResponse:
    # The invitation token stays in the path only until the page has exchanged it (the page
    # then replaces the URL); no-referrer keeps it out of any outgoing Referer header.
    return _page("customer.html")


async def console_page(request: web.Request) -> web.FileResponse:
    return _page("console.html")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/h5/invite/{token}", customer_page)
    app.router.add_get("/h5/session", customer_page)
    # Channel entries (bot/): WeChat web authorisation and signed bank-app deep links.
    app.router.add_get("/h5/wx/{ref}", customer_page)
    app.router.add_get("/h5/bank/{ref}", customer_page)
    app.router.add_get("/console", console_page)
    app.router.add_static("/static/", STATIC, append_version=True)
