"""Issue 14 item 4 (R-20): re-sending an invitation revokes whoever opened an older link; their
customer token is refused with a clear message and can no longer act on the session."""

from __future__ import annotations

import pytest

from models.sessions import Invitation, SessionEvent
from tests.harness import Harness, consent_body

pytestmark = pytest.mark.timeout(120)

REISSUED = "邀请已更新，请打开最新的邀请链接"


async def test_reissuing_revokes_the_customer_token_of_an_opened_link_R20(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("opened")
    old_token = walk.customer_token
    assert (await harness.request("GET", "/customer/session", token=old_token)).status == 200
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/invitation",
                          json={"channel": "sms"})
    assert r.status == 201, r.body
    new_link = r.body["token"]

    # Whoever opened the old link (perhaps someone it was forwarded to) can do nothing more.
    consent = await harness.request("POST", "/customer/consent", token=old_token,
                                    json=consent_body())
    assert consent.status == 401, consent.body
    assert consent.body["code"] == "invitation_reissued" and consent.body["detail"] == REISSUED
    session = await harness.request("GET", "/customer/session", token=old_token)
    assert session.status == 401 and session.body["detail"] == REISSUED
    assert not await SessionEvent.filter(session_id=walk.session_id,
                                         type__in=["consented", "declined"]).exists()
    # The old link itself is revoked too, opened or not.
    again = await harness.request("POST", "/invitations/open",
                                  json={"token": walk.invitation_token})
    assert again.status == 410 and again.body["code"] == "invitation_revoked"
    links = await Invitation.filter(session_id=walk.session_id).order_by("id")
    assert [link.revoked_at is None for link in links] == [False, True]

    # The customer opens the newest link and goes on.
    opened = await harness.request("POST", "/invitations/open", json={"token": new_link})
    assert opened.status == 200, opened.body
    fresh = opened.body["customer_token"]
    consent = await harness.request("POST", "/customer/consent", token=fresh,
                                    json=consent_body())
    assert consent.status == 200 and consent.body["state"] == "consented", consent.body
    # Still refused for the old token afterwards.
    assert (await harness.request("GET", "/customer/session", token=old_token)).status == 401
    invited = await SessionEvent.filter(session_id=walk.session_id, type="invited") \
        .order_by("-seq").first()
    assert invited is not None and invited.data["revoked_opened"] == 1
