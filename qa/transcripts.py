"""The after-call transcript of a sealed session (issue 12 item 3; R-22, R-24, R-40, R-41): what
the customer and the agent said, line by line, on the recording clock.

It is derived data, not evidence: one JSON object beside the evidence,
``{session}/transcript/transcript.json`` (like the playback copy's sidecar; written replaceable
and without a retention lock, removed with the session's other derived objects when the session
is purged, R-42). Not a table: it is read whole (by the checks and the replay page), never
queried line by line, and it can always be made again from the sealed recordings.

The job (`transcribe_session`) runs in a niced child process (`qa.transcribe_host`), one at a
time per process: both parties' segments are decoded, only voice-activity stretches are
recognised (faster-whisper, `media.voice.asr`). It is idempotent: the object records the
recordings it was made from (`sources_sha256`), and a transcript of the same sources is not made
again. The QA checks wait for it (`ready_for_checks`): the after-call sweep queues the
transcript first and the job queues the checks when it is done; after
`transcript_wait_minutes` the checks run anyway and say the transcript is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from tortoise.expressions import Subquery

import media
from models.archive import Tombstone
from models.qa import QaCheckReport, ReportStatus
from models.sessions import Recording, RecordingSession, SessionState
from qa.playback import SEALED_STATES
from qa.settings import QaSettings
from qa.timeline import SessionTranscript
from storage import ObjectStore
from workflow.core import JobQueue, WorkflowDeps

log = logging.getLogger(__name__)
TRANSCRIPT_DIR = "transcript"
TRANSCRIPT_NAME = "transcript.json"
VERSION = 1
MAX_ATTEMPTS = 3
PARTIES = {"customer_av": "customer", "agent_av": "agent"}
# What the recogniser is told the conversation is about (Whisper's initial prompt): the domain's
# words, none of the forbidden ones (a prompt that names them makes them likelier to be heard).
DOMAIN_PROMPT = ("以下是保险销售远程双录的对话。销售人员讲解保险产品的保险责任、责任免除、"
                 "犹豫期、退保损失和现金价值，客户回答清楚、明白或同意。")
PROJECT_ROOT = Path(media.__file__).resolve().parents[1]


def transcript_key(session_id: UUID | str) -> str:
    return f"{session_id}/{TRANSCRIPT_DIR}/{TRANSCRIPT_NAME}"


@dataclass(frozen=True)
class Source:
    recording_id: int
    kind: str
    segment: int
    key: str
    sha256: str
    start_ms: int
    end_ms: int

    @property
    def party(self) -> str:
        return PARTIES[self.kind]


@dataclass(frozen=True)
class TranscriptOutcome:
    status: str  # made | unchanged | not_sealed | busy | failed | unavailable
    data: dict[str, Any] | None = None


async def read_transcript_data(store: ObjectStore, session_id: UUID | str
                               ) -> dict[str, Any] | None:
    try:
        raw = await store.get_bytes(transcript_key(session_id))
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("transcript of %s is unreadable; it will be made again", session_id)
        return None
    return data if isinstance(data, dict) else None


async def read_transcript(store: ObjectStore, session_id: UUID | str) -> SessionTranscript | None:
    """The stored transcript as the checks and the replay read it; None when there is none."""
    data = await read_transcript_data(store, session_id)
    return SessionTranscript.from_json(data) if data is not None else None


async def sources_of(session_id: UUID) -> list[Source] | None:
    """Both parties' recorded segments on the recording clock; None unless the session is
    sealed (the transcript is made of the sealed recording only)."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or not session.manifest or session.recording_started_at is None:
        return None
    t0 = session.recording_started_at
    rows = await Recording.filter(session_id=session_id, kind__in=list(PARTIES)).order_by(
        "kind", "segment")
    out = []
    for r in rows:
        start = (r.started_at - t0) // timedelta(milliseconds=1)
        end = (r.ended_at - t0) // timedelta(milliseconds=1) if r.ended_at else \
            start + int(r.duration_ms)
        out.append(Source(r.id, r.kind, r.segment, r.path, r.sha256, start, end))
    return out


def sources_digest(sources: list[Source]) -> str:
    text = json.dumps([[s.recording_id, s.kind, s.segment, s.sha256, s.start_ms]
                       for s in sources], separators=(",", ":"))
    return hashlib.sha256(f"v{VERSION}:{text}".encode()).hexdigest()


async def store_transcript(deps: WorkflowDeps, session_id: UUID, body: dict[str, Any],
                           sources: list[Source] | None = None) -> dict[str, Any]:
    """Writes the transcript object (replacing any earlier one) for the session's current
    sources. `body` holds `status` and, when done, `lines` (party, start_ms, end_ms, text …)."""
    sources = sources if sources is not None else await sources_of(session_id) or []
    data = {"version": VERSION, "session_id": str(session_id),
            "sources_sha256": sources_digest(sources),
            "made_at": deps.clock().astimezone(UTC).isoformat(), "lines": [], **body}
    await deps.storage.put_bytes(transcript_key(session_id),
                                 json.dumps(data, ensure_ascii=False, indent=1).encode(),
                                 replace=True, retain=False)
    return data


def finished(data: dict[str, Any] | None) -> bool:
    """A transcript the checks can use or that will not come: done, unavailable, or failed too
    often to try again."""
    if data is None:
        return False
    if data.get("status") == "failed":
        return int(data.get("attempts", 0)) >= MAX_ATTEMPTS
    return data.get("status") in ("done", "unavailable")


async def up_to_date(store: ObjectStore, session_id: UUID,
                     sources: list[Source]) -> dict[str, Any] | None:
    data = await read_transcript_data(store, session_id)
    if data is None or data.get("sources_sha256") != sources_digest(sources):
        return None
    return data if finished(data) else None


async def ready_for_checks(deps: WorkflowDeps, settings: QaSettings, session_id: UUID) -> bool:
    """Whether the QA checks of a sealed session may run now: the transcript is there (or will
    not come), transcripts are off, or the session has waited `transcript_wait_minutes`."""
    if not settings.transcript_enabled:
        return True
    if finished(await read_transcript_data(deps.storage, session_id)):
        return True
    session = await RecordingSession.get_or_none(id=session_id)
    sealed = session.sealed_at if session is not None else None
    waited = deps.clock() - sealed if sealed is not None else timedelta(0)
    return waited >= timedelta(minutes=settings.transcript_wait_minutes)


async def run_host(plan: dict[str, Any], limit_seconds: float) -> dict[str, Any]:
    """Runs `qa.transcribe_host` in a child process (niced by itself) and returns its result."""
    env = dict(os.environ)
    project = str(PROJECT_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qa.transcribe_host", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        async with asyncio.timeout(limit_seconds):
            stdout, stderr = await proc.communicate(json.dumps(plan).encode())
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"transcriber exited with {proc.returncode}: {' | '.join(tail)}")
    result = json.loads(stdout)
    if not isinstance(result, dict):
        raise RuntimeError("transcriber returned no object")
    return result


def host_plan(sources: list[tuple[Source, Path]], settings: QaSettings) -> dict[str, Any]:
    return {
        "segments": [{"party": s.party, "kind": s.kind, "recording_id": s.recording_id,
                      "segment": s.segment, "path": str(path), "sha256": s.sha256,
                      "start_ms": s.start_ms} for s, path in sources],
        "asr": {"threads": settings.transcript_threads, "transcribe_vad": False,
                **({"model_dir": str(settings.transcript_model_dir)}
                   if settings.transcript_model_dir else {}),
                **({"cache_dir": str(settings.model_cache_dir)}
                   if settings.model_cache_dir else {})},
        "vad": settings.vad_engine, "nice": settings.transcript_nice,
        "short_seconds": settings.transcript_short_seconds,
        "batch_seconds": settings.transcript_batch_seconds,
        "prompts": {"agent": DOMAIN_PROMPT},
    }


async def make_transcript(deps: WorkflowDeps, session_id: UUID, *, redis: Redis | None = None,
                          settings: QaSettings | None = None) -> TranscriptOutcome:
    """Makes (or confirms) the transcript of one sealed session. A failure is recorded in the
    object (`failed`, with its attempts) and raised, so the job is retried."""
    settings = settings or QaSettings()
    sources = await sources_of(session_id)
    if sources is None:
        return TranscriptOutcome("not_sealed")
    if (current := await up_to_date(deps.storage, session_id, sources)) is not None:
        return TranscriptOutcome("unchanged", current)
    lock = f"transcript:lock:{session_id}"
    if redis is not None and not await redis.set(
            lock, "1", nx=True, ex=int(settings.transcript_timeout_seconds) + 60):
        return TranscriptOutcome("busy")
    try:
        return await _make(deps, session_id, sources, settings)
    finally:
        if redis is not None:
            await redis.delete(lock)


async def _make(deps: WorkflowDeps, session_id: UUID, sources: list[Source],
                settings: QaSettings) -> TranscriptOutcome:
    previous = await read_transcript_data(deps.storage, session_id) or {}
    digest = sources_digest(sources)
    store = deps.storage
    try:
        async with contextlib.AsyncExitStack() as stack:
            local: list[tuple[Source, Path]] = []
            for s in sources:
                try:
                    local.append((s, await stack.enter_async_context(store.local_copy(s.key))))
                except FileNotFoundError:
                    local.append((s, Path("/nonexistent") / s.key))  # the host reports it
            result = await run_host(host_plan(local, settings),
                                    settings.transcript_timeout_seconds)
    except Exception as exc:
        attempts = int(previous.get("attempts", 0)) + 1 \
            if previous.get("sources_sha256") == digest else 1
        log.exception("transcript of %s failed (attempt %d)", session_id, attempts)
        data = await store_transcript(deps, session_id, {
            "status": "failed", "attempts": attempts,
            "reason": f"{type(exc).__name__}: {exc}"[:500]}, sources)
        if attempts >= MAX_ATTEMPTS:
            return TranscriptOutcome("failed", data)
        raise
    if "unavailable" in result:
        log.warning("transcript of %s: recogniser unavailable: %s", session_id,
                    result["unavailable"])
        data = await store_transcript(deps, session_id, {
            "status": "unavailable", "reason": str(result["unavailable"])[:500]}, sources)
        return TranscriptOutcome("unavailable", data)
    data = await store_transcript(deps, session_id, {"status": "done", "attempts": 1, **result},
                                  sources)
    speech_ms = sum(p.get("speech_ms", 0) for p in result.get("parties", {}).values())
    log.info("transcript of %s made: %d lines, %.1f s of speech, %.1f CPU s", session_id,
             len(result.get("lines", [])), speech_ms / 1000, result.get("cpu_seconds", 0.0))
    return TranscriptOutcome("made", data)


async def sessions_without_transcript(deps: WorkflowDeps, days: int, limit: int) -> list[UUID]:
    """Sealed sessions of the last `days` days whose transcript is missing or may be retried
    (newest first)."""
    since = deps.clock() - timedelta(days=days)
    purged = Subquery(Tombstone.all().values("session_id"))
    ids = await RecordingSession.filter(state__in=SEALED_STATES, sealed_at__gte=since).exclude(
        id__in=purged).order_by("-sealed_at").values_list("id", flat=True)
    missing: list[UUID] = []
    for sid in ids:
        if len(missing) >= limit:
            break
        if not finished(await read_transcript_data(deps.storage, str(sid))):
            missing.append(UUID(str(sid)))
    return missing


async def remove_purged_transcripts(deps: WorkflowDeps, days: int) -> int:
    """A transcript must not outlive its recording (R-42)."""
    since = deps.clock() - timedelta(days=days)
    removed = 0
    for sid in await Tombstone.filter(deleted_at__gte=since).values_list("session_id",
                                                                            flat=True):
        removed += bool(await deps.storage.delete(transcript_key(str(sid))))
    return removed


async def queue_transcript(redis: Redis, jobs: JobQueue, session_id: UUID,
                           settings: QaSettings) -> bool:
    """Queues the job once per timeout (the job is idempotent anyway)."""
    if await redis.set(f"transcript:queued:{session_id}", "1", nx=True,
                       ex=int(settings.transcript_timeout_seconds)):
        await jobs.enqueue("transcribe_session", session_id=str(session_id))
        return True
    return False


async def catch_up(deps: WorkflowDeps, redis: Redis, jobs: JobQueue | None,
                   settings: QaSettings, every_seconds: int = 600, batch: int = 20) -> int:
    """Queues transcripts for sealed sessions that have none (a crash, sessions sealed before
    the job existed, a failed attempt; not without a job queue) and removes those of purged
    sessions; at most once per `every_seconds`."""
    if not await redis.set("transcript:catch-up", "1", nx=True, ex=every_seconds):
        return 0
    queued = 0
    if jobs is not None and settings.transcript_enabled:
        for sid in await sessions_without_transcript(deps, settings.transcript_catch_up_days,
                                                     batch):
            queued += await queue_transcript(redis, jobs, sid, settings)
    removed = await remove_purged_transcripts(deps, settings.transcript_catch_up_days)
    if queued or removed:
        log.info("transcript catch-up: queued %d, removed %d of purged sessions", queued,
                 removed)
    return queued


async def needs_checks(session_id: UUID) -> bool:
    """A sealed session waiting for its first QA report."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or session.state != SessionState.QA_PENDING:
        return False
    return not await QaCheckReport.filter(session_id=session_id,
                                          status=ReportStatus.DONE).exists()
