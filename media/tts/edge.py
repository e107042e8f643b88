"""edge-tts engine: Microsoft's online neural voices, the production default (R-23).

Offline, edge-tts 7.x does not raise its own `EdgeTTSException`: aiohttp raises
`ClientConnectorDNSError` at once, and on a network that drops packets silently it can hang.
So every call runs under `asyncio.wait_for` and any exception becomes a `TtsError`, letting the
chain fall back to an offline engine.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol, cast

from media.tts.audio import decode
from media.tts.base import PcmAudio, TtsError


class _Communicate(Protocol):
    def stream(self) -> AsyncIterator[Mapping[str, Any]]: ...


CommunicateFactory = Callable[..., _Communicate]


class EdgeTTS:
    """Neural Mandarin voices through edge-tts (needs the network)."""

    name = "edge"
    default_voice = "zh-CN-XiaoxiaoNeural"

    def __init__(
        self,
        timeout_seconds: float = 20.0,
        connect_timeout_seconds: int = 5,
        receive_timeout_seconds: int = 15,
        communicate_factory: CommunicateFactory | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self.receive_timeout_seconds = receive_timeout_seconds
        self._factory = communicate_factory

    def unavailable_reason(self) -> str | None:
        if self._factory is None and importlib.util.find_spec("edge_tts") is None:
            return "Python package edge-tts is not installed"
        return None

    def _communicate(self, text: str, voice: str, rate: float) -> _Communicate:
        factory = self._factory
        if factory is None:
            import edge_tts  # imported here: the package is optional for offline deployments

            factory = cast(CommunicateFactory, edge_tts.Communicate)
        return factory(
            text,
            voice,
            rate=f"{round((rate - 1.0) * 100):+d}%",
            connect_timeout=self.connect_timeout_seconds,
            receive_timeout=self.receive_timeout_seconds,
        )

    async def synthesize(self, text: str, *, voice: str, rate: float) -> PcmAudio:
        async def collect() -> bytes:
            communicate = self._communicate(text, voice, rate)
            chunks = [
                chunk["data"]
                async for chunk in communicate.stream()
                if chunk.get("type") == "audio" and chunk.get("data")
            ]
            return b"".join(chunks)

        try:
            mp3 = await asyncio.wait_for(collect(), self.timeout_seconds)
        except TimeoutError:
            raise TtsError(f"edge-tts gave no answer within {self.timeout_seconds} s") from None
        except Exception as error:  # aiohttp, edge-tts and SSL errors alike mean "fall back"
            raise TtsError(f"edge-tts failed: {type(error).__name__}: {error}") from error
        if not mp3:
            raise TtsError("edge-tts returned no audio")
        try:
            return await asyncio.to_thread(decode, mp3, 24_000)
        except ValueError as error:
            raise TtsError(f"edge-tts audio unreadable: {error}") from error
