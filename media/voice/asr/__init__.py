"""Speech recognition for spoken answers and after-call transcripts (R-24), offline.

    from media.voice.asr import AsrConfig, load_asr
    from media.voice.answers import classify

    recognizer = load_asr(AsrConfig())            # engine named by the config
    verdict = classify(recognizer, samples, "清楚")  # 16 kHz mono float32, one answer
    transcript = recognizer.transcribe(samples)   # after the call: segments with times

Engines implement `SpeechRecognizer` (base.py); which one runs is `AsrConfig.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from media.voice.asr.base import (
    RATE,
    AsrError,
    AsrUnavailable,
    Hearing,
    Samples,
    SpeechRecognizer,
    Transcript,
    TranscriptSegment,
)
from media.voice.asr.config import AsrConfig
from media.voice.asr.whisper import FasterWhisperRecognizer

ENGINES: Mapping[str, Callable[[AsrConfig], SpeechRecognizer]] = {
    "faster-whisper": FasterWhisperRecognizer,
}


def load_asr(config: AsrConfig | None = None, *, load: bool = True) -> SpeechRecognizer:
    """The configured engine, its model loaded unless `load` is False.

    Raises AsrUnavailable when it cannot run here (the caller falls back to answer buttons)."""
    config = config or AsrConfig()
    try:
        factory = ENGINES[config.engine]
    except KeyError:
        raise AsrUnavailable(f"unknown speech engine {config.engine!r}; known: "
                             f"{', '.join(ENGINES)}") from None
    recognizer = factory(config)
    if load:
        loader = getattr(recognizer, "load", None)
        if callable(loader):
            loader()
        else:
            reason = recognizer.unavailable_reason()
            if reason is not None:
                raise AsrUnavailable(reason)
    return recognizer


__all__ = [
    "ENGINES",
    "RATE",
    "AsrConfig",
    "AsrError",
    "AsrUnavailable",
    "FasterWhisperRecognizer",
    "Hearing",
    "Samples",
    "SpeechRecognizer",
    "Transcript",
    "TranscriptSegment",
    "load_asr",
]
