"""Invitations (R-20): single use, expiring, unguessable; re-issuing revokes the old link."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from models.audit import AuditEntry
from models.sessions import Invitation
from tests.harness import Harness


async def test_a_link_opens_once_only(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    r = await harness.request("POST", "/invitations/open", json={"token": walk.invitation_token})
    assert r.status == 410 and r.body["code"] == "invitation_used"
    assert await AuditEntry.filter(action="invitation.open.refused", outcome="denied").exists()


async def test_reissuing_revokes_the_old_link(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    old = walk.invitation_token
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/invitation",
                          json={"channel": "sms"})
    assert r.status == 201 and r.body["token"] != old
    refused = await harness.request("POST", "/invitations/open", json={"token": old})
    assert refused.status == 410 and refused.body["code"] == "invitation_revoked"
    opened = await harness.request("POST", "/invitations/open",
                                   json={"token": r.body["token"]})
    assert opened.status == 200


async def test_an_expired_link_is_refused(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    real_clock = harness.deps.clock
    harness.deps.clock = lambda: real_clock() + timedelta(hours=25)
    r = await harness.request("POST", "/invitations/open", json={"token": walk.invitation_token})
    assert r.status == 410 and r.body["code"] == "invitation_expired"


async def test_an_unknown_link_is_404(harness: Harness) -> None:
    r = await harness.request("POST", "/invitations/open", json={"token": "x" * 43})
    assert r.status == 404 and r.body["code"] == "invitation_not_found"


async def test_only_a_hash_of_the_token_is_stored(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    invitation = await Invitation.get(session_id=walk.session_id)
    assert walk.invitation_token not in invitation.token_hash
    assert len(walk.invitation_token) >= 43  # 256 bits, URL-safe


async def test_two_simultaneous_opens_give_one_customer_token(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    results = await asyncio.gather(*[
        harness.request("POST", "/invitations/open", json={"token": walk.invitation_token})
        for _ in range(4)
    ])
    assert sorted(r.status for r in results) == [200, 410, 410, 410]


async def test_a_customer_token_reaches_only_its_own_session(harness: Harness) -> None:
    first = await harness.walk_to("opened")
    second = await harness.walk_to("opened", agent="agent02")
    r = await harness.request("GET", "/customer/session", token=first.customer_token)
    assert r.body["id"] == first.session_id
    # a customer token is not a staff token
    r = await harness.request("GET", f"/sessions/{second.session_id}",
                              token=first.customer_token)
    assert r.status == 401
