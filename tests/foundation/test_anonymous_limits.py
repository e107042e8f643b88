"""Issue 14 item 3: anonymous endpoints are rate limited per address (health never is), and a
flood of anonymous refusals cannot grow the audit log without bound (R-51): per address,
action and minute one entry at once and one aggregated entry with the count."""

from __future__ import annotations

import time

import pytest

from models.audit import AuditEntry
from security.audit import RefusalLog, verify_chain
from tests.harness import Harness

pytestmark = pytest.mark.timeout(180)

FORWARDED = {"trust_forwarded_for": True}


def _windows(start: float, end: float) -> int:
    """How many aggregation minutes a stretch of the test touched (a minute may turn)."""
    return int(end // 60) - int(start // 60) + 1


async def _flushed(harness: Harness, action: str, ip: str) -> tuple[list[AuditEntry],
                                                                    list[AuditEntry]]:
    """The individual and the aggregated entries of `action` from `ip`, all windows over."""
    await RefusalLog(harness.redis).flush(now=time.time() + 120)
    entries = await AuditEntry.filter(action=action, ip=ip).order_by("id")
    aggregated = [e for e in entries if e.details.get("aggregated")]
    return [e for e in entries if not e.details.get("aggregated")], aggregated


@pytest.mark.parametrize("settings_overrides", [{**FORWARDED, "anonymous_refusals_per_minute": 20}])
async def test_unsigned_insurer_requests_are_audited_aggregated_and_then_refused_unchecked(
    harness: Harness,
) -> None:
    """The tester's 300 unsigned status requests wrote 300 audit rows."""
    path = "/insurer/applications/APP-000001/status"
    start = time.time()
    statuses = [(await harness.request("GET", path,
                                       headers={"X-Forwarded-For": "10.1.1.1"})).status
                for _ in range(300)]
    windows = _windows(start, time.time())
    # Refused unchecked once 20 refusals were counted (a new minute counts afresh).
    assert statuses[:20] == [401] * 20 and statuses.count(429) >= 300 - 20 * windows
    limited = await harness.request("GET", path, headers={"X-Forwarded-For": "10.1.1.1"})
    assert limited.status in (401, 429)
    if limited.status == 429:
        assert int(limited.headers["Retry-After"]) > 0
    # Another address is not affected.
    other = await harness.request("GET", path, headers={"X-Forwarded-For": "10.2.2.2"})
    assert other.status == 401
    checked = statuses.count(401) + (limited.status == 401)
    individual, aggregated = await _flushed(harness, "insurer.request.refused", "10.1.1.1")
    assert 1 <= len(individual) <= windows + 1  # the minute's first, at once
    assert len(aggregated) <= windows + 1
    assert len(individual) + sum(e.details["count"] for e in aggregated) == checked
    assert all(set(e.details["subjects"]) == {"client_unknown"} for e in aggregated)
    assert await RefusalLog(harness.redis).flush(now=time.time() + 120) == 0  # written once
    assert (await verify_chain()).ok


@pytest.mark.parametrize("settings_overrides", [{**FORWARDED, "login_max_attempts_per_ip": 500,
                                                 "login_max_attempts_per_user": 500}])
async def test_a_flood_of_failed_logins_writes_two_entries_per_address_and_minute_R51(
    harness: Harness,
) -> None:
    start = time.time()
    for n in range(25):
        r = await harness.request("POST", "/auth/login", headers={"X-Forwarded-For": "10.3.3.3"},
                                  json={"username": f"nobody{n}", "password": "wrong-password"})
        assert r.status == 401
    windows = _windows(start, time.time())
    individual, aggregated = await _flushed(harness, "auth.login", "10.3.3.3")
    assert len(individual) == windows and individual[0].details["username"] == "nobody0"
    assert all(e.outcome == "denied" for e in individual + aggregated)
    assert len(individual) + sum(e.details["count"] for e in aggregated) == 25
    if windows == 1:
        details = aggregated[0].details
        assert details["count"] == 24 and details["subjects"]["nobody1"] == 1
        assert "nobody24" not in details["subjects"]  # at most 20 names are kept
        assert len(details["subjects"]) == 20 and details["subjects_truncated"] is True
    # A successful login is recorded on its own, always.
    await harness.login("qa01")
    assert await AuditEntry.filter(action="auth.login", outcome="success").count() == 1


@pytest.mark.parametrize("settings_overrides", [{**FORWARDED,
                                                 "anonymous_requests_per_minute": 5}])
async def test_public_endpoints_are_limited_per_address_but_health_never(
    harness: Harness,
) -> None:
    statuses = [(await harness.request("GET", "/consent-texts",
                                       headers={"X-Forwarded-For": "10.4.4.4"})).status
                for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    other = await harness.request("GET", "/consent-texts", headers={"X-Forwarded-For": "10.5.5.5"})
    assert other.status == 200
    health = [(await harness.request("GET", "/health",
                                     headers={"X-Forwarded-For": "10.4.4.4"})).status
              for _ in range(50)]
    assert health == [200] * 50


@pytest.mark.parametrize("settings_overrides", [{**FORWARDED, "anonymous_refusals_per_minute": 5,
                                                 "anonymous_requests_per_minute": 100}])
async def test_guessing_invitation_links_is_limited_and_audited_aggregated_R20(
    harness: Harness,
) -> None:
    statuses = [(await harness.request("POST", "/invitations/open",
                                       headers={"X-Forwarded-For": "10.6.6.6"},
                                       json={"token": f"guess-{n:040d}"})).status
                for n in range(8)]
    assert statuses[:5] == [404] * 5 and statuses.count(429) >= 2  # a minute may turn
    individual, aggregated = await _flushed(harness, "invitation.open.refused", "10.6.6.6")
    assert len(individual) + sum(e.details["count"] for e in aggregated) == statuses.count(404)
    assert len(individual) <= 2 and len(aggregated) <= 2
    # A real link from another address still opens.
    walk = await harness.walk_to("invited")
    r = await harness.request("POST", "/invitations/open", headers={"X-Forwarded-For": "10.7.7.7"},
                              json={"token": walk.invitation_token})
    assert r.status == 200
