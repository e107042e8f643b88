"""Endpoints for the engines (identity results, recorded segments) and for viewing recordings.
Every listing and download of a recording is audited (R-41, R-52)."""

from __future__ import annotations

from aiohttp import web

from api.auth import staff
from api.http import path_int, path_uuid, read_json
from api.keys import DEPS
from api.object_response import object_response
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import Created, IdentityOutcome, RecordingList, Verification
from api.schemas import IdentityBody, RecordingBody
from models.sessions import Recording
from security import audit
from security.roles import Permission
from storage import ObjectMissing, StoreError
from workflow import call
from workflow.identity import ComponentResult, record_attempt
from workflow.sealing import verify_session
from workflow.sessions import get_visible

api = Api()
P = Permission


def _component(body: object) -> ComponentResult:
    data = body.model_dump()  # type: ignore[attr-defined]
    return ComponentResult(**data)


@api.endpoint("POST", "/sessions/{session_id}/identity-checks",
              summary="Record one identity attempt (OCR, face match, liveness) (R-12)",
              tag="identity", permission=P.REPORT_IDENTITY, body=IdentityBody,
              returns=IdentityOutcome, status=201,
              responses={409: "the session is not waiting for its identity check"})
async def post_identity(request: web.Request) -> web.Response:
    body = await read_json(request, IdentityBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    outcome = await record_attempt(
        request.app[DEPS], principal.actor, session.id, _component(body.ocr),
        _component(body.face), _component(body.liveness),
    )
    return json_response({"attempt": outcome.check.attempt, "passed": outcome.check.passed,
                              "state": outcome.state.value,
                              "attempts_left": outcome.attempts_left}, status=201)


@api.endpoint("POST", "/sessions/{session_id}/recordings",
              summary="Register a recorded segment written by a media worker (R-30)",
              tag="recordings", permission=P.REPORT_MEDIA, body=RecordingBody, returns=Created,
              status=201, responses={409: "the segment is registered already, or the session "
                                          "is not recording",
                                     422: "the file is not stored, or its hash differs"})
async def post_recording(request: web.Request) -> web.Response:
    body = await read_json(request, RecordingBody)
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    deps = request.app[DEPS]
    try:
        stored = await deps.storage.sha256(body.path)  # None when it is not stored
    except StoreError:  # not a valid object key
        stored = None
    if stored != body.sha256:
        raise ApiProblem(422, "recording_file_mismatch", "录像文件不存在或校验值不一致")
    recording = await call.register_recording(deps, principal.actor, session.id,
                                              call.NewRecording(**body.model_dump()))
    return json_response({"id": recording.id}, status=201)


def _recording_view(r: Recording) -> dict[str, object]:
    return {"id": r.id, "kind": r.kind, "segment": r.segment, "sha256": r.sha256,
            "size_bytes": r.size_bytes, "duration_ms": r.duration_ms,
            "started_at": r.started_at.isoformat(),
            "ended_at": r.ended_at.isoformat() if r.ended_at else None}


@api.endpoint("GET", "/sessions/{session_id}/recordings",
              summary="List the recorded segments (audited)", tag="recordings",
              permission=P.VIEW_RECORDING, returns=RecordingList)
async def list_recordings(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    rows = await Recording.filter(session_id=session.id).order_by("kind", "segment")
    await audit.record_alone(principal.actor, "recording.list", object_type="session",
                             object_id=str(session.id))
    return json_response({"items": [_recording_view(r) for r in rows]})


@api.endpoint("GET", "/sessions/{session_id}/recordings/{recording_id}/file",
              summary="Download one recorded segment (audited)", tag="recordings",
              permission=P.VIEW_RECORDING, produces="application/octet-stream",
              responses={206: "application/octet-stream", 410: "deleted after its retention",
                         416: "range not satisfiable"})
async def download_recording(request: web.Request) -> web.StreamResponse:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    recording = await Recording.get_or_none(id=path_int(request, "recording_id"),
                                            session_id=session.id)
    if recording is None:
        raise ApiProblem(404, "recording_not_found", "找不到该录像")
    deps = request.app[DEPS]
    await audit.record_alone(principal.actor, "recording.download", object_type="recording",
                             object_id=str(recording.id), details={"session": str(session.id)})
    try:
        return await object_response(request, deps.storage, recording.path,
                                     headers={"X-Content-SHA256": recording.sha256})
    except ObjectMissing:
        raise ApiProblem(410, "recording_deleted", "该录像已按保存期限删除或不可用") from None


@api.endpoint("GET", "/sessions/{session_id}/verify",
              summary="Verify the sealed manifest against the stored evidence (R-31): status "
              "intact | incomplete | altered | not_sealed; ok is true only when intact",
              tag="recordings", permission=P.VIEW_RECORDING, returns=Verification)
async def get_verify(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    result = await verify_session(request.app[DEPS], session.id)
    await audit.record_alone(principal.actor, "session.verify", object_type="session",
                             object_id=str(session.id),
                             details={"ok": result.ok, "status": result.status.value})
    return json_response({
        "ok": result.ok, "problems": result.problems, "status": result.status.value,
        "state": result.state.value, "sealed": result.complete is not None,
        "complete": result.complete, "altered": result.altered,
        "incomplete": result.incomplete, "notes": result.notes,
    })
