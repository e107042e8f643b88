"""Fixtures for the QA, archive, insurer and reporting tests: real media made once per run,
the Silero voice activity detector, and a desktop-sized headless Chromium for the pages."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from qa.vad import SileroVad, VoiceActivityDetector, silero_model_path
from tests.qa.simulate import MediaKit

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def media_kit(tmp_path_factory: pytest.TempPathFactory) -> MediaKit:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    return MediaKit.build(tmp_path_factory.mktemp("qa-media"))


@pytest.fixture(scope="session")
def vad() -> VoiceActivityDetector:
    path = silero_model_path()
    if path is None:
        pytest.fail("silero-vad is not installed (pip install --no-deps -r requirements/qa.txt)")
    return SileroVad(path)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[object]:
    playwright_api = pytest.importorskip("playwright.async_api",
                                         reason="pip install -e '.[e2e]'")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if shutil.which(chromium) is None:
        pytest.fail("Debian chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    profile = tempfile.mkdtemp(prefix="chromium-qa-")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            profile, executable_path=chromium, args=flags, headless=True,
            viewport={"width": 1360, "height": 900}, locale="zh-CN",
        )
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
