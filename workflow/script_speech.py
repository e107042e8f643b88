"""Pre-rendering a script's speech as background jobs (R-23), with progress in Redis.

On publish, the steps that need no order value are rendered into the TTS cache; when a session
is created, its own rendered steps are (the static ones come back as cache hits) and the
session's steps record the audio hash, engine and voice of what will be played.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from redis.asyncio import Redis

from media.tts.prerender import PrerenderedStep, PrerenderFailed, PrerenderProgress, prerender
from models.sales import ScriptVersion
from scripts_library.render import RenderedStep, static_speech_steps
from workflow.script_versions import document_of

if TYPE_CHECKING:
    from storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechSettings:
    engines: tuple[str, ...]
    cache_dir: Path
    # The shared object store the cache reads through and publishes to (storage/).
    store: ObjectStore | None = None


def audio_facts(step: PrerenderedStep) -> dict[str, Any]:
    speech = step.speech
    return {"sha256": speech.wav_sha256, "opus_sha256": speech.opus_sha256,
            "engine": speech.engine, "voice": speech.voice, "cache_key": speech.key,
            "duration_ms": round(speech.duration_seconds * 1000)}


def progress_key(kind: str, object_id: str) -> str:
    return f"prerender:{kind}:{object_id}"


class ProgressReporter:
    """Progress of one pre-render job, readable by the API while the job runs."""

    def __init__(self, redis: Redis, kind: str, object_id: str) -> None:
        self.redis, self.key = redis, progress_key(kind, object_id)
        self.cache_hits = 0

    async def set(self, **fields: Any) -> None:
        await self.redis.hset(self.key, mapping={k: json.dumps(v) for k, v in fields.items()})
        await self.redis.expire(self.key, 7 * 24 * 3600)

    async def __call__(self, progress: PrerenderProgress) -> None:
        self.cache_hits += progress.cache_hit
        await self.set(status="running", done=progress.done, total=progress.total,
                       cache_hits=self.cache_hits, last_step=progress.step_id)


async def read_progress(redis: Redis, kind: str, object_id: str) -> dict[str, Any]:
    raw: dict[bytes, bytes] = await redis.hgetall(progress_key(kind, object_id))  # type: ignore[misc,assignment]
    return {k.decode(): json.loads(v) for k, v in raw.items()}


async def render_steps(
    steps: list[RenderedStep], speech: SpeechSettings, reporter: ProgressReporter
) -> dict[str, dict[str, Any]]:
    await reporter.set(status="running", done=0, total=len(steps), cache_hits=0)
    try:
        report = await prerender(steps, list(speech.engines), speech.cache_dir, reporter,
                                 store=speech.store)
    except PrerenderFailed as exc:
        await reporter.set(status="failed", error=f"步骤 {exc.step_id} 无法生成语音")
        raise
    await reporter.set(status="done", done=len(report.steps), total=len(report.steps),
                       cache_hits=report.cache_hits,
                       elapsed_seconds=round(report.elapsed_seconds, 3))
    return {step.step_id: audio_facts(step) for step in report.steps}


async def prerender_script_version(
    version_id: int, speech: SpeechSettings, redis: Redis
) -> None:
    """The publish-time job: cache every static TTS step of the version."""
    version = await ScriptVersion.get(id=version_id)
    reporter = ProgressReporter(redis, "script", str(version_id))
    try:
        audio = await render_steps(static_speech_steps(document_of(version)), speech, reporter)
    except PrerenderFailed as exc:
        await ScriptVersion.filter(id=version_id).update(
            prerender_status="failed", prerender_error=str(exc))
        return
    await ScriptVersion.filter(id=version_id).update(audio=audio, prerender_status="done",
                                                     prerender_error="")


def rendered_steps(session_steps: list[dict[str, Any]]) -> list[RenderedStep]:
    return [RenderedStep.model_validate({k: step[k] for k in RenderedStep.model_fields
                                         if k in step})
            for step in session_steps]


async def prerender_session_speech(
    session_id: UUID, steps: list[dict[str, Any]], speech: SpeechSettings, redis: Redis
) -> dict[str, dict[str, Any]]:
    """Render a session's TTS steps; the caller stores the facts on the session."""
    reporter = ProgressReporter(redis, "session", str(session_id))
    return await render_steps(rendered_steps(steps), speech, reporter)
