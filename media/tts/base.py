"""The text-to-speech engine interface (R-23) and the audio value engines return.

One module per engine implements `TextToSpeech`; which engines run, and in what order, is
configuration (`registry.py`, `chain.py`), never an `if` in the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True, eq=False)
class PcmAudio:
    """Mono 16-bit PCM: the common currency between engines, cache and the call."""

    samples: Samples
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.dtype != np.int16 or self.samples.ndim != 1:
            raise ValueError("PcmAudio needs a one-dimensional int16 array")
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / self.sample_rate


class TtsError(Exception):
    """An engine could not speak this text now; the chain falls back to the next engine."""


class EngineUnavailable(TtsError):
    """An engine cannot run on this machine at all (package or binary missing)."""


@runtime_checkable
class TextToSpeech(Protocol):
    """A speech engine. `synthesize` speaks one sentence; it never blocks the event loop."""

    name: str
    default_voice: str

    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else why not (cheap: no synthesis, no network)."""
        ...

    async def synthesize(self, text: str, *, voice: str, rate: float) -> PcmAudio:
        """Speak `text` with `voice` at `rate` (1.0 = the engine's normal speed).

        Raises `TtsError` (or `EngineUnavailable`) on any failure, never a library's own error.
        """
        ...
