"""Voice activity on 16 kHz mono audio (R-24): did the customer speak when an answer was due
(QA, after the call), was the agent heard reading a step (the live call).

Two engines behind one small interface, on 16 kHz mono float32 samples:

* ``silero`` — Silero VAD's ONNX model as shipped in the ``silero-vad`` wheel, run with
  onnxruntime directly. The wheel's Python code imports torch, so it is installed with
  ``--no-deps`` and only its model file is used: the "sequence" export takes a whole block of
  32 ms frames per call, so an hour of audio costs seconds, not a Python loop per frame.
* ``energy`` — a documented fallback when the model is not installed: 30 ms frames whose level
  is well above the track's own noise floor. It cannot tell speech from music or a tone.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)
RATE = 16_000
Samples = NDArray[np.float32]
Interval = tuple[int, int]  # milliseconds, start inclusive, end exclusive


class VoiceActivityDetector(Protocol):
    name: str

    def speech(self, samples: Samples) -> list[Interval]:
        """The stretches of speech in `samples` (16 kHz mono), in ms from the first sample."""
        ...


def _merge(intervals: list[Interval], min_gap_ms: int, min_len_ms: int) -> list[Interval]:
    merged: list[list[int]] = []
    for start, end in intervals:
        if merged and start - merged[-1][1] <= min_gap_ms:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged if b - a >= min_len_ms]


def _runs(active: NDArray[np.bool_], frame_ms: float) -> list[Interval]:
    if not active.size:
        return []
    padded = np.concatenate(([False], active, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(round(a * frame_ms), round(b * frame_ms)) for a, b in zip(edges[::2], edges[1::2],
                                                                         strict=True)]


def silero_model_path() -> Path | None:
    """The sequence ONNX model inside the installed silero-vad wheel (without importing it:
    its package imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "silero_vad_16k_sequence.onnx"
        if path.exists():
            return path
    return None


class SileroVad:
    name = "silero-vad-onnx"
    FRAME = 512  # 32 ms at 16 kHz
    CONTEXT = 64
    BLOCK = 512  # frames per ONNX call (16 s)

    def __init__(self, model_path: Path, threshold: float = 0.5) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The checks run beside the web process and the call hub: one thread each.
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self.threshold = threshold
        self.negative_threshold = max(threshold - 0.15, 0.01)

    def probabilities(self, samples: Samples) -> NDArray[np.float32]:
        """Speech probability of each 32 ms frame of `samples` (state from silence)."""
        return self.stream().feed(samples, final=True)

    def stream(self) -> SileroStream:
        """A detector for audio that arrives in pieces (the live call): the model's state and
        the partial last frame carry over from one piece to the next."""
        return SileroStream(self)

    def run(self, frames: NDArray[np.float32], contexts: NDArray[np.float32],
            hidden: NDArray[np.float32], cell: NDArray[np.float32],
            ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        probs, hidden, cell = self._session.run(
            ["speech_probs", "hn", "cn"],
            {"input": np.concatenate((contexts, frames), axis=1), "h": hidden, "c": cell},
        )
        return np.asarray(probs, dtype=np.float32).reshape(-1), hidden, cell

    def speech(self, samples: Samples) -> list[Interval]:
        probs = self.probabilities(samples)
        # Hysteresis: speech starts above the threshold and ends below the lower one.
        active = np.zeros(probs.size, dtype=bool)
        on = False
        for i, p in enumerate(probs):
            on = p >= self.negative_threshold if on else p >= self.threshold
            active[i] = on
        frame_ms = self.FRAME * 1000 / RATE
        return _merge(_runs(active, frame_ms), min_gap_ms=100, min_len_ms=90)


class SileroStream:
    """Silero VAD over a stream of 16 kHz pieces: `feed` returns the probabilities of the whole
    frames completed so far (a partial frame waits for the next piece, or `final=True` pads
    it)."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.hidden = np.zeros((1, 1, 128), dtype=np.float32)
        self.cell = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(SileroVad.CONTEXT, dtype=np.float32)
        self.rest = np.zeros(0, dtype=np.float32)
        self.frames = 0  # frames decided so far (frame i starts at sample i * FRAME)

    def feed(self, samples: Samples, final: bool = False) -> NDArray[np.float32]:
        frame = SileroVad.FRAME
        data = np.concatenate((self.rest, samples.astype(np.float32, copy=False)))
        count = data.size // frame
        if final and data.size % frame:
            count += 1
        out: list[NDArray[np.float32]] = []
        for first in range(0, count, SileroVad.BLOCK):
            n = min(SileroVad.BLOCK, count - first)
            frames = np.zeros((n, frame), dtype=np.float32)
            chunk = data[first * frame:(first + n) * frame]
            frames.reshape(-1)[:chunk.size] = chunk
            contexts = np.empty((n, SileroVad.CONTEXT), dtype=np.float32)
            contexts[0] = self.context
            contexts[1:] = frames[:-1, -SileroVad.CONTEXT:]
            self.context = frames[-1, -SileroVad.CONTEXT:].copy()
            probs, self.hidden, self.cell = self.vad.run(frames, contexts, self.hidden,
                                                         self.cell)
            out.append(probs)
        self.rest = data[count * frame:] if not final else np.zeros(0, dtype=np.float32)
        self.frames += count
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class EnergyVad:
    name = "energy"
    FRAME = 480  # 30 ms

    def __init__(self, margin_db: float = 15.0, floor_dbfs: float = -50.0) -> None:
        self.margin_db = margin_db
        self.floor_dbfs = floor_dbfs

    def speech(self, samples: Samples) -> list[Interval]:
        n = samples.size // self.FRAME
        if n == 0:
            return []
        frames = samples[: n * self.FRAME].reshape(n, self.FRAME).astype(np.float64)
        rms = np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-9
        level = 20 * np.log10(rms)
        noise = float(np.percentile(level, 20))
        threshold = max(noise + self.margin_db, self.floor_dbfs)
        return _merge(_runs(level > threshold, self.FRAME * 1000 / RATE), 150, 120)


def load_vad(engine: str) -> VoiceActivityDetector:
    """The configured engine; the energy fallback (logged) when Silero's model is missing."""
    if engine == "silero":
        path = silero_model_path()
        if path is not None:
            return SileroVad(path)
        log.warning("silero-vad is not installed (pip install --no-deps silero-vad); "
                    "falling back to the energy detector")
        return EnergyVad()
    if engine == "energy":
        return EnergyVad()
    raise ValueError(f"unknown VAD engine {engine!r}")


def dbfs(samples: Samples) -> float:
    if not samples.size:
        return -math.inf
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def voiced_ms(vad: VoiceActivityDetector, samples: Samples) -> int:
    """How many milliseconds of `samples` (16 kHz mono) are speech."""
    return sum(end - start for start, end in vad.speech(samples))
