"""Fixtures for the call hub tests: synthetic pre-encoded media for the two parties, WAV clips,
and a hub on loopback whose events can be awaited. Every call is a real aiortc peer connection
(ICE, DTLS-SRTP, SCTP) between in-process Python clients and the hub."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
import pytest
import pytest_asyncio

from media.call import CallHub, CallHubConfig, Role
from media.call.client import CallClient
from media.recording.packets import EncodedPacket
from testing.call_media import EncodedMedia, PrerecordedTrack, write_test_media

CUSTOMER_RGB = (220, 30, 30)
AGENT_RGB = (30, 30, 220)
CUSTOMER_TONE = 440.0
AGENT_TONE = 660.0
SESSION = "s-test-1"

T = TypeVar("T")


@pytest.fixture(scope="session")
def party_media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[Role, Path]:
    """4 s of 320×240@15 VP8 (a key frame each second) + Opus per party, encoded once."""
    folder = tmp_path_factory.mktemp("media")
    parties: tuple[tuple[Role, tuple[int, int, int], float], ...] = (
        ("customer", CUSTOMER_RGB, CUSTOMER_TONE),
        ("agent", AGENT_RGB, AGENT_TONE),
    )
    return {
        role: write_test_media(
            folder / f"{role}.webm",
            seconds=4,
            size=(320, 240),
            rgb=rgb,
            tone_hz=tone,
            keyframe_interval=15,
            video_bitrate=300_000,
        )
        for role, rgb, tone in parties
    }


@pytest.fixture(scope="session")
def party_media(party_media_files: dict[Role, Path]) -> dict[Role, EncodedMedia]:
    return {role: EncodedMedia.load(path) for role, path in party_media_files.items()}


def write_wav(path: Path, seconds: float, tone_hz: float) -> Path:
    """A 48 kHz mono 16-bit clip, the format the TTS engines deliver."""
    t = np.arange(round(seconds * 48_000)) / 48_000
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes((np.sin(2 * np.pi * tone_hz * t) * 10_000).astype("<i2").tobytes())
    return path


@dataclass
class Events:
    """Everything the hub reported, with a way to wait for a particular event."""

    items: list[Any] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: Any) -> None:
        self.items.append(event)
        self.changed.set()

    def of(self, kind: type[T]) -> list[T]:
        return [item for item in self.items if isinstance(item, kind)]

    async def wait_for(
        self, kind: type[T], predicate: Callable[[T], bool] = lambda _: True, seconds: float = 15
    ) -> T:
        async def find() -> T:
            while True:
                for item in self.of(kind):
                    if predicate(item):
                        return item
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(find(), seconds)


@dataclass
class CallRig:
    hub: CallHub
    events: Events
    storage: Path
    media: dict[Role, EncodedMedia]
    clients: list[CallClient] = field(default_factory=list)

    async def join(
        self, role: Role, session_id: str = SESSION, *, answer_pings: bool = True
    ) -> CallClient:
        media = self.media[role]
        client = CallClient(
            audio=PrerecordedTrack(media, "audio"),
            video=PrerecordedTrack(media, "video"),
            keep_packets=True,
            answer_pings=answer_pings,
        )
        self.clients.append(client)

        async def signal(sdp: str, type_: str) -> tuple[str, str]:
            return await self.hub.join(session_id, role, sdp, type_)

        await client.connect(signal)
        await client.wait_open()
        return client


@pytest_asyncio.fixture
async def make_rig(
    tmp_path: Path, party_media: dict[Role, EncodedMedia]
) -> AsyncIterator[Callable[..., CallRig]]:
    """Builds hubs on loopback with short keep-alive and segment times; closes them after."""
    rigs: list[CallRig] = []

    def build(**overrides: Any) -> CallRig:
        settings: dict[str, Any] = {
            "storage_root": tmp_path / "recordings",
            "segment_seconds": 60.0,
            "include_loopback": True,
            "keepalive_interval": 0.3,
            "keepalive_timeout": 1.5,
            "connect_timeout": 10.0,
        } | overrides
        events = Events()
        hub = CallHub(
            CallHubConfig(**settings),
            on_segment=events.add,
            on_clip_finished=events.add,
            on_party_lost=events.add,
            on_party_connected=events.add,
            on_message=events.add,
        )
        rig = CallRig(hub, events, settings["storage_root"], party_media)
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        await rig.hub.shutdown()
        for client in rig.clients:
            await client.close()


def decode_video(packets: list[EncodedPacket]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("vp8", "r")
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames += decoder.decode(av.Packet(packet.data))  # type: ignore[arg-type]
    return frames


def decode_audio(packets: list[EncodedPacket]) -> np.ndarray:
    """Mono float samples of Opus packets."""
    decoder = av.CodecContext.create("opus", "r")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=48_000)
    chunks = []
    for packet in packets:
        for frame in decoder.decode(av.Packet(packet.data)):
            for mono in resampler.resample(frame):  # type: ignore[arg-type]
                chunks.append(mono.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0)


def dominant_frequency(samples: np.ndarray, rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def corner_colour(frame: av.VideoFrame) -> tuple[int, int, int]:
    """Mean RGB of the flat top-left corner that identifies the sending party."""
    picture = frame.to_ndarray(format="rgb24")
    height, width = picture.shape[:2]
    corner = picture[height // 8 : height // 3, width // 8 : width // 3]
    red, green, blue = corner.reshape(-1, 3).mean(axis=0)
    return round(red), round(green), round(blue)


AGENT_WORDS = ("nin2 hao3, wo3 shi4 ning2 bo1 fen1 hang2 de5 xiao1 shou4 ren2 yuan2, "
               "wo3 de5 zhi2 ye4 zheng4 hao4 ma3 shi4 yi1 er4 san1 si4")


def agent_voice_wav(folder: Path) -> Path:
    """The agent reading aloud (espeak-ng, Mandarin) as a WAV: a browser's fake microphone
    loops it."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    voice = folder / "voice.wav"
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-s", "160", "-w", str(voice),
                    AGENT_WORDS], check=True, capture_output=True)
    return voice


def speaking_media(folder: Path, seconds: float = 8.0) -> Path:
    """A party whose microphone carries speech (espeak-ng, Mandarin), looped: what the agent
    sends while reading a step aloud (voice activity detection must hear it, R-24)."""
    voice = agent_voice_wav(folder)
    return write_test_media(folder / "speaking.webm", seconds=seconds, size=(320, 240),
                            keyframe_interval=15, video_bitrate=300_000, rgb=AGENT_RGB,
                            voice=voice)
