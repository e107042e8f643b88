"""R-10 consent first, R-12 identity attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from models.sessions import Consent, IdentityCheck
from security.audit import Actor
from tests.harness import FAILED, HERE, PASSED, Harness, consent_body
from workflow import call
from workflow.consent_texts import CONSENT_TEXTS
from workflow.errors import Conflict


async def test_consent_is_stored_with_text_hash_time_ip_and_device_R10(harness: Harness) -> None:
    walk = await harness.walk_to("consented")
    consents = await Consent.filter(session_id=walk.session_id).order_by("kind")
    assert {c.kind.value for c in consents} == {"recording", "personal_information"}
    for consent in consents:
        assert consent.agreed
        assert consent.text_hash == CONSENT_TEXTS[consent.kind].sha256
        assert consent.ip == "127.0.0.1" and consent.user_agent


async def test_a_customer_who_declines_is_never_recorded_R10(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    r = await harness.request("POST", "/customer/consent", token=walk.customer_token,
                              json=consent_body(agree_recording=False))
    assert r.status == 200 and r.body["state"] == "declined"
    # nothing can follow: no identity, no call, no recording segment
    r = await harness.as_("engine01", "POST", f"/sessions/{walk.session_id}/identity-checks",
                          json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    assert r.status == 409
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/start",
                          json={"location": HERE})
    assert r.status == 409
    segment = call.NewRecording("customer_av", 1, "x.webm", "0" * 64, 1, 1,
                                datetime.now(UTC), None)
    try:
        await call.register_recording(harness.deps, Actor.system("media"), UUID(walk.session_id),
                                      segment)
        raise AssertionError("a declined session accepted a recording")
    except Conflict as exc:
        assert exc.code == "illegal_transition"


async def test_declining_personal_information_alone_also_ends_it_R10(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    r = await harness.request("POST", "/customer/consent", token=walk.customer_token,
                              json=consent_body(agree_pi=False))
    assert r.body["state"] == "declined"


async def test_consent_to_an_outdated_text_is_refused(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    body = consent_body()
    body["answers"][0]["text_hash"] = "0" * 64
    r = await harness.request("POST", "/customer/consent", token=walk.customer_token, json=body)
    assert r.status == 409 and r.body["code"] == "consent_text_outdated"
    assert await harness.state(walk) == "opened"


async def test_both_consents_are_needed(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    body = consent_body()
    body["answers"] = body["answers"][:1]
    r = await harness.request("POST", "/customer/consent", token=walk.customer_token, json=body)
    assert r.status == 409 and r.body["code"] == "consent_incomplete"


async def test_recording_needs_a_started_call_even_after_consent(harness: Harness) -> None:
    walk = await harness.walk_to("consented")
    segment = call.NewRecording("customer_av", 1, "x.webm", "0" * 64, 1, 1,
                                datetime.now(UTC), None)
    try:
        await call.register_recording(harness.deps, Actor.system("media"), UUID(walk.session_id),
                                      segment)
        raise AssertionError("recorded before the call")
    except Conflict:
        pass


async def test_three_failed_identity_attempts_end_the_session_R12(harness: Harness) -> None:
    walk = await harness.walk_to("consented")
    path = f"/sessions/{walk.session_id}/identity-checks"
    left = []
    for _ in range(3):
        r = await harness.as_("engine01", "POST", path,
                              json={"ocr": PASSED, "face": FAILED, "liveness": PASSED})
        assert r.status == 201
        left.append((r.body["state"], r.body["attempts_left"]))
    assert left == [("consented", 2), ("consented", 1), ("identity_failed", 0)]
    checks = await IdentityCheck.filter(session_id=walk.session_id).order_by("attempt")
    assert [c.attempt for c in checks] == [1, 2, 3]
    assert checks[0].reasons == ["人脸比对未通过"] and checks[0].face["engine"] == "test-engine"
    r = await harness.as_("engine01", "POST", path,
                          json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    assert r.status == 409


async def test_a_pass_after_a_failure_verifies_identity_R12(harness: Harness) -> None:
    walk = await harness.walk_to("consented")
    path = f"/sessions/{walk.session_id}/identity-checks"
    await harness.as_("engine01", "POST", path,
                      json={"ocr": PASSED, "face": PASSED, "liveness": FAILED})
    r = await harness.as_("engine01", "POST", path,
                          json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    assert r.body["state"] == "identity_verified" and r.body["attempt"] == 2


async def test_only_the_engine_role_may_report_identity(harness: Harness) -> None:
    walk = await harness.walk_to("consented")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/identity-checks",
                          json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    assert r.status == 403 and r.body["code"] == "permission_denied"
