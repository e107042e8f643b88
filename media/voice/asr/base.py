"""The speech-recognition interface (R-24) and the values engines return.

One module per engine implements `SpeechRecognizer`; which engine runs is configuration
(`AsrConfig.engine`, `load_asr`), never an `if` in the workflow. Samples are 16 kHz mono float32
in [-1, 1], as media/call/listen.py decodes them and media/voice/vad.py reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

RATE = 16_000
Samples = NDArray[np.float32]


class AsrError(Exception):
    """The engine could not recognise this audio (bad input, engine failure)."""


class AsrUnavailable(AsrError):
    """The engine cannot run on this machine (package or model files missing)."""


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    """One stretch of recognised speech; times in seconds from the first sample."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcription of (possibly long) audio, for QA after the call."""

    segments: tuple[TranscriptSegment, ...]
    language: str
    audio_seconds: float
    engine: str
    seconds: float  # wall time

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)


@dataclass(frozen=True, slots=True, eq=False)
class Hearing:
    """What the engine heard in one short answer: its free transcription, and the engine's own
    state of that audio (e.g. Whisper's encoder output) so candidates can be scored against it
    afterwards without hearing it again."""

    text: str
    avg_logprob: float  # of the free transcription, per token
    no_speech_prob: float
    audio_seconds: float
    seconds: float  # wall time
    state: Any = field(default=None, repr=False)


@runtime_checkable
class SpeechRecognizer(Protocol):
    """A speech-to-text engine. Methods are blocking and CPU-bound: call them from a worker
    thread or process, never from the event loop."""

    name: str

    @property
    def version(self) -> str:
        """Engine, library and model versions, as they go into the evidence."""
        ...

    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else why not (cheap: loads nothing heavy)."""
        ...

    def transcribe(self, samples: Samples, *, prompt: str | None = None) -> Transcript:
        """Transcribe audio of any length (silence skipped), segments with times."""
        ...

    def hear(self, samples: Samples, *, prompt: str | None = None) -> Hearing:
        """Transcribe one short answer (≤ 30 s); `prompt` steers the transcription."""
        ...

    def score(self, hearing: Hearing, candidates: Sequence[str], *,
              prompt: str | None = None) -> dict[str, float]:
        """log P(candidate, then the end of the answer | the audio heard, `prompt` said before)
        for each candidate: a closed set scored against the audio. Engines that cannot score
        return {}."""
        ...
