"""Customer endpoints behind the invitation: open, consent (R-10), follow the script and
acknowledge each step (R-24), sign (R-25). A customer token reaches only its own session."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Literal
from weakref import WeakKeyDictionary

from aiohttp import web
from pydantic import Field

from api.auth import client_ip, customer, staff
from api.http import path_str, path_uuid, read_json
from api.keys import CALL_HUB, CUSTOMER_TOKENS, DEPS, REDIS
from api.load_shedding import REFUSALS
from api.problems import ApiProblem, json_response
from api.registry import THROTTLED, Api
from api.responses import (
    AckResult,
    ConsentTexts,
    CustomerSessionView,
    CustomerToken,
    DocumentProgress,
    Resp,
    SignatureView,
)
from api.schemas import (
    AckBody,
    Body,
    ConsentBody,
    DocumentViewBody,
    OpenInvitationBody,
    SignBody,
    StepBody,
)
from api.views import customer_session_view
from media.call.hub import CallHub
from media.call.quality import Inbound, InboundMeter
from models import lean
from models.sessions import RecordingSession
from scripts_library.documents import page_store
from security.roles import Permission
from workflow import (
    call,
    customer_controls,
    documents,
    invitations,
    network_quality,
    resume_codes,
    signing,
)
from workflow.consent import ConsentAnswer, give_consent
from workflow.consent_texts import CONSENT_TEXTS, OPENING_PROMPT, RISK_SENTENCE
from workflow.sessions import get_visible
from workflow.steps import steps_of

api = Api()


@api.endpoint("GET", "/consent-texts", summary="The current consent texts and their hashes",
              tag="customer", auth="none", returns=ConsentTexts, responses={429: THROTTLED})
async def get_consent_texts(request: web.Request) -> web.Response:
    return json_response({
        "texts": [{"kind": t.kind.value, "version": t.version, "title": t.title, "text": t.text,
                   "sha256": t.sha256} for t in CONSENT_TEXTS.values()],
        "opening_prompt": OPENING_PROMPT, "risk_sentence": RISK_SENTENCE,
    })


@api.endpoint("POST", "/invitations/open",
              summary="Open an invitation link (single use) and get a customer token",
              tag="customer", auth="none", body=OpenInvitationBody, returns=CustomerToken,
              responses={404: "unknown link", 409: "the session cannot be opened now",
                         410: "used, revoked or expired link", 429: THROTTLED})
async def post_open(request: web.Request) -> web.Response:
    body = await read_json(request, OpenInvitationBody)
    opened = await invitations.open_link(
        request.app[DEPS], body.token, client_ip(request),
        request.headers.get("User-Agent", ""), request.app[REFUSALS],
    )
    session = opened.session
    token = await request.app[CUSTOMER_TOKENS].issue(
        invitations.customer_claims(session.id, opened.invitation_id))
    return json_response({"customer_token": token,
                              "expires_in": request.app[CUSTOMER_TOKENS].ttl_seconds,
                              "session": await customer_session_view(session)})


async def _session(request: web.Request) -> RecordingSession:
    # The page polls this: the row is read without the ORM's query builder (issue 14).
    session = await lean.by_pk(RecordingSession, customer(request).session_id)
    if session is None:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    return session


@api.endpoint("GET", "/customer/session", summary="The customer's own session",
              tag="customer", auth="customer", returns=CustomerSessionView,
              responses={404: "the session is gone"})
async def get_customer_session(request: web.Request) -> web.Response:
    return json_response(await customer_session_view(await _session(request)))


@api.endpoint("POST", "/customer/consent",
              summary="Agree to (or decline) recording and personal-information processing",
              tag="customer", auth="customer", body=ConsentBody, returns=CustomerSessionView,
              responses={404: "the session is gone", 409: "not the time to consent",
                         422: "a text hash is not current"})
async def post_consent(request: web.Request) -> web.Response:
    body = await read_json(request, ConsentBody)
    session = await give_consent(request.app[DEPS], customer(request), [
        ConsentAnswer(a.kind, a.text_hash, a.agreed) for a in body.answers
    ])
    return json_response(await customer_session_view(session))


@api.endpoint("POST", "/customer/acknowledgements",
              summary="Answer the current script step (stored before the reply)",
              tag="customer", auth="customer", body=AckBody, returns=AckResult, status=201,
              responses={200: AckResult, 404: "the session is gone",
                         409: "not the step, or its answer is not open yet"})
async def post_ack(request: web.Request) -> web.Response:
    body = await read_json(request, AckBody)
    result = await call.acknowledge(
        request.app[DEPS], customer(request), body.step_id, body.answer, body.answer_kind,
        body.text, body.client_event_id,
    )
    ack = result.acknowledgement
    return json_response({
        "acknowledgement": {"id": ack.id, "step_id": ack.step_id, "answer": ack.answer.value,
                            "at": ack.at.isoformat(), "offset_ms": ack.offset_ms},
        "duplicate": result.duplicate,
        "session": await customer_session_view(result.session),
    }, status=200 if result.duplicate else 201)


@api.endpoint("POST", "/customer/signature",
              summary="Submit the hand-copy (strokes per box) and/or the signature (strokes), "
                      "with the image the page drew; the server reads the handwriting",
              tag="customer", auth="customer", body=SignBody, returns=SignatureView, status=201,
              responses={404: "the session is gone", 409: "not the time to write",
                         422: "blank, scribbled, misread or malformed writing (the detail says "
                              "which boxes)"})
async def post_signature(request: web.Request) -> web.Response:
    body = await read_json(request, SignBody)
    try:
        image = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiProblem(422, "signature_not_image", "签名图片格式不正确，请重新签名") from exc
    signature = await signing.sign(request.app[DEPS], customer(request), body.copy_strokes,
                                   body.signature_strokes, image)
    return json_response({"id": signature.id, "image_sha256": signature.image_sha256,
                          "strokes_sha256": signature.strokes_sha256,
                          "recognised_text": signature.recognised_text, "cer": signature.cer,
                          "at": signature.at.isoformat()}, status=201)


@api.endpoint("POST", "/customer/documents/views",
              summary="The page of the current step's document now on screen (0: left it); "
                      "the server times each view by its own clock",
              tag="customer", auth="customer", body=DocumentViewBody, returns=DocumentProgress,
              status=201,
              responses={404: "the session is gone", 409: "no document to read now",
                         422: "page out of range"})
async def post_document_view(request: web.Request) -> web.Response:
    body = await read_json(request, DocumentViewBody)
    result = await documents.view_page(request.app[DEPS], customer(request), body.step_id,
                                       body.page)
    return json_response(result, status=201)


@api.endpoint("GET", "/customer/documents/pages/{sha256}",
              summary="One rendered page (PNG) of a document pinned in the customer's session",
              tag="customer", auth="customer", produces="image/png",
              responses={404: "not a page of this session"})
async def get_document_page(request: web.Request) -> web.Response:
    sha = path_str(request, "sha256", 64)
    session = await _session(request)
    pinned = {page["sha256"] for step in steps_of(session)
              for page in (documents.pinned(step) or {}).get("pages", [])}
    # Blocking (a local file, or a read-through from the shared store): off the event loop.
    data = await asyncio.to_thread(page_store().get_page, sha) if sha in pinned else None
    if data is None:
        raise ApiProblem(404, "page_not_found", "找不到该文件页面")
    return web.Response(body=data, content_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400, immutable"})


# -- the first screen, coming back with a code, 再听一遍, devices (issue 17) -------------------


class Introduction(Resp):
    """Who the customer deals with (the first screen): no personal data."""

    insurer: str
    product: str
    agent: str
    agent_licence_no: str
    hotline: str


@api.endpoint("POST", "/invitations/preview",
              summary="What an unopened invitation link is about (insurer, product, agent with "
                      "licence number, hotline), without using the link",
              tag="customer", auth="none", body=OpenInvitationBody, returns=Introduction,
              responses={404: "unknown link", 410: "used, revoked or expired link",
                         429: THROTTLED})
async def post_preview(request: web.Request) -> web.Response:
    body = await read_json(request, OpenInvitationBody)
    return json_response(await invitations.preview(request.app[DEPS], body.token))


@api.endpoint("GET", "/customer/introduction",
              summary="Who the customer deals with: insurer, product, agent, licence, hotline",
              tag="customer", auth="customer", returns=Introduction,
              responses={404: "the session is gone"})
async def get_introduction(request: web.Request) -> web.Response:
    return json_response(await invitations.introduction(await _session(request)))


class ResumeBody(Body):
    code: str = Field(min_length=1, max_length=12)
    # The (used) invitation link the page was opened from, when there is one.
    token: str | None = Field(default=None, min_length=1, max_length=200)


class ResumeCodeIssued(Resp):
    code: str = Field(pattern=r"^[0-9]{6}$")
    expires_at: str
    ttl_seconds: int


@api.endpoint("POST", "/invitations/resume",
              summary="Come back to an unfinished session with the agent's one-time code "
                      "(single use, 10 minutes); with the used link or without",
              tag="customer", auth="none", body=ResumeBody, returns=CustomerToken,
              responses={404: "unknown link", 409: "the session was not opened yet",
                         410: "code expired, used or burnt; or the session is finished",
                         422: "wrong code (attempts left)", 429: THROTTLED})
async def post_resume(request: web.Request) -> web.Response:
    body = await read_json(request, ResumeBody)
    session_id = None
    if body.token:
        session_id = await invitations.link_session(body.token)
        if session_id is None:
            raise ApiProblem(404, "invitation_not_found", "邀请链接无效，请向销售人员索取新的链接")
    resumed = await resume_codes.redeem(
        request.app[DEPS], request.app[REDIS], body.code, client_ip(request),
        request.headers.get("User-Agent", ""), session_id, request.app[REFUSALS])
    # The token names the session's current invitation: a later re-issue revokes it.
    token = await request.app[CUSTOMER_TOKENS].issue(
        invitations.customer_claims(resumed.session.id, resumed.invitation_id,
                                    via="resume_code"))
    return json_response({"customer_token": token,
                          "expires_in": request.app[CUSTOMER_TOKENS].ttl_seconds,
                          "session": await customer_session_view(resumed.session)})


@api.endpoint("POST", "/sessions/{session_id}/resume-code",
              summary="A one-time code for the customer to come back to the session (one "
                      "active per session, replaces the earlier one; the agent reads it out)",
              tag="sessions", permission=Permission.RECORD, returns=ResumeCodeIssued,
              status=201, responses={404: "not the agent's session",
                                     409: "the session is not open or already finished"})
async def post_resume_code(request: web.Request) -> web.Response:
    principal = staff(request)
    session = await get_visible(principal, path_uuid(request))
    issued = await resume_codes.issue(request.app[DEPS], request.app[REDIS], principal,
                                      session.id)
    return json_response({"code": issued.code, "expires_at": issued.expires_at.isoformat(),
                          "ttl_seconds": issued.ttl_seconds}, status=201)


@api.endpoint("POST", "/customer/replay",
              summary="再听一遍: play the current step's speech again (its answer closes until "
                      "the replay was heard in full)",
              tag="customer", auth="customer", body=StepBody, returns=CustomerSessionView,
              status=202, responses={404: "the session is gone",
                                     409: "not the current TTS step, paused, or replayed "
                                          "too often"})
async def post_replay(request: web.Request) -> web.Response:
    body = await read_json(request, StepBody)
    session = await customer_controls.replay_step(request.app[DEPS], customer(request),
                                                  body.step_id)
    return json_response(await customer_session_view(session), status=202)


# "unused": not asked for at this stage (the liveness clip needs the camera only).
DeviceState = Literal["ok", "unused", "denied", "missing", "busy", "error"]


class DevicesBody(Body):
    camera: DeviceState
    microphone: DeviceState
    stage: Literal["liveness", "call"]
    error: str = Field(default="", max_length=100)


class DevicesRecorded(Resp):
    recorded: bool
    event: str


@api.endpoint("POST", "/customer/devices",
              summary="The page's camera and microphone: refused or missing (the agent is told "
                      "live: customer_device_denied), or both live again",
              tag="customer", auth="customer", body=DevicesBody, returns=DevicesRecorded,
              responses={404: "the session is gone", 409: "devices are not needed now"})
async def post_devices(request: web.Request) -> web.Response:
    body = await read_json(request, DevicesBody)
    return json_response(await customer_controls.report_devices(
        request.app[DEPS], customer(request), body.camera, body.microphone, body.stage,
        body.error))


class NetworkBody(Body):
    """What the page's connection measures (RTCPeerConnection.getStats), null when unknown."""

    loss_pct: float | None = Field(default=None, ge=0, le=100)
    rtt_ms: float | None = Field(default=None, ge=0, le=60_000)
    send_fps: float | None = Field(default=None, ge=0, le=240)
    send_height: int | None = Field(default=None, ge=0, le=4320)
    # The sending browser's qualityLimitationReason: "cpu" means a slow phone, not the network.
    limitation: Literal["none", "cpu", "bandwidth", "other"] | None = None


class NetworkReported(Resp):
    poor: bool
    hint: str
    verdict: str
    reasons: list[str]
    recorded: bool


# Per call hub (one per app): the customer's incoming video as this node receives it.
_meters: WeakKeyDictionary[CallHub, InboundMeter] = WeakKeyDictionary()


@api.endpoint("POST", "/customer/network",
              summary="The page's connection measures during the call; the server adds what it "
                      "receives and decides whether the network is poor (the agent is told "
                      "live: network_poor / network_recovered), returning the customer's hint",
              tag="customer", auth="customer", body=NetworkBody, returns=NetworkReported,
              responses={404: "the session is gone", 409: "not in the call"})
async def post_network(request: web.Request) -> web.Response:
    body = await read_json(request, NetworkBody)
    principal = customer(request)
    hub = request.app.get(CALL_HUB)
    inbound = Inbound()
    if hub is not None:
        meter = _meters.setdefault(hub, InboundMeter())
        inbound = await meter.read(hub, str(principal.session_id))
    measures = network_quality.Measures(
        loss_pct=body.loss_pct, rtt_ms=body.rtt_ms, send_fps=body.send_fps,
        send_height=body.send_height, recv_fps=inbound.fps, recv_loss_pct=inbound.loss_pct,
        limitation=body.limitation)
    return json_response(await network_quality.report(request.app[DEPS], principal, measures))
