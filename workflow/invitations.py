"""Invitations: single-use, expiring, unguessable links; re-issuing revokes the old ones (R-20).

Re-issuing revokes every earlier link of the session, opened or not, and with them the customer
tokens they gave: a token names the invitation it came from (`customer_claims`), and a token of
a revoked invitation is refused (`token_revoked`) with 邀请已更新，请打开最新的邀请链接. Whoever
opened an old (perhaps forwarded) link can do nothing more once the agent sends a new one."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from models import lean
from models.sessions import Invitation, RecordingSession, SessionState
from security import audit
from security.audit import Actor, RefusalLog
from security.tokens import token_digest
from workflow.core import WorkflowDeps, locked, require_state
from workflow.errors import Gone, NotFound
from workflow.event_types import EventType
from workflow.principals import StaffPrincipal


@dataclass(frozen=True)
class IssuedInvitation:
    token: str
    url: str
    expires_at: datetime
    channel: str


async def issue(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, channel: str
) -> IssuedInvitation:
    token = secrets.token_urlsafe(32)
    now = deps.clock()
    expires_at = now + timedelta(seconds=deps.settings.invitation_ttl_seconds)
    async with locked(deps, session_id, "invite") as unit:
        earlier = Invitation.filter(session_id=session_id, revoked_at__isnull=True)
        opened = await earlier.filter(used_at__isnull=False).using_db(unit.conn).count()
        revoked = await earlier.using_db(unit.conn).update(revoked_at=now)
        await Invitation.create(
            session_id=session_id, token_hash=token_digest(token), channel=channel,
            expires_at=expires_at, using_db=unit.conn,
        )
        await unit.move(principal.actor, SessionState.INVITED, EventType.INVITED,
                        {"channel": channel, "revoked_previous": revoked,
                         "revoked_opened": opened, "expires_at": expires_at.isoformat()})
    url = f"{deps.settings.public_url}/h5/invite/{token}"
    return IssuedInvitation(token, url, expires_at, channel)


@dataclass(frozen=True)
class Opened:
    session: RecordingSession
    invitation_id: int


def customer_claims(session_id: UUID, invitation_id: int, **more: Any) -> dict[str, Any]:
    """What a customer token carries: its session and the invitation it was opened with."""
    return {"session_id": str(session_id), "invitation_id": invitation_id, **more}


INVITATION_REISSUED = ("invitation_reissued", "邀请已更新，请打开最新的邀请链接")


async def token_revoked(claims: dict[str, Any]) -> bool:
    """True when the token's invitation was revoked (a newer link was sent). Tokens issued
    before tokens named their invitation carry none and expire within their lifetime."""
    invitation_id = claims.get("invitation_id")
    if not isinstance(invitation_id, int):
        return False
    # Asked on every customer request: written out (models.lean, issue 14).
    return await lean.exists(Invitation, _REVOKED_SQL, [invitation_id])


_REVOKED_SQL = "SELECT 1 FROM invitation WHERE id = ? AND revoked_at IS NOT NULL LIMIT 1"


async def open_invitation(
    deps: WorkflowDeps, token: str, ip: str, user_agent: str,
    refusals: RefusalLog | None = None,
) -> RecordingSession:
    """The customer opens the link (see `open_link`)."""
    return (await open_link(deps, token, ip, user_agent, refusals)).session


async def open_link(
    deps: WorkflowDeps, token: str, ip: str, user_agent: str,
    refusals: RefusalLog | None = None,
) -> Opened:
    """The customer opens the link. Every refusal is audited (aggregated per address and
    minute with `refusals`: anonymous callers cannot grow the log without bound); the link
    works exactly once."""
    actor = Actor("customer", "", "customer", ip)
    invitation = await Invitation.get_or_none(token_hash=token_digest(token)) if token else None
    now = deps.clock()
    refusal: tuple[str, str] | None = None
    if invitation is None:
        refusal = ("invitation_not_found", "邀请链接无效，请向销售人员索取新的链接")
    elif invitation.revoked_at is not None:
        refusal = ("invitation_revoked", "该邀请链接已作废，请使用最新收到的链接")
    elif invitation.used_at is not None:
        refusal = ("invitation_used", "该邀请链接已被使用，不能重复打开")
    elif invitation.expires_at <= now:
        refusal = ("invitation_expired", "该邀请链接已过期，请联系销售人员重新发送")
    if refusal is not None:
        audit_args: dict[str, Any] = {
            "object_type": "invitation", "object_id": str(invitation.id) if invitation else "",
            "outcome": "denied", "details": {"reason": refusal[0]}}
        if refusals is not None:
            await refusals.record(actor, "invitation.open.refused", subject=refusal[0],
                                  **audit_args)
        else:
            await audit.record_alone(actor, "invitation.open.refused", **audit_args)
        if invitation is None:
            raise NotFound(*refusal)
        raise Gone(*refusal)
    assert invitation is not None
    async with locked(deps, invitation.session_id, None) as unit:
        # Re-read under the lock: two clicks on one link must not both succeed.
        fresh = await Invitation.select_for_update().using_db(unit.conn).get(id=invitation.id)
        if fresh.used_at is not None or fresh.revoked_at is not None:
            raise Gone("invitation_used", "该邀请链接已被使用，不能重复打开")
        require_state(unit.session, "open")
        fresh.used_at = now
        fresh.opened_ip = ip[:64]
        fresh.opened_user_agent = user_agent[:300]
        await fresh.save(using_db=unit.conn)
        await unit.move(Actor("customer", str(unit.session.id), "customer", ip),
                        SessionState.OPENED, EventType.OPENED, {"invitation_id": fresh.id})
        session: RecordingSession = unit.session
    return Opened(session, fresh.id)


# -- the customer's first screen, and coming back (R-20) ------------------------------------


async def introduction(session: RecordingSession) -> dict[str, str]:
    """Who the customer deals with, for the first screen: the insurer, the product, the agent
    with the licence number (执业证编号), and the insurer's service hotline from the session's
    pinned script (its product facts), or none."""
    from models.org import Institution
    from models.people import Agent, User
    from models.sales import Product, ScriptVersion

    product = await Product.get(id=session.product_id)
    insurer = await Institution.get(id=product.insurer_id)
    agent = await Agent.get(id=session.agent_id)
    user = await User.get(id=agent.user_id)
    hotline = ""
    if session.script_version_id is not None:
        script = await ScriptVersion.get_or_none(id=session.script_version_id)
        facts = (script.document or {}).get("product", {}) if script else {}
        hotline = str(facts.get("service_hotline") or "")
    return {"insurer": insurer.full_name or insurer.name, "product": product.name,
            "agent": user.display_name, "agent_licence_no": agent.licence_no,
            "hotline": hotline}


async def link_session(token: str) -> UUID | None:
    """The session an invitation link (used, revoked or not) belongs to: with a resume code it
    names where to come back to; the link alone never gives a token."""
    if not token or len(token) > 200:
        return None
    invitation = await Invitation.get_or_none(token_hash=token_digest(token))
    return invitation.session_id if invitation is not None else None


async def preview(deps: WorkflowDeps, token: str) -> dict[str, str]:
    """What an unopened, valid link is about (nothing personal): the first screen names the
    insurer, product, agent and hotline before the customer taps 开始 (which uses the link)."""
    invitation = await Invitation.get_or_none(token_hash=token_digest(token)) if token else None
    if invitation is None:
        raise NotFound("invitation_not_found", "邀请链接无效，请向销售人员索取新的链接")
    if invitation.revoked_at is not None:
        raise Gone("invitation_revoked", "该邀请链接已作废，请使用最新收到的链接")
    if invitation.used_at is not None:
        raise Gone("invitation_used", "该邀请链接已被使用，不能重复打开")
    if invitation.expires_at <= deps.clock():
        raise Gone("invitation_expired", "该邀请链接已过期，请联系销售人员重新发送")
    session = await RecordingSession.get(id=invitation.session_id)
    return await introduction(session)


async def record_reentry(deps: WorkflowDeps, session_id: UUID, via: str, ip: str) -> None:
    """The customer came back through the same channel identity: on the timeline, so the
    agent's console sees it live."""
    async with locked(deps, session_id, None) as unit:
        await unit.event(Actor("customer", str(session_id), "customer", ip),
                         EventType.CUSTOMER_REENTERED,
                         {"via": via, "state": unit.session.state.value})
