"""One-time resume codes: a customer whose page closed comes back to an unfinished session
(R-20, R-30).

The invitation link is single use and stays so: an old link alone never gets a token. The
session's agent reads out (or sends) a 6-digit code from the console; the customer enters it on
the page the used link shows (or on /h5/resume, without any link) in any browser tab, and gets a
customer token for the session where it stands (in the call: the page rejoins, 断点续录).

Rules: one active code per session (a new one replaces it), valid `CODE_TTL_SECONDS`, single use
(consumed atomically in Redis, so two tabs racing with the same code cannot both win), burnt after
`MAX_WRONG_PER_CODE` wrong entries against it. Entered without a link, the code itself finds the
session, so wrong codes are limited per address and across all callers as well (a guesser with
`GLOBAL_WRONG_LIMIT` tries per window against n live codes wins with probability about
n × limit / 10⁶). Issuing, every refusal and every use are audited; issuing and using are on the
session's timeline (never the code itself). Only a digest of the code is stored.

The token names the session's current invitation (`workflow.invitations.customer_claims`), so
re-issuing the invitation later still revokes it like any other customer token."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from models.sessions import Invitation, RecordingSession, SessionState
from security import audit
from security.audit import Actor, RefusalLog
from security.ratelimit import RateLimiter, run_script
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict, Gone, InvalidInput, NotFound, WorkflowError
from workflow.event_types import EventType
from workflow.principals import StaffPrincipal
from workflow.states import STATE_LABELS_ZH

CODE_TTL_SECONDS = 600
MAX_WRONG_PER_CODE = 5
# Code-only entry (no link): wrong codes per address, and across all addresses, per window.
ADDRESS_WRONG_LIMIT = 10
GLOBAL_WRONG_LIMIT = 200
WRONG_WINDOW_SECONDS = 600
# Where a customer may come back to: opened and not finished (the call included).
RESUMABLE = frozenset({
    SessionState.OPENED, SessionState.CONSENTED, SessionState.IDENTITY_VERIFIED,
    SessionState.IN_CALL, SessionState.DISCLOSING, SessionState.SIGNING,
    SessionState.INTERRUPTED,
})
CODE = re.compile(r"^[0-9]{6}$")


class TooManyAttempts(WorkflowError):
    status = 429


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime
    ttl_seconds: int


@dataclass(frozen=True)
class Resumed:
    session: RecordingSession
    invitation_id: int


def _session_key(session_id: UUID | str) -> str:
    return f"resume:session:{session_id}"


def _lookup(code: str) -> str:
    return "resume:code:" + hashlib.sha256(f"resume-code:{code}".encode()).hexdigest()


def _digest(session_id: UUID | str, code: str) -> str:
    return hashlib.sha256(f"{session_id}:{code}".encode()).hexdigest()


def _limits(redis: Any) -> tuple[RateLimiter, RateLimiter]:
    return (RateLimiter(redis, "resume-code-wrong-ip", ADDRESS_WRONG_LIMIT, WRONG_WINDOW_SECONDS),
            RateLimiter(redis, "resume-code-wrong-all", GLOBAL_WRONG_LIMIT,
                        WRONG_WINDOW_SECONDS))


def refusal(state: SessionState) -> WorkflowError | None:
    """Why a customer cannot come back to a session in `state` (None: they can)."""
    if state in RESUMABLE:
        return None
    if state in (SessionState.CREATED, SessionState.INVITED):
        return Conflict("session_not_opened", "请直接打开销售人员发送的邀请链接")
    return Gone("session_finished", f"本次双录已{STATE_LABELS_ZH[state]}，无需再次进入")


async def issue(deps: WorkflowDeps, redis: Any, principal: StaffPrincipal,
                session_id: UUID) -> IssuedCode:
    """A new code for the session's own agent (replacing any earlier one)."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or principal.agent_id is None or session.agent_id != principal.agent_id:
        raise NotFound("session_not_found", "找不到该录制会话")
    if session.state not in RESUMABLE:
        raise Conflict("session_not_resumable",
                       f"会话当前状态为“{STATE_LABELS_ZH[session.state]}”，无需生成验证码"
                       "（客户尚未打开邀请时请直接发送邀请链接）")
    key = _session_key(session_id)
    old = await redis.hget(key, "lookup")
    if old:
        await redis.delete(old.decode() if isinstance(old, bytes) else old)
    for _ in range(50):  # a free code (unique among the live ones: it finds its session)
        code = f"{secrets.randbelow(10**6):06d}"
        if await redis.set(_lookup(code), str(session_id), nx=True, ex=CODE_TTL_SECONDS):
            break
    else:
        raise Conflict("resume_code_busy", "暂时无法生成验证码，请稍后重试")
    now = deps.clock()
    expires_at = now + timedelta(seconds=CODE_TTL_SECONDS)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={"digest": _digest(session_id, code), "lookup": _lookup(code),
                                "wrong": 0, "issued_by": principal.user_id})
        pipe.expire(key, CODE_TTL_SECONDS)
        await pipe.execute()
    async with locked(deps, session_id, None) as unit:
        await unit.event(principal.actor, EventType.RESUME_CODE_ISSUED,
                         {"expires_at": expires_at.isoformat(), "ttl_seconds": CODE_TTL_SECONDS})
        await audit.record(unit.conn, principal.actor, "session.resume_code.issued",
                           object_type="session", object_id=str(session_id),
                           details={"expires_at": expires_at.isoformat()})
    return IssuedCode(code, expires_at, CODE_TTL_SECONDS)


# Checks and consumes in one step: missing | wrong <left> | burnt | ok.
_CONSUME = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', 0} end
if redis.call('HGET', key, 'digest') ~= ARGV[1] then
  local wrong = redis.call('HINCRBY', key, 'wrong', 1)
  if wrong >= tonumber(ARGV[2]) then
    local lookup = redis.call('HGET', key, 'lookup')
    redis.call('DEL', key)
    if lookup then redis.call('DEL', lookup) end
    return {'burnt', 0}
  end
  return {'wrong', tonumber(ARGV[2]) - wrong}
end
local lookup = redis.call('HGET', key, 'lookup')
redis.call('DEL', key)
if lookup then redis.call('DEL', lookup) end
return {'ok', 0}
"""


async def _refused(refusals: RefusalLog | None, actor: Actor, reason: str,
                   session_id: UUID | None) -> None:
    args: dict[str, Any] = {"object_type": "session",
                            "object_id": str(session_id) if session_id else "",
                            "outcome": "denied", "details": {"reason": reason}}
    if refusals is not None:
        await refusals.record(actor, "session.resume_code.refused", subject=reason, **args)
    else:
        await audit.record_alone(actor, "session.resume_code.refused", **args)


async def redeem(
    deps: WorkflowDeps, redis: Any, code: str, ip: str, user_agent: str,
    session_id: UUID | None = None, refusals: RefusalLog | None = None,
) -> Resumed:
    """The customer enters the code: with the session known from the (used) link, or alone.
    Returns the session and the invitation the new token is to name."""
    actor = Actor("customer", str(session_id or ""), "customer", ip)
    by_address, overall = _limits(redis)
    code = code.strip()
    if session_id is None:
        wait = max(await by_address.blocked_for(ip), await overall.blocked_for("all"))
        if wait:
            await _refused(refusals, actor, "too_many_wrong_codes", None)
            raise TooManyAttempts("resume_code_attempts",
                                  f"验证码错误次数过多，请在{max(1, wait // 60)}分钟后再试，"
                                  "或重新点击销售人员发送的邀请链接输入验证码",
                                  retry_after=wait)
        found = await redis.get(_lookup(code)) if CODE.match(code) else None
        if found is None:
            await by_address.hit(ip)
            await overall.hit("all")
            await _refused(refusals, actor, "unknown_code", None)
            raise InvalidInput("resume_code_wrong", "验证码不正确或已过期，请核对后重新输入")
        session_id = UUID(found.decode() if isinstance(found, bytes) else found)
        actor = Actor("customer", str(session_id), "customer", ip)
    if not CODE.match(code):
        raise InvalidInput("resume_code_format", "请输入销售人员告诉您的 6 位数字验证码")
    outcome, left = await run_script(redis, _CONSUME, [_session_key(session_id)],
                                     [_digest(session_id, code), MAX_WRONG_PER_CODE])
    outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if outcome != "ok":
        # A burnt code is audited on its own (at most one per code the agent issued); the
        # rest are aggregated per address and minute (anonymous callers, unbounded).
        await _refused(None if outcome == "burnt" else refusals, actor, f"code_{outcome}",
                       session_id)
        if outcome == "wrong":
            raise InvalidInput("resume_code_wrong",
                               f"验证码不正确，还可以再试 {int(left)} 次", attempts_left=int(left))
        if outcome == "burnt":
            raise Gone("resume_code_burnt",
                       "验证码错误次数过多，已失效。请联系销售人员重新获取验证码")
        raise Gone("resume_code_missing", "验证码已过期或已使用，请联系销售人员重新获取验证码")
    async with locked(deps, session_id, None) as unit:
        session: RecordingSession = unit.session
        problem = refusal(session.state)
        if problem is not None:
            raise problem
        current = await Invitation.filter(
            session_id=session_id, revoked_at__isnull=True).using_db(unit.conn).order_by(
            "-id").first()
        if current is None:
            raise Gone("invitation_revoked", "该邀请已作废，请联系销售人员重新发送邀请")
        await unit.event(actor, EventType.CUSTOMER_REENTERED,
                         {"via": "resume_code", "invitation_id": current.id,
                          "state": session.state.value})
        await audit.record(unit.conn, actor, "session.resume_code.used", object_type="session",
                           object_id=str(session_id),
                           details={"invitation_id": current.id, "state": session.state.value,
                                    "user_agent": user_agent[:200]})
    return Resumed(session, current.id)
