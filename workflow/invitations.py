"""Invitations: single-use, expiring, unguessable links; re-issuing revokes the old one (R-20)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from models.sessions import Invitation, RecordingSession, SessionState
from security import audit
from security.audit import Actor
from security.tokens import token_digest
from workflow.core import WorkflowDeps, locked, require_state
from workflow.errors import Gone, NotFound
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
        revoked = await Invitation.filter(
            session_id=session_id, used_at__isnull=True, revoked_at__isnull=True
        ).using_db(unit.conn).update(revoked_at=now)
        await Invitation.create(
            session_id=session_id, token_hash=token_digest(token), channel=channel,
            expires_at=expires_at, using_db=unit.conn,
        )
        await unit.move(principal.actor, SessionState.INVITED, "invited",
                        {"channel": channel, "revoked_previous": revoked,
                         "expires_at": expires_at.isoformat()})
    url = f"{deps.settings.public_url}/h5/invite/{token}"
    return IssuedInvitation(token, url, expires_at, channel)


async def open_invitation(
    deps: WorkflowDeps, token: str, ip: str, user_agent: str
) -> RecordingSession:
    """The customer opens the link. Every refusal is audited; the link works exactly once."""
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
        await audit.record_alone(
            actor, "invitation.open.refused", object_type="invitation",
            object_id=str(invitation.id) if invitation else "", outcome="denied",
            details={"reason": refusal[0]},
        )
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
                        SessionState.OPENED, "opened", {"invitation_id": fresh.id})
        session: RecordingSession = unit.session
    return session
