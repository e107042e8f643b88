"""The playback copy of a sealed session (R-41): one MP4 per session for QA inspectors, made in
the background from the sealed segments and the timeline, recorded by a sidecar JSON next to it.

Layout on disk (under the storage root, beside — never inside — the evidence folders)::

    {session}/playback/playback.mp4    the copy (replaced only by a newer copy)
    {session}/playback/playback.json   the sidecar: its SHA-256, the sources' sealed hashes,
                                       made_at, duration, encoder, problems

There is no database row (the sidecar is the record). The job is idempotent: when the sidecar's
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
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from redis.asyncio import Redis
from tortoise.expressions import Subquery

import media
from media.playback import PlaybackPlan, RenderSettings, SourceSegment, Span
from media.playback.compose import PROBLEM_LABELS, ComposeResult, SourceReport, file_sha256
from models.archive import Tombstone
from models.sessions import RecordingSession, SessionState
from qa.timeline import Timeline, load_timeline
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
    return files_root / str(session_id) / PLAYBACK_DIR


def read_sidecar(files_root: Path, session_id: UUID | str) -> dict[str, Any] | None:
    """The sidecar, or None when there is none (or it is unreadable: then it is re-made)."""
    path = playback_folder(files_root, session_id) / SIDECAR_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("playback sidecar %s is unreadable; the copy will be made again", path)
        return None
    return data if isinstance(data, dict) else None


def plan_from_timeline(t: Timeline, files_root: Path, render: RenderSettings) -> PlaybackPlan:
    """The copy's plan: every segment on the recording clock, every play of a step, every
    interruption; it lasts until the session completed or the last segment ended."""
    s = t.session
    assert s.recording_started_at is not None
    segments = []
    for r in t.recordings:
        start = t.offset(r.started_at)
        end = t.offset(r.ended_at) if r.ended_at else start + int(r.duration_ms)
        segments.append(SourceSegment(r.id, r.kind, r.segment, str(files_root / r.path),
                                      r.sha256, start, end))
    duration = max([t.end_ms, *(seg.end_ms for seg in segments)])
    steps = []
    total = len(t.steps)
    for play in t.plays:
        step = t.steps[play.index] if play.index < total else {}
        again = "（重播）" if t.plays_of(play.index).index(play) else ""
        title = step.get("title") or play.step_id
        steps.append(Span(play.start_ms, play.end_ms if play.end_ms is not None else duration,
                          f"第 {play.index + 1}/{total} 步 · {title}{again}"))
    gaps = tuple(Span(g.start_ms, g.end_ms if g.end_ms is not None else duration,
                      g.reason or "未说明原因") for g in t.interruptions)
    return PlaybackPlan(
        session_id=str(s.id), recording_started_at=s.recording_started_at.isoformat(),
        duration_ms=duration, segments=tuple(segments), steps=tuple(steps),
        interruptions=gaps, settings=render)


async def build_plan(files_root: Path, session_id: UUID,
                     render: RenderSettings) -> PlaybackPlan | None:
    """None when the session is not sealed (nothing to copy yet, or purged)."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or not session.manifest or session.recording_started_at is None:
        return None
    return plan_from_timeline(await load_timeline(session_id), files_root, render)


def _copy_intact(folder: Path, sidecar: dict[str, Any]) -> bool:
    path = folder / COPY_NAME
    return path.is_file() and file_sha256(path) == sidecar.get("sha256")


async def up_to_date(files_root: Path, plan: PlaybackPlan) -> dict[str, Any] | None:
    """The sidecar when it already records a copy of exactly this plan (or a plan that failed
    too often to try again), else None."""
    sidecar = read_sidecar(files_root, plan.session_id)
    if sidecar is None or sidecar.get("plan_sha256") != plan.digest():
        return None
    if sidecar.get("status") == "failed":
        return sidecar if int(sidecar.get("attempts", 0)) >= MAX_ATTEMPTS else None
    folder = playback_folder(files_root, plan.session_id)
    return sidecar if await asyncio.to_thread(_copy_intact, folder, sidecar) else None


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


async def make_playback_copy(
    deps: WorkflowDeps, session_id: UUID, *, redis: Redis | None = None,
    settings: PlaybackSettings | None = None,
) -> PlaybackOutcome:
    """Makes (or confirms) the playback copy of one sealed session. Never raises for a bad
    source or a failed render: the sidecar says what happened."""
    settings = settings or PlaybackSettings()
    root = deps.storage.root
    plan = await build_plan(root, session_id, settings.render)
    if plan is None:
        log.info("playback copy of %s: not sealed, nothing to do", session_id)
        return PlaybackOutcome("not_sealed")
    if (current := await up_to_date(root, plan)) is not None:
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
    root = deps.storage.root
    folder = playback_folder(root, plan.session_id)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    part = folder / (COPY_NAME + ".part")
    previous = read_sidecar(root, plan.session_id) or {}
    base: dict[str, Any] = {
        "version": SIDECAR_VERSION, "session_id": plan.session_id,
        "plan_sha256": plan.digest(), "renderer_version": plan.renderer_version,
        "made_at": deps.clock().astimezone(UTC).isoformat(),
    }
    try:
        result = await run_composer(plan, part, settings.timeout_seconds)
    except Exception as exc:
        attempts = int(previous.get("attempts", 0)) + 1 \
            if previous.get("plan_sha256") == base["plan_sha256"] else 1
        log.exception("playback copy of %s failed (attempt %d)", plan.session_id, attempts)
        sidecar = {**base, "status": "failed", "file": None, "attempts": attempts,
                   "error": f"{type(exc).__name__}: {exc}"[:500], "problems": [],
                   "sources": [{"recording_id": s.recording_id, "kind": s.kind,
                                "segment": s.segment, "sha256": s.sha256}
                               for s in plan.segments]}
        await asyncio.to_thread(_finish_failed, part, folder / SIDECAR_NAME, sidecar)
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
    await asyncio.to_thread(_publish, part, folder, sidecar)
    log.info("playback copy of %s made: %d ms, %.1f CPU s, %d problem(s)", plan.session_id,
             result.duration_ms, result.cpu_seconds, len(problems))
    return PlaybackOutcome("made", sidecar)


def _publish(part: Path, folder: Path, sidecar: dict[str, Any]) -> None:
    # The copy first, then its record: a crash in between leaves a sidecar that does not
    # match (re-made), never a sidecar pointing at a copy that is not there.
    os.replace(part, folder / COPY_NAME)
    _write_json(folder / SIDECAR_NAME, sidecar)


def _finish_failed(part: Path, sidecar_path: Path, sidecar: dict[str, Any]) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    _write_json(sidecar_path, sidecar)


def _needs_copy(files_root: Path, session_id: UUID) -> bool:
    sidecar = read_sidecar(files_root, session_id)
    if sidecar is None:
        return True
    return sidecar.get("status") == "failed" and int(sidecar.get("attempts", 0)) < MAX_ATTEMPTS


async def sessions_without_copy(deps: WorkflowDeps, days: int, limit: int) -> list[UUID]:
    """Sealed sessions of the last ``days`` days with no copy yet (newest first)."""
    since = deps.clock() - timedelta(days=days)
    purged = Subquery(Tombstone.all().values("session_id"))
    ids = await RecordingSession.filter(state__in=SEALED_STATES, sealed_at__gte=since).exclude(
        id__in=purged).order_by("-sealed_at").values_list("id", flat=True)
    root = deps.storage.root

    def missing() -> list[UUID]:
        return [UUID(str(sid)) for sid in ids if _needs_copy(root, UUID(str(sid)))][:limit]

    return await asyncio.to_thread(missing)


async def remove_purged_copies(deps: WorkflowDeps, days: int) -> int:
    """A copy must not outlive its evidence (R-42): drop the copies of purged sessions."""
    since = deps.clock() - timedelta(days=days)
    ids = await Tombstone.filter(deleted_at__gte=since).values_list("session_id", flat=True)
    root = deps.storage.root

    def remove() -> int:
        removed = 0
        for sid in ids:
            folder = playback_folder(root, str(sid))
            if folder.is_dir():
                shutil.rmtree(folder)
                removed += 1
        return removed

    return await asyncio.to_thread(remove)


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


def playback_view(files_root: Path, session_id: UUID, ticket: str) -> dict[str, Any]:
    """What the replay page shows about the copy: ready (with its ticket URL), still being
    made, or failed — with the sources' problems either way."""
    sidecar = read_sidecar(files_root, session_id)
    if sidecar is None:
        return {"status": "pending", "label": "回放副本生成中"}
    if sidecar.get("status") == "failed" or not (
            playback_folder(files_root, session_id) / COPY_NAME).is_file():
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


def ready_copy(files_root: Path, session_id: UUID | str) -> tuple[Path, dict[str, Any]] | None:
    """The copy's path and sidecar when there is a copy to serve."""
    sidecar = read_sidecar(files_root, session_id)
    path = playback_folder(files_root, session_id) / COPY_NAME
    if sidecar is None or sidecar.get("status") not in ("ok", "partial") or not path.is_file():
        return None
    return path, sidecar

