"""On-disk cache of rendered speech, keyed by sha256(engine, voice, rate, text) (R-23).

Each entry is a directory `<root>/<key[:2]>/<key>/` holding `audio.wav` (48 kHz mono 16-bit,
what the call plays), `audio.opus` (the archive copy) and `meta.json` (engine, voice, text,
duration, sentence marks, file hashes). An entry is written into a temporary directory and
renamed into place, so a reader never sees half an entry and two jobs rendering the same text at
once both end with one valid entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from media.tts.audio import opus_bytes, wav_bytes
from media.tts.chain import EngineAttempt, SentenceMark, SpeechResult

WAV_NAME = "audio.wav"
OPUS_NAME = "audio.opus"
META_NAME = "meta.json"


def cache_key(engine: str, voice: str, rate: float, text: str) -> str:
    """The hex sha256 that names a rendering of `text` by `engine` with `voice` at `rate`."""
    material = json.dumps([engine, voice, f"{rate:.3f}", text], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedSpeech:
    """A cache entry: file paths and what was recorded about the rendering."""

    key: str
    wav_path: Path
    opus_path: Path
    engine: str
    voice: str
    rate: float
    text: str
    duration_seconds: float
    sample_rate: int
    marks: list[SentenceMark]
    wav_sha256: str
    opus_sha256: str
    attempts: list[EngineAttempt]
    created_at: str


class SpeechCache:
    """The cache directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> CachedSpeech | None:
        """The entry for `key`, or None if absent or incomplete."""
        directory = self.entry_dir(key)
        try:
            meta = json.loads((directory / META_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        wav, opus = directory / WAV_NAME, directory / OPUS_NAME
        if not (wav.is_file() and opus.is_file()):
            return None
        return _entry(key, wav, opus, meta)

    def put(self, result: SpeechResult) -> CachedSpeech:
        """Store `result` under the key of the engine and voice that actually produced it."""
        key = cache_key(result.engine, result.voice, result.rate, result.text)
        wav = wav_bytes(result.audio)
        opus = opus_bytes(result.audio)
        meta: dict[str, Any] = {
            "key": key,
            "engine": result.engine,
            "voice": result.voice,
            "rate": result.rate,
            "text": result.text,
            "duration_seconds": result.duration_seconds,
            "sample_rate": result.audio.sample_rate,
            "marks": [asdict(mark) for mark in result.marks],
            "wav_sha256": hashlib.sha256(wav).hexdigest(),
            "opus_sha256": hashlib.sha256(opus).hexdigest(),
            "attempts": [asdict(attempt) for attempt in result.attempts],
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        try:
            (staging / WAV_NAME).write_bytes(wav)
            (staging / OPUS_NAME).write_bytes(opus)
            (staging / META_NAME).write_text(
                json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8"
            )
            try:
                os.rename(staging, final)
            except OSError:
                if self.get(key) is None:  # not a concurrent writer's entry: a stale, broken one
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        entry = self.get(key)
        if entry is None:
            raise OSError(f"cache entry {final} could not be written")
        return entry


def _entry(key: str, wav: Path, opus: Path, meta: dict[str, Any]) -> CachedSpeech:
    return CachedSpeech(
        key=key,
        wav_path=wav,
        opus_path=opus,
        engine=meta["engine"],
        voice=meta["voice"],
        rate=float(meta["rate"]),
        text=meta["text"],
        duration_seconds=float(meta["duration_seconds"]),
        sample_rate=int(meta["sample_rate"]),
        marks=[SentenceMark(**mark) for mark in meta["marks"]],
        wav_sha256=meta["wav_sha256"],
        opus_sha256=meta["opus_sha256"],
        attempts=[EngineAttempt(**attempt) for attempt in meta.get("attempts", [])],
        created_at=meta["created_at"],
    )
