"""Fixtures for the QA, archive, insurer and reporting tests: real media made once per run,
the Silero voice activity detector, and a desktop-sized headless Chromium for the pages."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from media.voice.vad import SileroVad, VoiceActivityDetector, silero_model_path
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
    """A desktop-sized browser for the inspectors' pages."""
    pytest.importorskip("playwright.async_api", reason="pip install -e '.[e2e]'")
    from tests.h5.conftest import chromium_context

    async with chromium_context(viewport={"width": 1360, "height": 900}) as context:
        yield context


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
