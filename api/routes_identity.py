"""Customer identity verification (R-12): upload both sides of the ID card and a short clip of
the random liveness challenges, then submit; the engines run as a background job and the page
is pushed the outcome. Uploads are size- and type-checked, re-encoded and stored encrypted; a
card photo the engines could not judge (too small, no card, blurred, glare, no portrait) is
refused on upload with what to do, before it can cost an attempt."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from aiohttp import web
from redis.asyncio import Redis

from api.auth import customer
from api.keys import DEPS, IDENTITY, REDIS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import IdentityPlan, SubmitView, UploadView
from models.sessions import IdentityCheck, RecordingSession
from workflow import identity
from workflow.evidence import MAX_IMAGE_BYTES, MAX_VIDEO_BYTES
from workflow.identity_jobs import pending_key, plan_key

api = Api()
PENDING_SECONDS = 600


async def challenge_plan(request: web.Request, session_id: UUID, attempt: int) -> dict[str, Any]:
    """One random plan per attempt, kept until the attempt is decided."""
    redis: Redis = request.app[REDIS]
    key = plan_key(session_id, attempt)
    raw = await redis.get(key)
    if raw is None:
        plan = request.app[IDENTITY]().new_challenge_plan()
        await redis.set(key, plan.model_dump_json(), ex=24 * 3600, nx=True)
        raw = await redis.get(key)
    assert raw is not None
    data: dict[str, Any] = json.loads(raw)
    return data


@api.endpoint("GET", "/customer/identity",
              summary="The coming identity attempt: uploads so far, the liveness challenges",
              tag="identity", auth="customer", returns=IdentityPlan,
              responses={404: "the session is gone"})
async def get_identity(request: web.Request) -> web.Response:
    principal = customer(request)
    session = await RecordingSession.get(id=principal.session_id)
    attempt = session.identity_attempts + 1
    uploads = await identity.latest_uploads(session.id, attempt)
    last = await IdentityCheck.filter(session_id=session.id).order_by("-attempt").first()
    plan = await challenge_plan(request, session.id, attempt)
    from media.identity.results import Challenge

    return json_response({
        "attempt": attempt,
        "attempts_left": max(request.app[DEPS].settings.identity_max_attempts
                             - session.identity_attempts, 0),
        "uploads": sorted(uploads),
        "challenges": [{"code": c, "prompt": Challenge(c).prompt} for c in plan["challenges"]],
        "time_limit_s": plan["time_limit_s"],
        "pending": bool(await request.app[REDIS].exists(pending_key(session.id))),
        "last_check": {"attempt": last.attempt, "passed": last.passed,
                       "reasons": last.reasons} if last else None,
    })


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """Reads the body up to `limit` bytes (uploads are larger than the JSON body limit)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiProblem(413, "body_too_large", "上传的文件过大")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise ApiProblem(413, "body_too_large", "上传的文件过大")
        chunks.append(chunk)
    return b"".join(chunks)


@api.endpoint("POST", "/customer/identity/uploads/{kind:id_front|id_back|liveness}",
              summary="Upload one side of the ID card (JPEG/PNG) or the liveness clip "
              "(webm/mp4) as the raw request body", tag="identity", auth="customer",
              returns=UploadView, status=201,
              responses={404: "the session is gone", 409: "not the time to upload",
                         413: "too large", 422: "wrong type (unsupported_media_type), "
                         "unreadable, or a card photo the engines could not judge "
                         "(card_photo_low_resolution, _no_card, _blurred, _glare, _no_face: "
                         "the message says what to do; no attempt is spent)"})
async def post_upload(request: web.Request) -> web.Response:
    principal = customer(request)
    kind = request.match_info["kind"]
    await identity.check_upload_allowed(principal)  # before reading or decoding anything
    data = await _read_limited(request,
                               MAX_VIDEO_BYTES if kind == "liveness" else MAX_IMAGE_BYTES)
    if not data:
        raise ApiProblem(422, "upload_empty", "没有收到文件，请重新上传")
    upload = await identity.save_upload(request.app[DEPS], principal, kind,
                                        request.content_type, data)
    return json_response({"kind": upload.kind, "attempt": upload.attempt,
                          "size_bytes": upload.size_bytes}, status=201)


@api.endpoint("POST", "/customer/identity/submit",
              summary="Submit the attempt; the engines run in the background (202)",
              tag="identity", auth="customer", returns=SubmitView, status=202,
              responses={404: "the session is gone",
                         409: "being checked already, or uploads missing"})
async def post_submit(request: web.Request) -> web.Response:
    principal = customer(request)
    redis: Redis = request.app[REDIS]
    if not await redis.set(pending_key(principal.session_id), "1", ex=PENDING_SECONDS, nx=True):
        raise ApiProblem(409, "identity_pending", "正在核验中，请稍候")
    try:
        attempt = await identity.submit_attempt(request.app[DEPS], principal)
    except Exception:
        await redis.delete(pending_key(principal.session_id))
        raise
    return json_response({"attempt": attempt, "status": "processing"}, status=202)
