"""The bank app's server-to-server API (every call HMAC-SHA256 signed, nonces single-use in
Redis): create an invitation for an order's session, read the status of an application
(R-43), get a fresh signed deep link; and the webview's open of a signed deep link (R-20)."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from aiohttp import web
from pydantic import Field

from api.auth import client_ip
from api.http import path_str, read_json
from api.partner_auth import Partner, PartnerGate, authenticate
from api.problems import ApiProblem, json_response
from api.registry import THROTTLED, Api
from api.responses import BankInvitation, BankStatus, ChannelCustomerToken, DeepLink
from api.schemas import Body
from api.views import customer_session_view
from bot import bank
from bot import invitations as channel_invitations
from bot.runtime import CHANNELS, Channels
from bot.settings import BankClient
from models.channels import ChannelInvitation, ChannelKind
from models.org import Institution
from models.people import Agent, User
from models.sales import Order
from models.sessions import RecordingSession
from security import audit
from security.audit import Actor
from security.partner_signing import link_signature_ok
from workflow.principals import StaffPrincipal
from workflow.states import TERMINAL

log = logging.getLogger(__name__)
api = Api()
SIGNED = "Signed with HMAC-SHA256 (X-Shuanglu-Client, -Timestamp, -Nonce, -Signature)"
REF = r"^[A-Za-z0-9_\-]+$"
CUSTOMER_REF = r"^[A-Za-z0-9_\-.]{1,128}$"
APPLICATION_NO = re.compile(r"[A-Za-z0-9\-]{4,64}")


def _bank(request: web.Request) -> Channels:
    channels = request.app[CHANNELS]
    if not channels.config.bank.enabled:
        raise ApiProblem(404, "channel_disabled", "该渠道未开通")
    return channels


BANK = Partner("bank", "bank-app", unknown_client="bank_client_unknown",
               audit_unknown_client=False)


async def signed_client(request: web.Request) -> tuple[Channels, str, BankClient]:
    """Authenticates a server-to-server call (api.partner_auth: 413, 401 and 429 problems,
    signature refusals audited)."""
    channels = _bank(request)
    settings = channels.config.bank
    caller = await authenticate(request, BANK, PartnerGate(
        channels.config.bank_clients, channels.redis, int(channels.now().timestamp()),
        settings.max_body_bytes, settings.nonce_ttl_seconds,
        settings.timestamp_tolerance_seconds, per_client=channels.limits.bank_client))
    return channels, caller.client_id, caller.client


async def _order(client: BankClient, application_no: str) -> Order:
    order = await Order.get_or_none(application_no=application_no)
    if order is not None:
        institution = await Institution.get(id=order.institution_id)
        if institution.code == client.institution:
            return order
    raise ApiProblem(404, "order_not_found", "找不到该投保单")


class BankInvitationBody(Body):
    application_no: str = Field(pattern=r"^[A-Za-z0-9\-]{4,64}$")
    bank_customer_ref: str = Field(pattern=CUSTOMER_REF)


class LaunchBody(Body):
    bank_customer_ref: str = Field(pattern=CUSTOMER_REF)


class BankOpenBody(Body):
    ref: str = Field(min_length=16, max_length=64, pattern=REF)
    cu: str = Field(pattern=CUSTOMER_REF)
    exp: int = Field(ge=0, le=2**53)
    n: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    sig: str = Field(pattern=r"^[0-9a-f]{48}$")


@api.endpoint("POST", "/bank/invitations",
              summary="Bank app (S2S): invite the order's customer; returns a signed deep link",
              tag="bank", auth="none", body=BankInvitationBody, returns=BankInvitation,
              status=201, responses={401: SIGNED, 404: "unknown application", 409: "no session "
                                     "yet", 429: THROTTLED})
async def post_bank_invitation(request: web.Request) -> web.Response:
    channels, client_id, client = await signed_client(request)
    body = await read_json(request, BankInvitationBody)
    order = await _order(client, body.application_no)
    session = await RecordingSession.filter(order_id=order.id).exclude(
        state__in=list(TERMINAL)).order_by("-created_at").first()
    if session is None:
        raise ApiProblem(409, "session_not_created", "该投保单尚未由销售人员发起远程双录")
    agent = await Agent.get(id=session.agent_id)
    user = await User.get(id=agent.user_id)
    # The workflow records the invitation as the order's agent's act, made through the bank
    # app; the label and the audit entry below say so.
    principal = StaffPrincipal(
        user_id=user.id, username=f"{user.username} via bank-app:{client_id}",
        display_name=user.display_name, role=user.role, institution_id=user.institution_id,
        branch_id=user.branch_id, agent_id=agent.id, ip=client_ip(request),
    )
    invitation, issued, ref = await channel_invitations.issue(
        channels, principal, session.id, ChannelKind.BANK_APP, "bank_app", bank_client=client_id)
    invitation.bank_customer_ref = body.bank_customer_ref
    invitation.bound_app_id = f"bank:{client_id}"
    invitation.bound_openid = body.bank_customer_ref
    invitation.bound_at = channels.now()
    await invitation.save(update_fields=["bank_customer_ref", "bound_app_id", "bound_openid",
                                         "bound_at"])
    await audit.record_alone(
        Actor("service", client_id, f"bank-app:{client_id}", client_ip(request)),
        "bank.invitation.created", object_type="session", object_id=str(session.id),
        details={"application_no": body.application_no, "channel_invitation_id": invitation.id},
    )
    link = bank.deep_link(channels, client, ref, body.bank_customer_ref, issued.expires_at)
    return json_response({"application_no": body.application_no, "session_id": str(session.id),
                          "invitation_id": invitation.id, **link}, status=201)


@api.endpoint("GET", "/bank/orders/{application_no}/status",
              summary="Bank app (S2S): is the recording complete, is QA complete (R-43)",
              tag="bank", auth="none", returns=BankStatus,
              responses={401: SIGNED, 404: "unknown application", 413: "body too large",
                         429: THROTTLED})
async def get_bank_status(request: web.Request) -> web.Response:
    _, _, client = await signed_client(request)
    application_no = path_str(request, "application_no", 64, APPLICATION_NO)
    order = await _order(client, application_no)
    session = await RecordingSession.filter(order_id=order.id).order_by("-created_at").first()
    if session is None:
        return json_response({"application_no": application_no, "session_id": None,
                              "state": None, "recording_complete": False, "qa_complete": False,
                              "qa_passed": False})
    return json_response(bank.status_view(application_no, session))


@api.endpoint("POST", "/bank/invitations/{ref}/launch",
              summary="Bank app (S2S): a fresh single-use deep link for the logged-in customer",
              tag="bank", auth="none", body=LaunchBody, returns=DeepLink, status=201,
              responses={401: SIGNED, 403: "another customer", 404: "unknown invitation",
                         410: "revoked or expired", 429: THROTTLED})
async def post_launch(request: web.Request) -> web.Response:
    channels, client_id, client = await signed_client(request)
    body = await read_json(request, LaunchBody)
    ref = path_str(request, "ref", 64, re.compile(REF))
    invitation = await channel_invitations.find(ref)
    if invitation.bank_client != client_id:
        raise ApiProblem(404, "invitation_not_found", "邀请链接无效，请向销售人员索取新的链接")
    if invitation.bank_customer_ref != body.bank_customer_ref:
        raise ApiProblem(403, "invitation_bound_to_other_user", "该邀请仅限受邀客户本人使用")
    if invitation.revoked_at is not None:
        raise ApiProblem(410, "invitation_revoked", "该邀请链接已作废，请使用最新收到的链接")
    expires = channels.now() + timedelta(seconds=channels.config.bank.launch_link_ttl_seconds)
    return json_response(bank.deep_link(channels, client, ref, body.bank_customer_ref, expires),
                         status=201)


@api.endpoint("POST", "/bank/invitations/open",
              summary="Open a signed bank-app deep link in the webview (single use)",
              tag="bank", auth="none", body=BankOpenBody, returns=ChannelCustomerToken,
              responses={403: "bad signature or another customer", 404: "unknown invitation",
                         409: "the session cannot be opened now", 410: "used or expired",
                         429: THROTTLED})
async def post_bank_open(request: web.Request) -> web.Response:
    channels = _bank(request)
    body = await read_json(request, BankOpenBody)
    ip = client_ip(request)
    if await channels.limits.ip_opens.hit(ip) > channels.limits.ip_opens.limit:
        raise ApiProblem(429, "too_many_requests", "操作过于频繁，请稍后再试")
    if not link_signature_ok(channels.config.deep_link_key, body.sig, body.ref, body.cu,
                             str(body.exp), body.n):
        raise ApiProblem(403, "link_signature_invalid", "链接无效，请在银行App内重新打开")
    now = int(channels.now().timestamp())
    if body.exp <= now:
        raise ApiProblem(410, "link_expired", "链接已过期，请在银行App内重新打开")
    invitation: ChannelInvitation = await channel_invitations.find(body.ref)
    if invitation.channel != ChannelKind.BANK_APP or invitation.bank_client is None:
        raise ApiProblem(404, "invitation_not_found", "邀请链接无效，请向销售人员索取新的链接")
    if not await channels.redis.set(f"bank:link:{body.n}", 1, nx=True,
                                    ex=max(body.exp - now, 1) + 60):
        raise ApiProblem(410, "link_used", "该链接已使用，请在银行App内重新打开")
    person = channel_invitations.Person(f"bank:{invitation.bank_client}", body.cu)
    redeemed = await channel_invitations.redeem(
        channels, body.ref, person, ip, request.headers.get("User-Agent", ""),
        channels.customer_tokens)
    return json_response({
        "customer_token": redeemed.customer_token,
        "expires_in": channels.customer_tokens.ttl_seconds, "reentry": redeemed.reentry,
        "session": await customer_session_view(redeemed.session),
    })
