"""Pre-render the speech of a script's steps into the cache, with progress, before it is needed.

Run on publish for the steps that need no order value (`scripts_library.render.
static_speech_steps`) and, as a background job, for a session's rendered steps before the call;
the second run finds the static steps cached. The report gives, per step, the audio files and
the hash the session stores for what the customer heard (R-23).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from media.tts.base import TtsError
from media.tts.cache import CachedSpeech, SpeechCache, cache_key
from media.tts.chain import AllEnginesFailed, EngineAttempt, EngineChain
from media.tts.registry import EngineSpec

if TYPE_CHECKING:
    from storage import ObjectStore

_UNFILLED = re.compile(r"\{[a-z][a-z0-9_]*\}")


class SpeakableStep(Protocol):
    """What prerender needs of a step (e.g. `scripts_library.render.RenderedStep`)."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def speaker(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PrerenderedStep:
    """The cached speech of one step."""

    step_id: str
    cache_hit: bool
    speech: CachedSpeech

    @property
    def audio_sha256(self) -> str:
        """Hash of the WAV played in the call: what the session records (R-23)."""
        return self.speech.wav_sha256


@dataclass(frozen=True, slots=True)
class PrerenderProgress:
    """Reported after each step; `done` of `total` steps finished."""

    done: int
    total: int
    step_id: str
    cache_hit: bool
    engine: str


@dataclass(slots=True)
class PrerenderReport:
    """What a prerender run did."""

    steps: list[PrerenderedStep] = field(default_factory=list)
    skipped_step_ids: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def cache_hits(self) -> int:
        return sum(step.cache_hit for step in self.steps)

    @property
    def rendered(self) -> int:
        return sum(not step.cache_hit for step in self.steps)

    @property
    def audio_seconds(self) -> float:
        return sum(step.speech.duration_seconds for step in self.steps)


class PrerenderFailed(TtsError):
    """No engine could speak one step; the job stops and says which step and why."""

    def __init__(self, step_id: str, cause: AllEnginesFailed) -> None:
        self.step_id = step_id
        self.attempts: list[EngineAttempt] = cause.attempts
        super().__init__(f"step {step_id}: {cause}")


ProgressCallback = Callable[[PrerenderProgress], Awaitable[None] | None]


async def prerender(
    steps: Iterable[SpeakableStep],
    engine_chain: EngineChain | Sequence[str | EngineSpec],
    cache_dir: str | Path,
    progress_callback: ProgressCallback | None = None,
    *,
    concurrency: int = 1,
    store: ObjectStore | None = None,
) -> PrerenderReport:
    """Render the speech of every TTS step into `cache_dir`; agent-spoken steps are skipped.

    A step whose text still holds a `{variable}` is refused (`ValueError`) before anything is
    rendered: the audio must never read a placeholder aloud. A cached rendering by any engine of
    the chain is reused before any engine is asked, so a warm run never waits on an unreachable
    online engine and a re-published text keeps the audio it already had. With `store` (the
    evidence store every node shares) the cache reads through it and publishes what it renders
    there, so a text is rendered once in the whole cluster.
    """
    started = time.perf_counter()
    chain = (
        engine_chain
        if isinstance(engine_chain, EngineChain)
        else EngineChain.from_config(engine_chain)
    )
    cache = SpeechCache(cache_dir, store)
    report = PrerenderReport()
    spoken: list[SpeakableStep] = []
    for step in steps:
        if str(step.speaker) != "tts":
            report.skipped_step_ids.append(step.id)
            continue
        unfilled = _UNFILLED.findall(step.text)
        if unfilled:
            raise ValueError(f"step {step.id} still has unfilled variables: {', '.join(unfilled)}")
        spoken.append(step)

    total = len(spoken)
    results: dict[int, PrerenderedStep] = {}
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(index: int, step: SpeakableStep) -> None:
        async with semaphore:
            result = await _render_step(step, chain, cache)
        results[index] = result
        if progress_callback is not None:
            outcome = progress_callback(
                PrerenderProgress(
                    len(results), total, step.id, result.cache_hit, result.speech.engine
                )
            )
            if inspect.isawaitable(outcome):
                await outcome

    tasks = [asyncio.create_task(one(index, step)) for index, step in enumerate(spoken)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # gather leaves the other steps running after a failure; a failed job stops whole.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    report.steps = [results[index] for index in range(total)]
    report.elapsed_seconds = time.perf_counter() - started
    return report


async def _render_step(
    step: SpeakableStep, chain: EngineChain, cache: SpeechCache
) -> PrerenderedStep:
    for link in chain.links:
        cached = await cache.fetch(cache_key(link.name, link.voice, chain.rate, step.text))
        if cached is not None:
            return PrerenderedStep(step.id, True, cached)
    try:
        result = await chain.speak(step.text)
    except AllEnginesFailed as error:
        raise PrerenderFailed(step.id, error) from error
    stored = await cache.store_result(result)
    return PrerenderedStep(step.id, False, stored)
