"""QA endpoints (R-40, R-41): the queue, the automated report, the verdict with a decision per
finding, rectification, and the replay view with its audited media.

Also holds the key of the app's after-call runtime (`AFTER_CALL`: settings, archive store, voice
activity detector), built once by the composition root (app/factory.py) from the configuration's
sections and shared by these, the archive, insurer and statistics endpoints and the jobs.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import Field
from tortoise.expressions import Subquery

from aftercall.runtime import AfterCall
from api.auth import staff
from api.http import ChoiceQuery, IntQuery, path_int, path_uuid, read_json
from api.keys import DEPS, REDIS
from api.object_response import object_response
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import (
    Assigned,
    DismissalList,
    DismissalView,
    FindingKindList,
    QaReport,
    ReasonList,
    RectificationList,
    ReplayView,
    SessionSummary,
    TaskList,
    TranscriptView,
    VerdictResult,
)
from api.schemas import BigInt, Body, DbId, LocationBody
from api.views import session_summary
from models.people import User
from models.qa import (
    DismissalStatus,
    FindingDecision,
    QaDismissal,
    QaFinding,
    QaTask,
    Rectification,
    RectificationStatus,
    TaskStatus,
)
from models.sessions import Recording, RecordingSession, Verdict
from qa import dismissals, playback, queue, replay, verdicts
from qa.findings import Severity
from qa.runner import latest_report
from security import audit
from security.audit import Actor
from security.roles import Permission
from storage import ObjectMissing
from workflow.gates import Location
from workflow.principals import StaffPrincipal
from workflow.sessions import get_visible

api = Api()
P = Permission
AFTER_CALL = web.AppKey("after_call", AfterCall)
TICKET = re.compile(r"[A-Za-z0-9_\-]{16,128}")


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


TASK_STATUS = ChoiceQuery.of("status", TaskStatus, default="open,assigned", several=True)
MINE = ChoiceQuery("mine", ("0", "1"), default="0")
QUEUE_LIMIT = IntQuery("limit", default=100, low=1, high=500)
DOWNLOAD = ChoiceQuery("download", ("0", "1"), default="0")


@api.endpoint("GET", "/qa/queue", summary="The QA queue by deadline (R-40)", tag="qa",
              permission=P.INSPECT, query=(TASK_STATUS, MINE, QUEUE_LIMIT), returns=TaskList)
async def get_queue(request: web.Request) -> web.Response:
    principal = staff(request)
    statuses = [TaskStatus(s) for s in str(TASK_STATUS.read(request)).split(",")]
    rows = await queue.listing(
        principal.institution_id, status=statuses, limit=QUEUE_LIMIT.read(request),
        assignee_id=principal.user_id if MINE.read(request) == "1" else None,
        now=request.app[DEPS].clock(),
    )
    return json_response({"items": [task_view(r) for r in rows]})


class AssignBody(Body):
    username: str = Field(min_length=1, max_length=64)


@api.endpoint("POST", "/qa/queue/{session_id}/assign", summary="Assign a queued session",
              tag="qa", permission=P.INSPECT, body=AssignBody, returns=Assigned,
              responses={409: "decided already", 422: "not an inspector"})
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


def dismissal_view(d: QaDismissal) -> dict[str, Any]:
    reason = dismissals.REASONS.get(d.reason_code)
    return {"id": d.id, "finding_id": d.finding_id, "status": d.status.value,
            "reason_code": d.reason_code, "reason": reason.label if reason else d.reason_code,
            "note": d.note, "duplicate_of": d.duplicate_of_id, "four_eyes": d.four_eyes,
            "proposed_by_id": d.proposed_by_id, "proposed_at": d.proposed_at.isoformat(),
            "reviewed_by_id": d.reviewed_by_id, "reviewed_at": _iso(d.reviewed_at),
            "review_note": d.review_note}


def finding_view(f: QaFinding, rows: list[QaDismissal] | None = None) -> dict[str, Any]:
    mine = [d for d in rows or [] if d.finding_id == f.id]
    standing = dismissals.standing(f, mine)
    return {"id": f.id, "code": f.code, "severity": f.severity, "requirement": f.requirement,
            "at_ms": f.at_ms, "step_id": f.step_id, "message": f.message,
            "details": f.details, "source": f.source,
            "decision": f.decision.value if f.decision else None,
            "decision_note": f.decision_note, "dismissal_reason": f.dismissal_reason,
            "standing": standing.value,
            "standing_label": dismissals.STANDING_LABELS_ZH[standing],
            "dismissals": [dismissal_view(d) for d in mine]}


@api.endpoint("GET", "/qa/sessions/{session_id}/report",
              summary="The automated checks' report with its findings (R-40)", tag="qa",
              permission=P.VIEW_SESSIONS, returns=QaReport,
              responses={403: "neither inspect nor view_recording"})
async def get_report(request: web.Request) -> web.Response:
    principal = staff(request)
    if not (principal.can(P.INSPECT) or principal.can(P.VIEW_RECORDING)):
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    session = await get_visible(principal, path_uuid(request))
    report = await latest_report(session.id)
    if report is None:
        raise ApiProblem(404, "report_not_ready", "自动质检尚未完成")
    findings = await QaFinding.filter(session_id=session.id).order_by("at_ms", "id")
    rows = await QaDismissal.filter(session_id=session.id).order_by("id")
    task = await QaTask.get_or_none(session_id=session.id)
    return json_response({
        "report": {"id": report.id, "passed": report.passed, "counts": report.counts,
                   "recorded_ms": report.recorded_ms, "elapsed_ms": report.elapsed_ms,
                   "engines": report.engines, "finished_at": _iso(report.finished_at)},
        "findings": [finding_view(f, rows) for f in findings
                     if f.report_id == report.id or f.source != "auto"],
        "task": None if task is None else {
            "status": task.status.value, "sampled": task.sampled,
            "sample_reasons": task.sample_reasons, "deadline": task.deadline.isoformat(),
            "assignee_id": task.assignee_id, "alert_level": task.alert_level},
    })


REASON_CODES = "one of GET /qa/dismissal-reasons: " + ", ".join(dismissals.REASONS)


class DecisionBody(Body):
    finding_id: DbId
    decision: FindingDecision
    note: str = Field(default="", max_length=500)
    # A dismissal in the verdict: majors (and lesser) only; a critical finding's dismissal
    # goes through .../dismissal and a second inspector first.
    reason_code: str = Field(default="", max_length=40, description=REASON_CODES)
    duplicate_of: DbId | None = None


class NewFindingBody(Body):
    message: str = Field(min_length=1, max_length=500)
    at_ms: BigInt | None = None
    requirement: str = Field(default="R-40", pattern=r"^R-[0-9]{2}$")
    severity: Literal["critical", "major", "minor"] = "major"


class VerdictBody(Body):
    verdict: Verdict
    comments: str = Field(default="", max_length=2000)
    decisions: list[DecisionBody] = Field(default_factory=list, max_length=500)
    findings: list[NewFindingBody] = Field(default_factory=list, max_length=100)


@api.endpoint("POST", "/qa/sessions/{session_id}/verdict",
              summary="The one QA verdict (R-40): pass or reject with a decision per finding; "
              "reject → rectification", tag="qa", permission=P.INSPECT, body=VerdictBody,
              returns=VerdictResult, status=201,
              responses={409: "already decided, or a pass while a critical or major finding is "
                              "undecided, confirmed or dismissed without approval"})
async def post_verdict(request: web.Request) -> web.Response:
    body = await read_json(request, VerdictBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    result = await verdicts.decide(
        request.app[DEPS], principal, session.id, body.verdict, body.comments,
        [verdicts.FindingDecisionInput(d.finding_id, d.decision, d.note, d.reason_code,
                                       d.duplicate_of) for d in body.decisions],
        [verdicts.NewFinding(f.message, f.at_ms, f.requirement, Severity(f.severity))
         for f in body.findings],
    )
    rect = result.rectification
    return json_response({
        "verdict": result.review.verdict.value, "review_id": result.review.id,
        "counts": result.counts,
        "rectification": None if rect is None else rectification_view(rect),
    }, status=201)


class DismissalBody(Body):
    reason_code: str = Field(min_length=1, max_length=40, description=REASON_CODES)
    note: str = Field(min_length=1, max_length=500)
    duplicate_of: DbId | None = None


class DismissalReviewBody(Body):
    note: str = Field(default="", max_length=500)


FINDING = "/qa/sessions/{session_id}/findings/{finding_id}/dismissal"


@api.endpoint("POST", FINDING, tag="qa", permission=P.INSPECT, body=DismissalBody,
              returns=DismissalView, status=201,
              summary="Dismiss a finding with a listed reason: a major at once, a critical "
              "only proposed until a second inspector approves (four eyes, R-40)",
              responses={409: "decided, or a dismissal already pending",
                         422: "reason not on the list or not for this kind of finding"})
async def post_dismissal(request: web.Request) -> web.Response:
    body = await read_json(request, DismissalBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    row = await verdicts.propose_dismissal(
        request.app[DEPS], principal, session.id, path_int(request, "finding_id"),
        body.reason_code, body.note, body.duplicate_of)
    return json_response(dismissal_view(row), status=201)


async def _review_dismissal(request: web.Request, approve: bool) -> web.Response:
    body = await read_json(request, DismissalReviewBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    row = await verdicts.review_dismissal(
        request.app[DEPS], principal, session.id, path_int(request, "finding_id"), approve,
        body.note)
    return json_response(dismissal_view(row))


@api.endpoint("POST", FINDING + "/approve", tag="qa", permission=P.INSPECT,
              body=DismissalReviewBody, returns=DismissalView,
              summary="A second inspector approves a proposed dismissal of a critical finding",
              responses={409: "no proposal pending, or the approver proposed it"})
async def post_dismissal_approve(request: web.Request) -> web.Response:
    return await _review_dismissal(request, approve=True)


@api.endpoint("POST", FINDING + "/refuse", tag="qa", permission=P.INSPECT,
              body=DismissalReviewBody, returns=DismissalView,
              summary="A second inspector refuses a proposed dismissal (a note is required)",
              responses={409: "no proposal pending, or the approver proposed it"})
async def post_dismissal_refuse(request: web.Request) -> web.Response:
    return await _review_dismissal(request, approve=False)


DISMISSAL_STATUS = ChoiceQuery.of("status", DismissalStatus, default="proposed")


@api.endpoint("GET", "/qa/dismissals", tag="qa", permission=P.INSPECT,
              query=(DISMISSAL_STATUS,), returns=DismissalList,
              summary="Dismissals of the institution's findings (default: proposed, waiting "
              "for a second inspector)")
async def get_dismissals(request: web.Request) -> web.Response:
    principal = staff(request)
    status = DismissalStatus(DISMISSAL_STATUS.read(request) or "proposed")
    sessions = QaTask.filter(institution_id=principal.institution_id).values("session_id")
    rows = await QaDismissal.filter(status=status, session_id__in=Subquery(sessions)
                                    ).order_by("proposed_at", "id").limit(200)
    return json_response({"items": [{**dismissal_view(d), "session_id": str(d.session_id)}
                                    for d in rows]})


@api.endpoint("GET", "/qa/dismissal-reasons", tag="qa", permission=P.INSPECT,
              summary="The fixed list of reasons a finding may be dismissed for",
              returns=ReasonList)
async def get_dismissal_reasons(request: web.Request) -> web.Response:
    return json_response({"items": dismissals.catalogue()})


def rectification_view(r: Rectification) -> dict[str, Any]:
    return {"id": r.id, "order_id": r.order_id, "status": r.status.value,
            "original_session_id": str(r.original_session_id),
            "new_session_id": str(r.new_session_id) if r.new_session_id else None,
            "reasons": r.reasons, "deadline": r.deadline.isoformat(),
            "created_at": r.created_at.isoformat()}


RECTIFICATION_STATUS = ChoiceQuery.of("status", RectificationStatus)


@api.endpoint("GET", "/qa/rectifications", summary="Rectifications: an agent's own, or the "
              "institution's for QA", tag="qa", permission=P.VIEW_SESSIONS,
              query=(RECTIFICATION_STATUS,), returns=RectificationList,
              responses={403: "neither an agent nor an inspector"})
async def get_rectifications(request: web.Request) -> web.Response:
    principal = staff(request)
    query = Rectification.all()
    if principal.agent_id is not None:
        query = query.filter(order__agent_id=principal.agent_id)
    elif principal.can(P.INSPECT):
        query = query.filter(order__institution_id=principal.institution_id)
    else:
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    if status := RECTIFICATION_STATUS.read(request):
        query = query.filter(status=RectificationStatus(status))
    rows = await query.order_by("deadline", "id").limit(200)
    return json_response({"items": [rectification_view(r) for r in rows]})


class RectifyBody(Body):
    location: LocationBody | None = None


@api.endpoint("POST", "/qa/rectifications/{rectification_id}/session",
              summary="Re-record a rejected order: a new session linked to the old one",
              tag="qa", permission=P.RECORD, body=RectifyBody, returns=SessionSummary,
              status=201, responses={403: "a gate failed", 409: "re-recorded already"})
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
              permission=None, returns=ReplayView)
async def get_replay(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await _reviewable(principal, path_uuid(request))
    redis = request.app[REDIS]
    ticket = await replay.issue_ticket(redis, principal, session.id)
    view = await replay.replay_view(session.id, ticket, request.app[DEPS].storage)
    await audit.record_alone(principal.actor, "replay.view", object_type="session",
                             object_id=str(session.id),
                             details={"segments": sum(len(v) for v in
                                                      view["recordings"].values())})
    return json_response(view, headers={"Cache-Control": "no-store"})


@api.endpoint("GET", "/qa/sessions/{session_id}/transcript",
              summary="The after-call transcript: each party's lines on the recording clock "
              "(audited, R-41)", tag="qa", permission=None, returns=TranscriptView)
async def get_transcript(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await _reviewable(principal, path_uuid(request))
    view = await replay.transcript_view(request.app[DEPS].storage, session.id)
    await audit.record_alone(principal.actor, "replay.transcript", object_type="session",
                             object_id=str(session.id),
                             details={"status": view["status"], "lines": len(view["lines"])})
    return json_response(view, headers={"Cache-Control": "no-store"})


async def _ticket_claims(request: web.Request) -> dict[str, Any]:
    ticket = request.match_info["ticket"]
    claims = (await replay.resolve_ticket(request.app[REDIS], ticket)
              if TICKET.fullmatch(ticket) else None)
    if claims is None:
        raise ApiProblem(401, "ticket_invalid", "回放链接已失效，请重新打开回放页面")
    return claims


async def _audit_fetch(request: web.Request, claims: dict[str, Any], object_type: str,
                       object_id: str, played_key: int | str, details: dict[str, Any],
                       download_details: dict[str, Any]) -> bool:
    """Every download and the first play under a ticket are audited (R-41); True for a
    download."""
    actor = Actor("user", str(claims["user_id"]), claims["label"], request.remote or "")
    download = DOWNLOAD.read(request) == "1"
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
              "download audited)", tag="qa", auth="none", query=(DOWNLOAD,),
              produces="video/webm",
              responses={206: "video/webm", 401: "the ticket expired", 410: "deleted after its "
                         "retention", 416: "range not satisfiable"})
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
    headers = {"X-Content-SHA256": recording.sha256, "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = (
            f'attachment; filename="{recording.kind}-{recording.segment:05d}.webm"')
    try:
        return await object_response(request, deps.storage, recording.path, headers=headers,
                                     content_type="video/webm")
    except ObjectMissing:
        raise ApiProblem(410, "recording_deleted", "该录像已按保存期限删除或不可用") from None


@api.endpoint("GET", "/replay/playback/{ticket}",
              summary="The session's playback copy (both parties, TTS mixed in, time burned in) "
              "under a playback ticket; first play and every download audited", tag="qa",
              auth="none", query=(DOWNLOAD,), produces="video/mp4",
              responses={206: "video/mp4", 401: "the ticket expired",
                         404: "the copy is still being made", 416: "range not satisfiable"})
async def get_replay_playback(request: web.Request) -> web.StreamResponse:
    claims = await _ticket_claims(request)
    session_id = claims["session_id"]
    store = request.app[DEPS].storage
    found = await playback.ready_copy(store, session_id)
    if found is None:
        raise ApiProblem(404, "playback_not_ready", "回放副本生成中，请稍后再试")
    key, sidecar = found
    details = {"session": session_id, "copy": "playback", "sha256": sidecar["sha256"]}
    # Audited like a segment: the copy shows the same recordings.
    download = await _audit_fetch(request, claims, "playback", session_id, "playback",
                                  details=details, download_details=details)
    headers = {"X-Content-SHA256": sidecar["sha256"], "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="playback-{session_id}.mp4"'
    try:
        return await object_response(request, store, key, headers=headers,
                                     content_type="video/mp4")
    except ObjectMissing:
        raise ApiProblem(404, "playback_not_ready", "回放副本生成中，请稍后再试") from None


@api.endpoint("GET", "/qa/finding-kinds", summary="The catalogue of automated findings",
              tag="qa", permission=P.INSPECT, returns=FindingKindList)
async def get_finding_kinds(request: web.Request) -> web.Response:
    return json_response({"items": verdicts.kinds_catalogue()})
