"""The playback copy of a sealed session (R-41): one MP4 per session for QA inspectors, made in
the background from the sealed segments and the timeline, recorded by a sidecar JSON next to it.

Objects in the evidence store (local folder or S3), beside — never inside — the evidence
folders; derived objects, the only ones the store lets be replaced, and never retention-locked::

    {session}/playback/playback.mp4    the copy (replaced only by a newer copy)
    {session}/playback/playback.json   the sidecar: its SHA-256, the sources' sealed hashes,
                                       made_at, duration, encoder, problems

There is no database row (the sidecar is the record). The composer reads local files: the
local backend's own files, or (S3) the segments downloaded into a scratch folder for the
render; the copy is rendered there and then stored. The job is idempotent: when the sidecar's
plan digest matches the session's plan and the copy still has its recorded hash, nothing is
done. Rendering runs in a niced child process (`media.playback.compose`), one at a time per
process, so neither the event loop nor a live call's relay waits for it. A missing, altered or
undecodable segment is named in the sidecar and the log; the copy is made from the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from redis.asyncio import Redis
from tortoise.expressions import Subquery

import media
from media.playback import PlaybackPlan, RenderSettings, SourceSegment, Span
from media.playback.compose import PROBLEM_LABELS, ComposeResult, SourceReport
from models.archive import Tombstone
from models.sessions import RecordingSession, SessionState
from qa.timeline import Timeline, load_timeline
from storage import LocalFolderStore, ObjectMissing, ObjectStore
from workflow.core import JobQueue, WorkflowDeps

log = logging.getLogger(__name__)
PLAYBACK_DIR = "playback"
COPY_NAME = "playback.mp4"
SIDECAR_NAME = "playback.json"
SIDECAR_VERSION = 1
MAX_ATTEMPTS = 3
SEALED_STATES = (SessionState.SEALED, SessionState.QA_PENDING, SessionState.QA_PASSED,
                 SessionState.QA_REJECTED)
KIND_LABELS = {"customer_av": "客户录像", "agent_av": "销售人员录像", "tts": "播报音轨"}
Status = Literal["made", "unchanged", "not_sealed", "busy", "failed"]


@dataclass(frozen=True)
class PlaybackSettings:
    render: RenderSettings = field(default_factory=RenderSettings)
    # A render that takes longer than this is killed (and retried by a later catch-up).
    timeout_seconds: float = 3600.0
    catch_up_days: int = 90
    catch_up_batch: int = 5
    catch_up_every_seconds: int = 300


@dataclass(frozen=True)
class PlaybackOutcome:
    status: Status
    sidecar: dict[str, Any] | None = None


def playback_folder(files_root: Path, session_id: UUID | str) -> Path:
    """Where the local backend keeps a session's copy (`playback_key` under its root)."""
    return files_root / str(session_id) / PLAYBACK_DIR


def playback_key(session_id: UUID | str, name: str) -> str:
    return f"{session_id}/{PLAYBACK_DIR}/{name}"


async def read_sidecar(store: ObjectStore, session_id: UUID | str) -> dict[str, Any] | None:
    """The sidecar, or None when there is none (or it is unreadable: then it is re-made)."""
    key = playback_key(session_id, SIDECAR_NAME)
    try:
        data = json.loads(await store.get_bytes(key))
    except ObjectMissing:
        return None
    except (OSError, ValueError):
        log.warning("playback sidecar %s is unreadable; the copy will be made again", key)
        return None
    return data if isinstance(data, dict) else None


def plan_from_timeline(t: Timeline, files_root: Path | None,
                       render: RenderSettings) -> PlaybackPlan:
    """The copy's plan: every segment on the recording clock, every play of a step, every
    interruption; it lasts until the session completed or the last segment ended. A segment's
    path is its file under ``files_root``, or its object key when there is no local root
    (`local_sources` resolves those before a render)."""
    s = t.session
    assert s.recording_started_at is not None
    segments = []
    for r in t.recordings:
        start = t.offset(r.started_at)
        end = t.offset(r.ended_at) if r.ended_at else start + int(r.duration_ms)
        path = str(files_root / r.path) if files_root is not None else r.path
        segments.append(SourceSegment(r.id, r.kind, r.segment, path, r.sha256, start, end))
    duration = max([t.end_ms, *(seg.end_ms for seg in segments)])
    steps = []
    total = len(t.steps)
    for play in t.plays:
        step = t.steps[play.index] if play.index < total else None
        again = "（重播）" if t.plays_of(play.index).index(play) else ""
        title = (step.title if step is not None else "") or play.step_id
        steps.append(Span(play.start_ms, play.end_ms if play.end_ms is not None else duration,
                          f"第 {play.index + 1}/{total} 步 · {title}{again}"))
    gaps = tuple(Span(g.start_ms, g.end_ms if g.end_ms is not None else duration,
                      g.reason or "未说明原因") for g in t.interruptions)
    return PlaybackPlan(
        session_id=str(s.id), recording_started_at=s.recording_started_at.isoformat(),
        duration_ms=duration, segments=tuple(segments), steps=tuple(steps),
        interruptions=gaps, settings=render)


async def build_plan(store: ObjectStore, session_id: UUID,
                     render: RenderSettings) -> PlaybackPlan | None:
    """None when the session is not sealed (nothing to copy yet, or purged). With the local
    backend the plan names the evidence files themselves; otherwise object keys."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or not session.manifest or session.recording_started_at is None:
        return None
    root = store.root if isinstance(store, LocalFolderStore) else None
    return plan_from_timeline(await load_timeline(session_id), root, render)


def local_sources(store: ObjectStore, plan: PlaybackPlan, folder: Path) -> PlaybackPlan:
    """Blocking: the plan with every segment that is an object key downloaded into
    ``folder`` (a missing object gets a path that does not exist: the composer reports it)."""
    segments = []
    for s in plan.segments:
        if Path(s.path).is_absolute():
            segments.append(s)
            continue
        target = folder / f"{s.kind}-{s.segment:05d}{Path(s.path).suffix}"
        with contextlib.suppress(ObjectMissing):
            store.download_sync(s.path, target)
        segments.append(replace(s, path=str(target)))
    return replace(plan, segments=tuple(segments))


async def up_to_date(store: ObjectStore, plan: PlaybackPlan) -> dict[str, Any] | None:
    """The sidecar when it already records a copy of exactly this plan (or a plan that failed
    too often to try again), else None."""
    sidecar = await read_sidecar(store, plan.session_id)
    if sidecar is None or sidecar.get("plan_sha256") != plan.digest():
        return None
    if sidecar.get("status") == "failed":
        return sidecar if int(sidecar.get("attempts", 0)) >= MAX_ATTEMPTS else None
    actual = await store.sha256(playback_key(plan.session_id, COPY_NAME))
    return sidecar if actual is not None and actual == sidecar.get("sha256") else None


PROJECT_ROOT = Path(media.__file__).resolve().parents[1]


async def run_composer(plan: PlaybackPlan, out_path: Path, limit_seconds: float) -> ComposeResult:
    """Renders in a child process; its stderr (the composer's log) is passed on on failure."""
    env = dict(os.environ)
    project = str(PROJECT_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "media.playback.compose", str(out_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        async with asyncio.timeout(limit_seconds):
            stdout, stderr = await proc.communicate(plan.to_json().encode())
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"composer exited with {proc.returncode}: {' | '.join(tail)}")
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("WARNING"):
            log.warning("composer: %s", line)
    data = json.loads(stdout)
    data["sources"] = [SourceReport(**s) for s in data["sources"]]
    return ComposeResult(**data)


def describe_problem(source: dict[str, Any]) -> str:
    """A source's problem for people: ``客户录像第 2 段：与封存哈希不符``."""
    what = PROBLEM_LABELS.get(source["problem"], source["problem"])
    return f"{KIND_LABELS.get(source['kind'], source['kind'])}第 {source['segment']} 段：{what}"


async def _write_sidecar(store: ObjectStore, session_id: str, data: dict[str, Any]) -> None:
    await store.put_bytes(playback_key(session_id, SIDECAR_NAME),
                          json.dumps(data, ensure_ascii=False, indent=2).encode(),
                          replace=True, retain=False)


async def make_playback_copy(
    deps: WorkflowDeps, session_id: UUID, *, redis: Redis | None = None,
    settings: PlaybackSettings | None = None,
) -> PlaybackOutcome:
    """Makes (or confirms) the playback copy of one sealed session. Never raises for a bad
    source or a failed render: the sidecar says what happened."""
    settings = settings or PlaybackSettings()
    store = deps.storage
    plan = await build_plan(store, session_id, settings.render)
    if plan is None:
        log.info("playback copy of %s: not sealed, nothing to do", session_id)
        return PlaybackOutcome("not_sealed")
    if (current := await up_to_date(store, plan)) is not None:
        return PlaybackOutcome("unchanged", current)
    lock = f"playback:lock:{session_id}"
    if redis is not None and not await redis.set(lock, "1", nx=True,
                                                 ex=int(settings.timeout_seconds) + 60):
        return PlaybackOutcome("busy")
    try:
        return await _make(deps, plan, settings)
    finally:
        if redis is not None:
            await redis.delete(lock)


async def _make(deps: WorkflowDeps, plan: PlaybackPlan,
                settings: PlaybackSettings) -> PlaybackOutcome:
    store = deps.storage
    if store.scratch is not None:
        await asyncio.to_thread(store.scratch.mkdir, parents=True, exist_ok=True)
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="playback-", dir=store.scratch))
    try:
        return await _render_and_store(deps, plan, settings, work)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _render_and_store(deps: WorkflowDeps, plan: PlaybackPlan, settings: PlaybackSettings,
                            work: Path) -> PlaybackOutcome:
    store = deps.storage
    part = work / COPY_NAME
    previous = await read_sidecar(store, plan.session_id) or {}
    base: dict[str, Any] = {
        "version": SIDECAR_VERSION, "session_id": plan.session_id,
        "plan_sha256": plan.digest(), "renderer_version": plan.renderer_version,
        "made_at": deps.clock().astimezone(UTC).isoformat(),
    }
    try:
        local = await store.run(local_sources, store, plan, work)
        result = await run_composer(local, part, settings.timeout_seconds)
    except Exception as exc:
        attempts = int(previous.get("attempts", 0)) + 1 \
            if previous.get("plan_sha256") == base["plan_sha256"] else 1
        log.exception("playback copy of %s failed (attempt %d)", plan.session_id, attempts)
        sidecar = {**base, "status": "failed", "file": None, "attempts": attempts,
                   "error": f"{type(exc).__name__}: {exc}"[:500], "problems": [],
                   "sources": [{"recording_id": s.recording_id, "kind": s.kind,
                                "segment": s.segment, "sha256": s.sha256}
                               for s in plan.segments]}
        await _write_sidecar(store, plan.session_id, sidecar)
        return PlaybackOutcome("failed", sidecar)
    sources = [vars(s) for s in result.sources]
    problems = [describe_problem(s) for s in sources if s["problem"]]
    for p in problems:
        log.warning("playback copy of %s: %s", plan.session_id, p)
    sidecar = {
        **base, "status": "partial" if problems else "ok", "file": COPY_NAME,
        "sha256": result.sha256, "size_bytes": result.size_bytes,
        "duration_ms": result.duration_ms, "video_frames": result.video_frames,
        "encoder": result.encoder, "sources": sources, "problems": problems,
        "cpu_seconds": result.cpu_seconds, "wall_seconds": result.wall_seconds,
        "attempts": 1, "error": None,
    }
    # The copy first, then its record: a crash in between leaves a sidecar that does not
    # match (re-made), never a sidecar pointing at a copy that is not there.
    await store.put_file(playback_key(plan.session_id, COPY_NAME), part, sha256=result.sha256,
                         replace=True, retain=False, move=True)
    await _write_sidecar(store, plan.session_id, sidecar)
    log.info("playback copy of %s made: %d ms, %.1f CPU s, %d problem(s)", plan.session_id,
             result.duration_ms, result.cpu_seconds, len(problems))
    return PlaybackOutcome("made", sidecar)


async def _needs_copy(store: ObjectStore, session_id: UUID) -> bool:
    sidecar = await read_sidecar(store, session_id)
    if sidecar is None:
        return True
    return sidecar.get("status") == "failed" and int(sidecar.get("attempts", 0)) < MAX_ATTEMPTS


async def sessions_without_copy(deps: WorkflowDeps, days: int, limit: int) -> list[UUID]:
    """Sealed sessions of the last ``days`` days with no copy yet (newest first)."""
    since = deps.clock() - timedelta(days=days)
    purged = Subquery(Tombstone.all().values("session_id"))
    ids = await RecordingSession.filter(state__in=SEALED_STATES, sealed_at__gte=since).exclude(
        id__in=purged).order_by("-sealed_at").values_list("id", flat=True)
    missing: list[UUID] = []
    for sid in ids:
        if len(missing) >= limit:
            break
        if await _needs_copy(deps.storage, UUID(str(sid))):
            missing.append(UUID(str(sid)))
    return missing


async def remove_purged_copies(deps: WorkflowDeps, days: int) -> int:
    """A copy must not outlive its evidence (R-42): drop the copies of purged sessions."""
    since = deps.clock() - timedelta(days=days)
    ids = await Tombstone.filter(deleted_at__gte=since).values_list("session_id", flat=True)
    removed = 0
    for sid in ids:
        keys = await deps.storage.keys(f"{sid}/{PLAYBACK_DIR}/")
        for key in keys:
            await deps.storage.delete(key)
        removed += bool(keys)
    return removed


async def catch_up(deps: WorkflowDeps, redis: Redis, jobs: JobQueue,
                   settings: PlaybackSettings) -> int:
    """Queues copies for sealed sessions that have none (a crash, a deployment before this
    job existed, a failed attempt); at most once per ``catch_up_every_seconds``."""
    if not await redis.set("playback:catch-up", "1", nx=True,
                           ex=settings.catch_up_every_seconds):
        return 0
    queued = 0
    for sid in await sessions_without_copy(deps, settings.catch_up_days,
                                           settings.catch_up_batch):
        if await redis.set(f"playback:queued:{sid}", "1", nx=True,
                           ex=int(settings.timeout_seconds)):
            await jobs.enqueue("playback_copy", session_id=str(sid))
            queued += 1
    removed = await remove_purged_copies(deps, settings.catch_up_days)
    if queued or removed:
        log.info("playback catch-up: queued %d, removed %d purged copies", queued, removed)
    return queued


def register_playback_jobs(jobs: Any, deps: WorkflowDeps, redis: Redis,
                           settings: PlaybackSettings | None = None) -> None:
    """`playback_copy(session_id)` and `playback_catch_up()` on this app's broker."""
    settings = settings or PlaybackSettings()
    one_at_a_time = asyncio.Semaphore(1)  # two renders would only share the same cores

    async def playback_copy(session_id: str) -> str:
        async with one_at_a_time:
            outcome = await make_playback_copy(deps, UUID(session_id), redis=redis,
                                               settings=settings)
        return outcome.status

    async def playback_catch_up() -> int:
        return await catch_up(deps, redis, jobs, settings)

    jobs.register("playback_copy", playback_copy)
    jobs.register("playback_catch_up", playback_catch_up)


async def playback_view(store: ObjectStore, session_id: UUID, ticket: str) -> dict[str, Any]:
    """What the replay page shows about the copy: ready (with its ticket URL), still being
    made, or failed — with the sources' problems either way."""
    sidecar = await read_sidecar(store, session_id)
    if sidecar is None:
        return {"status": "pending", "label": "回放副本生成中"}
    if sidecar.get("status") == "failed" or not await store.exists(
            playback_key(session_id, COPY_NAME)):
        again = int(sidecar.get("attempts", 0)) < MAX_ATTEMPTS
        return {"status": "failed",
                "label": "回放副本生成失败" + ("，系统将自动重试" if again else "，请联系管理员"),
                "problems": sidecar.get("problems", []), "made_at": sidecar.get("made_at")}
    return {"status": sidecar["status"],
            "label": "回放副本（部分录像无法读取）" if sidecar["status"] == "partial"
            else "回放副本",
            "url": f"/api/v1/replay/playback/{ticket}", "sha256": sidecar["sha256"],
            "size_bytes": sidecar.get("size_bytes"), "duration_ms": sidecar.get("duration_ms"),
            "made_at": sidecar.get("made_at"), "problems": sidecar.get("problems", [])}


async def ready_copy(store: ObjectStore,
                     session_id: UUID | str) -> tuple[str, dict[str, Any]] | None:
    """The copy's object key and sidecar when there is a copy to serve."""
    sidecar = await read_sidecar(store, session_id)
    key = playback_key(session_id, COPY_NAME)
    if sidecar is None or sidecar.get("status") not in ("ok", "partial") \
            or not await store.exists(key):
        return None
    return key, sidecar

