"""A real headless Chromium (Debian's, driven by Playwright) for the H5 pages.

Skips only when Playwright (the `e2e` extra) is not installed; CI installs it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install -e '.[e2e]'")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
]


@asynccontextmanager
async def chromium_context(args: Sequence[str] = (), **options: Any) -> AsyncIterator[Any]:
    """A fresh Chromium profile with the flags above plus `args` (e.g. a customer's fake camera:
    `--use-file-for-fake-video-capture=x.y4m`); `options` go to Playwright's context."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    profile = tempfile.mkdtemp(prefix="chromium-")
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=[*FLAGS, *args], headless=True, locale="zh-CN",
            **options,
        )
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


# A phone (the customer's pages are phone-first).
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
                         "has_touch": True}


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[object]:
    """A phone-sized browser."""
    async with chromium_context(**PHONE) as context:
        yield context


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
