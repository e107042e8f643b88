"""Cutting one spoken answer out of a live stream (R-24): the customer's audio arrives in short
pieces once a step's answer is open; Silero VAD (streamed, `media.voice.vad.SileroStream`)
marks speech, and an answer is complete when at least `min_speech_ms` of speech is followed by
`end_silence_ms` of silence (or it has lasted `max_ms`). The cut keeps `pad_ms` of audio on
each side, so the recogniser hears the first and last syllables whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from media.voice.vad import RATE, Samples, SileroStream, SileroVad

FRAME_MS = SileroVad.FRAME * 1000 / RATE  # 32 ms
# Speech found this soon after listening began was under way before it (a reply takes longer:
# bench.call under load cut a “我” 0.1–0.2 s in, heard as a no at P = 0.54).
CLIPPED_MS = 250


@dataclass(frozen=True)
class Utterance:
    """A spoken answer: its samples and where it lies, in ms from the start of listening."""

    samples: Samples
    start_ms: int
    end_ms: int
    speech_ms: int  # voiced time inside it
    # Speech began within CLIPPED_MS of listening: nobody answers that fast, so it was under
    # way before and its beginning (a 不?) may be missing.
    clipped: bool = False


class UtteranceCutter:
    """Feed the pieces as they come; `feed` returns the answer once it is complete."""

    def __init__(self, vad: SileroVad, *, threshold: float = 0.5, min_speech_ms: int = 250,
                 end_silence_ms: int = 700, pad_ms: int = 200, max_ms: int = 8000,
                 keep_ms: int = 30_000) -> None:
        self.stream: SileroStream = vad.stream()
        self.on_threshold = threshold
        self.off_threshold = max(threshold - 0.15, 0.01)
        self.min_speech = max(1, round(min_speech_ms / FRAME_MS))
        self.end_silence = max(1, round(end_silence_ms / FRAME_MS))
        self.pad = round(pad_ms * RATE / 1000)
        self.max_frames = round(max_ms / FRAME_MS)
        self.keep = round(keep_ms * RATE / 1000)
        self.audio = np.zeros(0, dtype=np.float32)
        self.offset = 0  # sample index of audio[0] since listening began
        self.frame = 0  # frames decided so far
        self.speaking = False
        self.first: int | None = None  # first speech frame of the answer being heard
        self.last = 0  # last speech frame
        self.voiced = 0  # speech frames in the answer being heard
        self.heard_speech = False  # any speech at all since listening began
        self.ready: list[Utterance] = []  # answers completed and not yet returned

    def feed(self, samples: Samples) -> Utterance | None:
        """Returns an answer completed by these samples (or by earlier ones, when one piece
        completed two), else None. Every frame of the piece is counted either way: returning
        at the first answer once left the rest uncounted, and the cuts after it slid earlier
        by that much — under load, when the listener joins waiting blocks into one, by
        seconds: the next “清楚” was cut as the silence and noise before it (issue 12)."""
        self.audio = np.concatenate((self.audio, samples.astype(np.float32, copy=False)))
        if self.audio.size > self.keep and self.first is None:
            drop = self.audio.size - self.keep
            self.audio = self.audio[drop:]
            self.offset += drop
        for p in self.stream.feed(samples):
            done = self._frame(float(p))
            self.frame += 1
            if done is not None:
                self.ready.append(done)
        return self.ready.pop(0) if self.ready else None

    def _frame(self, p: float) -> Utterance | None:
        self.speaking = p >= self.off_threshold if self.speaking else p >= self.on_threshold
        if self.speaking:
            self.heard_speech = True
            if self.first is None:
                self.first = self.frame
            self.last = self.frame
            self.voiced += 1
            if self.frame - self.first + 1 >= self.max_frames:
                return self._cut()
            return None
        if self.first is None:
            return None
        if self.frame - self.last >= self.end_silence:
            if self.voiced >= self.min_speech:
                return self._cut()
            self.first, self.voiced = None, 0  # a click or a breath: not an answer
        return None

    def _cut(self) -> Utterance:
        assert self.first is not None
        frame = SileroVad.FRAME
        start = max(self.first * frame - self.pad, self.offset)
        end = min((self.last + 1) * frame + self.pad, self.offset + self.audio.size)
        piece: NDArray[np.float32] = self.audio[start - self.offset:end - self.offset].copy()
        utterance = Utterance(piece, round(start * 1000 / RATE), round(end * 1000 / RATE),
                              round(self.voiced * FRAME_MS),
                              clipped=self.first * FRAME_MS < CLIPPED_MS)
        self.first, self.voiced = None, 0
        return utterance
