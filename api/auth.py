"""Who is calling: staff bearer tokens and customer bearer tokens, both kept in Redis."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api.keys import CONFIG, CUSTOMER_TOKENS, PRINCIPAL, STAFF_TOKENS
from api.problems import ApiProblem
from models.people import Agent, User
from workflow.invitations import INVITATION_REISSUED, token_revoked
from workflow.principals import CustomerPrincipal, StaffPrincipal


def client_ip(request: web.Request) -> str:
    """The peer address; X-Forwarded-For only when a trusted proxy is configured."""
    config = request.app[CONFIG]
    if config.settings.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return (request.remote or "")[:64]


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(401, "unauthenticated", "请先登录")
    return token.strip()


async def resolve_staff(request: web.Request) -> StaffPrincipal:
    return await staff_from_token(request, bearer_token(request))


async def staff_from_token(request: web.Request, token: str) -> StaffPrincipal:
    claims = await request.app[STAFF_TOKENS].resolve(token)
    if not claims or "user_id" not in claims:
        raise ApiProblem(401, "token_invalid", "登录已失效，请重新登录")
    user = await User.get_or_none(id=claims["user_id"], active=True)
    if user is None:
        raise ApiProblem(401, "token_invalid", "登录已失效，请重新登录")
    agent = await Agent.get_or_none(user_id=user.id)
    return StaffPrincipal(
        user_id=user.id, username=user.username, display_name=user.display_name,
        role=user.role, institution_id=user.institution_id, branch_id=user.branch_id,
        agent_id=agent.id if agent else None, ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", "")[:300],
    )


async def resolve_customer(request: web.Request) -> CustomerPrincipal:
    return await customer_from_token(request, bearer_token(request))


async def customer_from_token(request: web.Request, token: str) -> CustomerPrincipal:
    claims = await request.app[CUSTOMER_TOKENS].resolve(token)
    if not claims or "session_id" not in claims:
        raise ApiProblem(401, "customer_token_invalid", "页面已失效，请重新打开邀请链接")
    if await token_revoked(claims):  # a newer invitation was sent
        raise ApiProblem(401, *INVITATION_REISSUED)
    return CustomerPrincipal(
        session_id=UUID(claims["session_id"]), ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", "")[:300],
    )


def staff(request: web.Request) -> StaffPrincipal:
    principal = request[PRINCIPAL]
    assert isinstance(principal, StaffPrincipal)
    return principal


def customer(request: web.Request) -> CustomerPrincipal:
    principal = request[PRINCIPAL]
    assert isinstance(principal, CustomerPrincipal)
    return principal
