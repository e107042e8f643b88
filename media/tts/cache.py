"""On-disk cache of rendered speech, keyed by sha256(engine, voice, rate, text) (R-23).

Each entry is a directory `<root>/<key[:2]>/<key>/` holding `audio.wav` (48 kHz mono 16-bit,
what the call plays), `audio.opus` (the archive copy) and `meta.json` (engine, voice, text,
duration, sentence marks, file hashes). An entry is written into a temporary directory and
renamed into place, so a reader never sees half an entry and two jobs rendering the same text at
once both end with one valid entry.

With an object store (`storage`, shared by every node) the folder is a read-through cache of
the store's ``tts-cache/<key[:2]>/<key>/`` objects: a rendering is published there once made
(`store_result`; `meta.json` last, so an entry with its meta is whole), and a node that misses
an entry fetches it (`fetch`) before anything renders it again — rendered once anywhere, played
anywhere, while the call hub keeps playing a local WAV file. These objects are a cache, not
evidence: no retention lock. When two nodes render the same key at once the first published
entry wins and the other node takes it over (the session pins the hash of what it will play,
and `workflow.media_events.clip_for` refuses a clip whose hash differs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.tts.audio import opus_bytes, wav_bytes
from media.tts.chain import EngineAttempt, SentenceMark, SpeechResult

if TYPE_CHECKING:
    from storage import ObjectStore

log = logging.getLogger(__name__)

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
    """The cache directory, read through from `store` when one is given."""

    def __init__(self, root: str | Path, store: ObjectStore | None = None,
                 prefix: str = "tts-cache") -> None:
        self.root = Path(root)
        self.store = store
        self.prefix = prefix

    def object_key(self, key: str, name: str) -> str:
        return f"{self.prefix}/{key[:2]}/{key}/{name}"

    async def fetch(self, key: str) -> CachedSpeech | None:
        """The entry from the local folder, else from the store (copied into the folder,
        hashes checked); None when neither has a whole entry."""
        entry = self.get(key)
        if entry is not None or self.store is None:
            return entry
        return await self.store.run(self._fetch_sync, key)

    def _fetch_sync(self, key: str) -> CachedSpeech | None:
        from storage import ObjectMissing

        assert self.store is not None
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        try:
            try:
                meta = json.loads(self.store.get_bytes_sync(self.object_key(key, META_NAME)))
                wav = self.store.download_sync(self.object_key(key, WAV_NAME),
                                               staging / WAV_NAME)
                opus = self.store.download_sync(self.object_key(key, OPUS_NAME),
                                                staging / OPUS_NAME)
            except ObjectMissing:
                return None
            if (wav.sha256, opus.sha256) != (meta.get("wav_sha256"), meta.get("opus_sha256")):
                log.error("speech %s in the store does not match its meta.json", key)
                return None
            (staging / META_NAME).write_text(json.dumps(meta, ensure_ascii=False, indent=2),
                                             encoding="utf-8")
            self._install(staging, final, key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(key)

    async def store_result(self, result: SpeechResult) -> CachedSpeech:
        """`put`, then the entry published to the store (when there is one). Another node's
        entry published first wins: it replaces this one here."""
        entry = await asyncio.to_thread(self.put, result)
        if self.store is None:
            return entry
        return await self.store.run(self._publish_sync, entry)

    def _publish_sync(self, entry: CachedSpeech) -> CachedSpeech:
        from storage import ObjectExists

        assert self.store is not None
        directory = entry.wav_path.parent
        try:
            for name in (WAV_NAME, OPUS_NAME, META_NAME):  # meta last: it marks a whole entry
                self.store.put_file_sync(self.object_key(entry.key, name), directory / name,
                                         retain=False)
        except ObjectExists:
            log.info("speech %s was published by another node first; taking that one",
                     entry.key)
            shutil.rmtree(directory, ignore_errors=True)
            return self._fetch_sync(entry.key) or self._refetch_failed(entry)
        return entry

    def _refetch_failed(self, entry: CachedSpeech) -> CachedSpeech:
        raise OSError(f"speech {entry.key}: the store holds another rendering that cannot be "
                      f"read yet; render again later")

    def _install(self, staging: Path, final: Path, key: str) -> None:
        try:
            os.rename(staging, final)
        except OSError:
            if self.get(key) is None:  # not a concurrent writer's entry: a stale, broken one
                shutil.rmtree(final, ignore_errors=True)
                os.rename(staging, final)

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
            self._install(staging, final, key)
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
