"""Staff login and logout: Argon2 passwords, Redis tokens, rate-limited failures (R-50)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from api.auth import bearer_token, client_ip, staff
from api.http import read_json
from api.keys import LOGIN_THROTTLE, STAFF_TOKENS
from api.load_shedding import REFUSALS, too_many
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import LoginResult, Me, Ok
from api.schemas import LoginBody
from models.people import User
from security import audit
from security.audit import Actor
from security.cpu import CpuBusy
from security.passwords import verify_password_async
from security.roles import permissions_of

api = Api()


@api.endpoint("POST", "/auth/login", summary="Staff login", tag="auth", auth="none",
              body=LoginBody, returns=LoginResult,
              responses={401: "wrong credentials", 429: "too many attempts",
                         503: "too busy, try again (Retry-After)"})
async def login(request: web.Request) -> web.Response:
    """R-50: the attempt is counted (per name+address, address, name) before the password is
    checked, so concurrent guesses check at most the limit; unknown names cost the same (a
    dummy hash is verified) and count the same. The hash is verified in the CPU pool, never
    on the event loop. Refusals of anonymous callers are audited aggregated (RefusalLog)."""
    body = await read_json(request, LoginBody)
    ip = client_ip(request)
    throttle = request.app[LOGIN_THROTTLE]
    name = body.username[:64]
    anonymous = Actor("anonymous", "", name, ip)
    wait = await throttle.take(body.username, ip)
    if wait:
        await request.app[REFUSALS].record(anonymous, "auth.login", subject=name,
                                           outcome="throttled", details={"username": name})
        return too_many(wait, "too_many_attempts", f"登录失败次数过多，请在{wait}秒后重试")
    user = await User.get_or_none(username=body.username)
    try:
        ok = await verify_password_async(user.password_hash if user else None, body.password)
    except CpuBusy:
        await throttle.refund(body.username, ip)  # never judged: not an attempt (503)
        raise
    if not ok or user is None or not user.active:
        await request.app[REFUSALS].record(anonymous, "auth.login", subject=name,
                                           outcome="denied", details={"username": name})
        raise ApiProblem(401, "invalid_credentials", "用户名或密码错误")
    await throttle.succeeded(body.username, ip)
    token = await request.app[STAFF_TOKENS].issue({"user_id": user.id})
    user.last_login_at = datetime.now(UTC)
    await user.save(update_fields=["last_login_at"])
    await audit.record_alone(Actor("user", str(user.id), user.username, ip), "auth.login")
    return json_response({
        "token": token, "expires_in": request.app[STAFF_TOKENS].ttl_seconds,
        "user": {"id": user.id, "username": user.username, "display_name": user.display_name,
                 "role": user.role.value,
                 "permissions": sorted(p.value for p in permissions_of(user.role))},
    })


@api.endpoint("POST", "/auth/logout", summary="Revoke the current token", tag="auth",
              returns=Ok)
async def logout(request: web.Request) -> web.Response:
    await request.app[STAFF_TOKENS].revoke(bearer_token(request))
    await audit.record_alone(staff(request).actor, "auth.logout")
    return json_response({"ok": True})


@api.endpoint("GET", "/auth/me", summary="The logged-in user", tag="auth", returns=Me)
async def me(request: web.Request) -> web.Response:
    principal = staff(request)
    return json_response({
        "id": principal.user_id, "username": principal.username,
        "display_name": principal.display_name, "role": principal.role.value,
        "institution_id": principal.institution_id, "branch_id": principal.branch_id,
        "agent_id": principal.agent_id,
        "permissions": sorted(p.value for p in permissions_of(principal.role)),
    })
