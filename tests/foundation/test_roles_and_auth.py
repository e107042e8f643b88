"""R-50: Argon2 passwords, Redis tokens with expiry, rate-limited logins, explicit
permissions, and session scopes (an agent sees only their own, a supervisor their branch)."""

from __future__ import annotations

import pytest

from models.org import Branch
from models.people import Role, User
from security.roles import ROLE_PERMISSIONS, Permission
from tests.harness import PASSWORDS, Harness


async def test_passwords_are_stored_as_argon2id(harness: Harness) -> None:
    user = await User.get(username="agent01")
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORDS["agent01"] not in user.password_hash


async def test_login_gives_an_expiring_token_and_logout_revokes_it(harness: Harness) -> None:
    r = await harness.request("POST", "/auth/login",
                              json={"username": "qa01", "password": PASSWORDS["qa01"]})
    assert r.status == 200 and "inspect" in r.body["user"]["permissions"]
    token = r.body["token"]
    keys = [k async for k in harness.redis.scan_iter("auth:staff:*")]
    assert keys and all(token not in k.decode() for k in keys)
    assert 0 < await harness.redis.ttl(keys[0]) <= harness.config.settings.auth_token_ttl_seconds
    me = await harness.request("GET", "/auth/me", token=token)
    assert me.body["role"] == "qa_inspector"
    await harness.request("POST", "/auth/logout", token=token)
    assert (await harness.request("GET", "/auth/me", token=token)).status == 401


async def test_wrong_password_is_401_and_repeated_failures_are_throttled(
    harness: Harness,
) -> None:
    body = {"username": "agent01", "password": "wrong-password"}
    statuses = [(await harness.request("POST", "/auth/login", json=body)).status
                for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    r = await harness.request("POST", "/auth/login",
                              json={"username": "agent01", "password": PASSWORDS["agent01"]})
    assert r.status == 429 and r.body["retry_after"] > 0  # even the right password waits
    other = await harness.request("POST", "/auth/login",
                                  json={"username": "qa01", "password": PASSWORDS["qa01"]})
    assert other.status == 200


async def test_unknown_user_and_inactive_user_are_refused(harness: Harness) -> None:
    r = await harness.request("POST", "/auth/login",
                              json={"username": "nobody", "password": "whatever-123"})
    assert r.status == 401
    token = await harness.login("agent02")
    await User.filter(username="agent02").update(active=False)
    assert (await harness.request("GET", "/auth/me", token=token)).status == 401


async def test_agent_b_cannot_see_agent_a_sessions_R50(harness: Harness) -> None:
    walk = await harness.walk_to("invited", agent="agent01")
    r = await harness.as_("agent02", "GET", f"/sessions/{walk.session_id}")
    assert r.status == 404
    r = await harness.as_("agent02", "POST", f"/sessions/{walk.session_id}/invitation", json={})
    assert r.status == 404
    listed = await harness.as_("agent02", "GET", "/sessions")
    assert walk.session_id not in [s["id"] for s in listed.body["items"]]
    mine = await harness.as_("agent01", "GET", "/sessions")
    assert walk.session_id in [s["id"] for s in mine.body["items"]]


async def test_a_supervisor_sees_only_their_branch(harness: Harness) -> None:
    walk = await harness.walk_to("created")
    r = await harness.as_("sup01", "GET", f"/sessions/{walk.session_id}")
    assert r.status == 200
    other = await Branch.create(institution_id=(await User.get(username="sup01")).institution_id,
                                code="NB999", name="另一支行")
    await User.filter(username="sup01").update(branch_id=other.id)
    r = await harness.as_("sup01", "GET", f"/sessions/{walk.session_id}")
    assert r.status == 404


@pytest.mark.parametrize(("user", "method", "path", "status"), [
    ("po01", "GET", "/sessions", 403),
    ("auditor01", "GET", "/sessions", 403),
    ("admin01", "GET", "/sessions", 403),
    ("agent01", "GET", "/audit", 403),
    ("qa01", "GET", "/audit", 403),
    ("agent01", "GET", "/users", 403),
    ("qa01", "POST", "/orders", 403),
    ("auditor01", "GET", "/audit", 200),
    ("admin01", "GET", "/users", 200),
])
async def test_least_privilege(harness: Harness, user: str, method: str, path: str,
                               status: int) -> None:
    r = await harness.as_(user, method, path, json={} if method == "POST" else None)
    assert r.status == status, r.body


async def test_an_agent_cannot_review_their_own_session(harness: Harness) -> None:
    walk = await harness.walk_to("qa_pending")
    r = await harness.as_("agent01", "POST", f"/qa/sessions/{walk.session_id}/verdict",
                          json={"verdict": "pass"})
    assert r.status == 403


def test_every_role_has_explicit_permissions() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert Permission.READ_AUDIT in ROLE_PERMISSIONS[Role.AUDITOR]
    assert Permission.RECORD not in ROLE_PERMISSIONS[Role.SUPERVISOR]
    assert Permission.MANAGE_USERS not in ROLE_PERMISSIONS[Role.AGENT]


async def test_admin_creates_an_agent_with_a_licence(harness: Harness) -> None:
    branch = await Branch.get(code="NB001")
    r = await harness.as_("admin01", "POST", "/users", json={
        "username": "agent03", "password": "a-strong-password", "display_name": "新坐席",
        "role": "agent", "branch_id": branch.id,
        "agent": {"licence_no": "02000001", "licence_expires": "2030-01-01",
                  "training_expires": "2027-06-30", "grade": 2},
    })
    assert r.status == 201 and r.body["permissions"] == ["record", "view_sessions"]
    r = await harness.request("POST", "/auth/login",
                              json={"username": "agent03", "password": "a-strong-password"})
    assert r.status == 200
    r = await harness.as_("admin01", "POST", "/users", json={
        "username": "agent04", "password": "short", "display_name": "x", "role": "agent"})
    assert r.status == 422
