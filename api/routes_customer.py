"""Customer endpoints behind the invitation: open, consent (R-10), follow the script and
acknowledge each step (R-24), sign (R-25). A customer token reaches only its own session."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from api.auth import client_ip, customer
from api.http import read_json
from api.keys import CUSTOMER_TOKENS, DEPS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.schemas import AckBody, ConsentBody, OpenInvitationBody, SignBody
from api.views import customer_session_view
from models.sessions import RecordingSession
from workflow import call, invitations
from workflow.consent import ConsentAnswer, give_consent
from workflow.consent_texts import CONSENT_TEXTS, OPENING_PROMPT, RISK_SENTENCE

api = Api()


@api.endpoint("GET", "/consent-texts", summary="The current consent texts and their hashes",
              tag="customer", auth="none")
async def get_consent_texts(request: web.Request) -> web.Response:
    return json_response({
        "texts": [{"kind": t.kind.value, "version": t.version, "title": t.title, "text": t.text,
                   "sha256": t.sha256} for t in CONSENT_TEXTS.values()],
        "opening_prompt": OPENING_PROMPT, "risk_sentence": RISK_SENTENCE,
    })


@api.endpoint("POST", "/invitations/open",
              summary="Open an invitation link (single use) and get a customer token",
              tag="customer", auth="none", body=OpenInvitationBody,
              responses={404: "unknown link", 410: "used, revoked or expired link"})
async def post_open(request: web.Request) -> web.Response:
    body = await read_json(request, OpenInvitationBody)
    session = await invitations.open_invitation(
        request.app[DEPS], body.token, client_ip(request),
        request.headers.get("User-Agent", ""),
    )
    token = await request.app[CUSTOMER_TOKENS].issue({"session_id": str(session.id)})
    return json_response({"customer_token": token,
                              "expires_in": request.app[CUSTOMER_TOKENS].ttl_seconds,
                              "session": await customer_session_view(session)})


async def _session(request: web.Request) -> RecordingSession:
    session = await RecordingSession.get_or_none(id=customer(request).session_id)
    if session is None:
        raise ApiProblem(404, "session_not_found", "找不到该录制会话")
    return session


@api.endpoint("GET", "/customer/session", summary="The customer's own session",
              tag="customer", auth="customer")
async def get_customer_session(request: web.Request) -> web.Response:
    return json_response(await customer_session_view(await _session(request)))


@api.endpoint("POST", "/customer/consent",
              summary="Agree to (or decline) recording and personal-information processing",
              tag="customer", auth="customer", body=ConsentBody)
async def post_consent(request: web.Request) -> web.Response:
    body = await read_json(request, ConsentBody)
    session = await give_consent(request.app[DEPS], customer(request), [
        ConsentAnswer(a.kind, a.text_hash, a.agreed) for a in body.answers
    ])
    return json_response(await customer_session_view(session))


@api.endpoint("POST", "/customer/acknowledgements",
              summary="Answer the current script step (stored before the reply)",
              tag="customer", auth="customer", body=AckBody)
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
              summary="Submit the hand-copied risk sentence and the signature image",
              tag="customer", auth="customer", body=SignBody)
async def post_signature(request: web.Request) -> web.Response:
    body = await read_json(request, SignBody)
    try:
        image = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiProblem(422, "signature_not_image", "签名图片格式不正确，请重新签名") from exc
    signature = await call.sign(request.app[DEPS], customer(request), body.risk_sentence, image)
    return json_response({"id": signature.id, "image_sha256": signature.image_sha256,
                              "at": signature.at.isoformat()}, status=201)
