"""QA endpoints (R-40, R-41): the queue, the automated report, the verdict with a decision per
finding, rectification, and the replay view with its audited media.

Also holds the app's after-call runtime (`AFTER_CALL`: settings, archive store, voice activity
detector) that the archive, insurer and statistics endpoints share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import Field

from api.auth import staff
from api.http import path_int, path_uuid, read_json
from api.keys import CONFIG, DEPS, REDIS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.schemas import Body, LocationBody
from api.views import session_summary
from models.people import User
from models.qa import (
    FindingDecision,
    QaFinding,
    QaTask,
    Rectification,
    RectificationStatus,
    TaskStatus,
)
from models.sessions import Recording, RecordingSession, Verdict
from qa import playback, queue, replay, verdicts
from qa.findings import Severity
from qa.runner import latest_report
from qa.runtime import AfterCall, build_after_call
from security import audit
from security.audit import Actor
from security.roles import Permission
from workflow.gates import Location
from workflow.principals import StaffPrincipal
from workflow.sessions import get_visible

api = Api()
P = Permission
AFTER_CALL = web.AppKey("after_call", AfterCall)


async def after_call_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the after-call runtime of this app (settings from the environment)."""
    config = app[CONFIG]
    app[AFTER_CALL] = build_after_call(app[REDIS], config.data_dir / "files",
                                       config.settings.identity_max_attempts)
    yield


async def _reviewable(principal: StaffPrincipal, session_id: UUID) -> RecordingSession:
    """QA and supervisors within their scope (R-50); auditors read their institution's
    sessions for replay only (R-41), nothing else."""
    if principal.can(P.VIEW_RECORDING) or principal.can(P.INSPECT):
        return await get_visible(principal, session_id)
    if principal.can(P.READ_AUDIT):
        session = await RecordingSession.get_or_none(id=session_id,
                                                     institution_id=principal.institution_id)
        if session is not None:
            return session
    raise ApiProblem(404, "session_not_found", "找不到该录制会话")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def task_view(row: queue.QueueRow) -> dict[str, Any]:
    t = row.task
    return {"session": session_summary(row.session), "task_id": t.id, "status": t.status.value,
            "sampled": t.sampled, "sample_share": t.sample_share,
            "sample_reasons": t.sample_reasons, "assignee_id": t.assignee_id,
            "deadline": t.deadline.isoformat(), "hours_left": row.hours_left,
            "alert_level": t.alert_level, "verdict": t.verdict,
            "decided_at": _iso(t.decided_at)}


@api.endpoint("GET", "/qa/queue", summary="The QA queue by deadline (R-40)", tag="qa",
              permission=P.INSPECT, query=("status", "mine", "limit"))
async def get_queue(request: web.Request) -> web.Response:
    principal = staff(request)
    raw = request.query.get("status", "open,assigned")
    try:
        statuses = [TaskStatus(s) for s in raw.split(",") if s]
    except ValueError as exc:
        raise ApiProblem(422, "validation_failed", "状态参数无效", field="status") from exc
    limit = request.query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 500:
        raise ApiProblem(422, "validation_failed", "参数 limit 无效", field="limit")
    rows = await queue.listing(
        principal.institution_id, status=statuses, limit=int(limit),
        assignee_id=principal.user_id if request.query.get("mine") == "1" else None,
        now=request.app[DEPS].clock(),
    )
    return json_response({"items": [task_view(r) for r in rows]})


class AssignBody(Body):
    username: str = Field(min_length=1, max_length=64)


@api.endpoint("POST", "/qa/queue/{session_id}/assign", summary="Assign a queued session",
              tag="qa", permission=P.INSPECT, body=AssignBody)
async def post_assign(request: web.Request) -> web.Response:
    body = await read_json(request, AssignBody)
    principal = staff(request)
    task = await QaTask.get_or_none(session_id=path_uuid(request),
                                    institution_id=principal.institution_id)
    if task is None:
        raise ApiProblem(404, "qa_task_not_found", "该会话不在质检队列中")
    inspector = await User.get_or_none(username=body.username)
    if inspector is None:
        raise ApiProblem(404, "inspector_not_found", "找不到该质检员")
    await queue.assign(request.app[DEPS], task, inspector, principal.actor)
    return json_response({"task_id": task.id, "assignee_id": inspector.id,
                          "status": task.status.value})


def finding_view(f: QaFinding) -> dict[str, Any]:
    return {"id": f.id, "code": f.code, "severity": f.severity, "requirement": f.requirement,
            "at_ms": f.at_ms, "step_id": f.step_id, "message": f.message,
            "details": f.details, "source": f.source,
            "decision": f.decision.value if f.decision else None,
            "decision_note": f.decision_note}


@api.endpoint("GET", "/qa/sessions/{session_id}/report",
              summary="The automated checks' report with its findings (R-40)", tag="qa",
              permission=P.VIEW_SESSIONS)
async def get_report(request: web.Request) -> web.Response:
    principal = staff(request)
    if not (principal.can(P.INSPECT) or principal.can(P.VIEW_RECORDING)):
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    session = await get_visible(principal, path_uuid(request))
    report = await latest_report(session.id)
    if report is None:
        raise ApiProblem(404, "report_not_ready", "自动质检尚未完成")
    findings = await QaFinding.filter(session_id=session.id).order_by("at_ms", "id")
    task = await QaTask.get_or_none(session_id=session.id)
    return json_response({
        "report": {"id": report.id, "passed": report.passed, "counts": report.counts,
                   "recorded_ms": report.recorded_ms, "elapsed_ms": report.elapsed_ms,
                   "engines": report.engines, "finished_at": _iso(report.finished_at)},
        "findings": [finding_view(f) for f in findings
                     if f.report_id == report.id or f.source != "auto"],
        "task": None if task is None else {
            "status": task.status.value, "sampled": task.sampled,
            "sample_reasons": task.sample_reasons, "deadline": task.deadline.isoformat(),
            "assignee_id": task.assignee_id, "alert_level": task.alert_level},
    })


class DecisionBody(Body):
    finding_id: int = Field(ge=1)
    decision: FindingDecision
    note: str = Field(default="", max_length=500)


class NewFindingBody(Body):
    message: str = Field(min_length=1, max_length=500)
    at_ms: int | None = Field(default=None, ge=0)
    requirement: str = Field(default="R-40", pattern=r"^R-[0-9]{2}$")
    severity: Literal["critical", "major", "minor"] = "major"


class VerdictBody(Body):
    verdict: Verdict
    comments: str = Field(default="", max_length=2000)
    decisions: list[DecisionBody] = Field(default_factory=list, max_length=500)
    findings: list[NewFindingBody] = Field(default_factory=list, max_length=100)


@api.endpoint("POST", "/qa/sessions/{session_id}/verdict",
              summary="Pass or reject with a decision per finding; reject → rectification",
              tag="qa", permission=P.INSPECT, body=VerdictBody,
              responses={409: "already decided, or pass with confirmed findings"})
async def post_verdict(request: web.Request) -> web.Response:
    body = await read_json(request, VerdictBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    result = await verdicts.decide(
        request.app[DEPS], principal, session.id, body.verdict, body.comments,
        [verdicts.FindingDecisionInput(d.finding_id, d.decision, d.note) for d in body.decisions],
        [verdicts.NewFinding(f.message, f.at_ms, f.requirement, Severity(f.severity))
         for f in body.findings],
    )
    rect = result.rectification
    return json_response({
        "verdict": result.review.verdict.value, "review_id": result.review.id,
        "rectification": None if rect is None else rectification_view(rect),
    }, status=201)


def rectification_view(r: Rectification) -> dict[str, Any]:
    return {"id": r.id, "order_id": r.order_id, "status": r.status.value,
            "original_session_id": str(r.original_session_id),
            "new_session_id": str(r.new_session_id) if r.new_session_id else None,
            "reasons": r.reasons, "deadline": r.deadline.isoformat(),
            "created_at": r.created_at.isoformat()}


@api.endpoint("GET", "/qa/rectifications", summary="Rectifications: an agent's own, or the "
              "institution's for QA", tag="qa", permission=P.VIEW_SESSIONS, query=("status",))
async def get_rectifications(request: web.Request) -> web.Response:
    principal = staff(request)
    query = Rectification.all()
    if principal.agent_id is not None:
        query = query.filter(order__agent_id=principal.agent_id)
    elif principal.can(P.INSPECT):
        query = query.filter(order__institution_id=principal.institution_id)
    else:
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    status = request.query.get("status")
    if status:
        try:
            query = query.filter(status=RectificationStatus(status))
        except ValueError as exc:
            raise ApiProblem(422, "validation_failed", "状态参数无效", field="status") from exc
    rows = await query.order_by("deadline", "id").limit(200)
    return json_response({"items": [rectification_view(r) for r in rows]})


class RectifyBody(Body):
    location: LocationBody | None = None


@api.endpoint("POST", "/qa/rectifications/{rectification_id}/session",
              summary="Re-record a rejected order: a new session linked to the old one",
              tag="qa", permission=P.RECORD, body=RectifyBody)
async def post_rectification_session(request: web.Request) -> web.Response:
    body = await read_json(request, RectifyBody)
    loc = body.location
    session = await verdicts.start_rectification(
        request.app[DEPS], staff(request), path_int(request, "rectification_id"),
        Location(loc.lat, loc.lng, loc.accuracy_m) if loc else None,
    )
    return json_response(session_summary(session), status=201)


@api.endpoint("GET", "/qa/sessions/{session_id}/replay",
              summary="Replay view: segments and timeline marks (audited, R-41)", tag="qa",
              permission=None)
async def get_replay(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await _reviewable(principal, path_uuid(request))
    redis = request.app[REDIS]
    ticket = await replay.issue_ticket(redis, principal, session.id)
    view = await replay.replay_view(session.id, ticket, request.app[DEPS].storage.root)
    await audit.record_alone(principal.actor, "replay.view", object_type="session",
                             object_id=str(session.id),
                             details={"segments": sum(len(v) for v in
                                                      view["recordings"].values())})
    return json_response(view, headers={"Cache-Control": "no-store"})


async def _ticket_claims(request: web.Request) -> dict[str, Any]:
    claims = await replay.resolve_ticket(request.app[REDIS], request.match_info["ticket"])
    if claims is None:
        raise ApiProblem(401, "ticket_invalid", "回放链接已失效，请重新打开回放页面")
    return claims


async def _audit_fetch(request: web.Request, claims: dict[str, Any], object_type: str,
                       object_id: str, played_key: int | str, details: dict[str, Any],
                       download_details: dict[str, Any]) -> bool:
    """Every download and the first play under a ticket are audited (R-41); True for a
    download."""
    actor = Actor("user", str(claims["user_id"]), claims["label"], request.remote or "")
    download = request.query.get("download") == "1"
    if download:
        await audit.record_alone(actor, "recording.download", object_type=object_type,
                                 object_id=object_id, details=download_details)
    elif await replay.first_fetch(request.app[REDIS], request.match_info["ticket"],
                                  played_key):
        await audit.record_alone(actor, "recording.play", object_type=object_type,
                                 object_id=object_id, details=details)
    return download


@api.endpoint("GET", "/replay/media/{ticket}/{recording_id}",
              summary="A recorded segment under a playback ticket (first play and every "
              "download audited)", tag="qa", auth="none", query=("download",),
              produces="video/webm")
async def get_replay_media(request: web.Request) -> web.StreamResponse:
    claims = await _ticket_claims(request)
    recording = await Recording.get_or_none(id=path_int(request, "recording_id"),
                                            session_id=claims["session_id"])
    if recording is None:
        raise ApiProblem(404, "recording_not_found", "找不到该录像")
    download = await _audit_fetch(
        request, claims, "recording", str(recording.id), recording.id,
        details={"session": claims["session_id"]},
        download_details={"session": claims["session_id"], "via": "replay"})
    deps = request.app[DEPS]
    path = deps.storage.root / recording.path
    if not path.exists():
        raise ApiProblem(410, "recording_deleted", "该录像已按保存期限删除或不可用")
    headers = {"X-Content-SHA256": recording.sha256, "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = (
            f'attachment; filename="{recording.kind}-{recording.segment:05d}.webm"')
    return web.FileResponse(path, headers=headers)


@api.endpoint("GET", "/replay/playback/{ticket}",
              summary="The session's playback copy (both parties, TTS mixed in, time burned in) "
              "under a playback ticket; first play and every download audited", tag="qa",
              auth="none", query=("download",), produces="video/mp4",
              responses={404: "the copy is still being made"})
async def get_replay_playback(request: web.Request) -> web.StreamResponse:
    claims = await _ticket_claims(request)
    session_id = claims["session_id"]
    found = await asyncio.to_thread(playback.ready_copy, request.app[DEPS].storage.root,
                                    session_id)
    if found is None:
        raise ApiProblem(404, "playback_not_ready", "回放副本生成中，请稍后再试")
    path, sidecar = found
    details = {"session": session_id, "copy": "playback", "sha256": sidecar["sha256"]}
    # Audited like a segment: the copy shows the same recordings.
    download = await _audit_fetch(request, claims, "playback", session_id, "playback",
                                  details=details, download_details=details)
    headers = {"X-Content-SHA256": sidecar["sha256"], "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="playback-{session_id}.mp4"'
    return web.FileResponse(path, headers=headers)


@api.endpoint("GET", "/qa/finding-kinds", summary="The catalogue of automated findings",
              tag="qa", permission=P.INSPECT)
async def get_finding_kinds(request: web.Request) -> web.Response:
    return json_response({"items": verdicts.kinds_catalogue()})
