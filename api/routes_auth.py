"""Staff login and logout: Argon2 passwords, Redis tokens, rate-limited failures (R-50)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from api.auth import bearer_token, client_ip, staff
from api.http import read_json
from api.keys import LOGIN_LIMITER, STAFF_TOKENS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.schemas import LoginBody
from models.people import User
from security import audit
from security.audit import Actor
from security.passwords import verify_password
from security.roles import permissions_of

api = Api()


@api.endpoint("POST", "/auth/login", summary="Staff login", tag="auth", auth="none",
              body=LoginBody, responses={401: "wrong credentials", 429: "too many failures"})
async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginBody)
    ip = client_ip(request)
    limiter = request.app[LOGIN_LIMITER]
    subject = f"{body.username.lower()}|{ip}"
    wait = await limiter.blocked_for(subject)
    if wait:
        await audit.record_alone(Actor("anonymous", "", body.username[:64], ip), "auth.login",
                                 outcome="throttled", details={"username": body.username[:64]})
        raise ApiProblem(429, "too_many_attempts", f"登录失败次数过多，请在{wait}秒后重试",
                         retry_after=wait)
    user = await User.get_or_none(username=body.username)
    ok = verify_password(user.password_hash if user else None, body.password)
    if not ok or user is None or not user.active:
        await limiter.hit(subject)
        await audit.record_alone(Actor("anonymous", "", body.username[:64], ip), "auth.login",
                                 outcome="denied", details={"username": body.username[:64]})
        raise ApiProblem(401, "invalid_credentials", "用户名或密码错误")
    await limiter.reset(subject)
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


@api.endpoint("POST", "/auth/logout", summary="Revoke the current token", tag="auth")
async def logout(request: web.Request) -> web.Response:
    await request.app[STAFF_TOKENS].revoke(bearer_token(request))
    await audit.record_alone(staff(request).actor, "auth.logout")
    return json_response({"ok": True})


@api.endpoint("GET", "/auth/me", summary="The logged-in user", tag="auth")
async def me(request: web.Request) -> web.Response:
    principal = staff(request)
    return json_response({
        "id": principal.user_id, "username": principal.username,
        "display_name": principal.display_name, "role": principal.role.value,
        "institution_id": principal.institution_id, "branch_id": principal.branch_id,
        "agent_id": principal.agent_id,
        "permissions": sorted(p.value for p in permissions_of(principal.role)),
    })
