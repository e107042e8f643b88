"""Issue 17: a customer whose page closed comes back (R-20, R-30) — with the agent's one-time
code (expiry, single use, wrong-code limits, audit, the token naming the current invitation),
through the same WeChat identity in the call; 再听一遍 keeps the answer closed until the replay
was heard in full (R-23, R-24); the page's camera/microphone reports reach the timeline and the
script does not start without the customer's media; the first screen's names."""

from __future__ import annotations

import asyncio
from typing import Any, cast
from uuid import UUID

import pytest

from models.audit import AuditEntry
from models.sessions import RecordingSession, SessionEvent
from tests.channels.conftest import (  # noqa: F401 (fixtures for the WeChat re-entry test)
    Kit,
    channel_env,
    fake_bank,
    fake_wechat,
    kit,
    openid,
    settings_overrides,
)
from tests.harness import HERE, Harness, Walk, consent_body
from workflow import customer_controls, media_events, resume_codes
from workflow.call_followers import PLAY_ON

pytestmark = pytest.mark.timeout(180)


async def _code(harness: Harness, walk: Walk, agent: str = "agent01") -> str:
    r = await harness.as_(agent, "POST", f"/sessions/{walk.session_id}/resume-code")
    assert r.status == 201, r.body
    assert r.body["ttl_seconds"] == resume_codes.CODE_TTL_SECONDS == 600
    return str(r.body["code"])


async def _resume(harness: Harness, code: str, link: str | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    body = {"code": code} if link is None else {"code": code, "token": link}
    r = await harness.request("POST", "/invitations/resume", json=body)
    return r.status, r.body


async def test_a_code_brings_the_customer_back_mid_call_once_R20_R30(harness: Harness) -> None:
    walk = await harness.walk_to("disclosing")
    sid = walk.session_id
    # The old link alone never gives a token again.
    again = await harness.request("POST", "/invitations/open",
                                  json={"token": walk.invitation_token})
    assert again.status == 410 and again.body["code"] == "invitation_used"

    code = await _code(harness, walk)
    assert len(code) == 6 and code.isdigit()
    ttl = await harness.redis.ttl(f"resume:session:{sid}")
    assert 590 <= ttl <= 600
    status, body = await _resume(harness, code, walk.invitation_token)
    assert status == 200, body
    assert body["session"]["state"] == "disclosing" and body["session"]["id"] == sid
    token = body["customer_token"]
    me = await harness.request("GET", "/customer/session", token=token)
    assert me.status == 200 and me.body["current_step"]["index"] == 0
    # It acts like the customer's own token: the step is heard and answered with it.
    await harness.hear(walk)
    step = me.body["current_step"]["id"]
    ack = await harness.request("POST", "/customer/acknowledgements", token=token, json={
        "step_id": step, "answer": "affirmative", "client_event_id": "resume-ack-0001"})
    assert ack.status == 201, ack.body

    # Single use: the same code again, from the link or alone, is refused.
    status, body = await _resume(harness, code, walk.invitation_token)
    assert status == 410 and body["code"] == "resume_code_missing", body
    status, body = await _resume(harness, code)
    assert status == 422 and body["code"] == "resume_code_wrong", body

    # The timeline and the audit log say who came back, never the code.
    events = await SessionEvent.filter(session_id=sid,
                                       type__in=["resume_code_issued", "customer_reentered"])
    assert [e.type for e in events] == ["resume_code_issued", "customer_reentered"]
    assert events[1].data["via"] == "resume_code" and events[1].data["state"] == "disclosing"
    assert code not in str([e.data for e in events])
    issued = await AuditEntry.get(action="session.resume_code.issued", object_id=sid)
    assert issued.actor_kind == "user"
    used = await AuditEntry.get(action="session.resume_code.used", object_id=sid)
    assert used.outcome == "success" and used.actor_kind == "customer"
    assert await AuditEntry.filter(action="session.resume_code.refused").count() >= 1


async def test_the_code_alone_finds_its_session_and_a_new_code_replaces_the_old(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("consented")
    first = await _code(harness, walk)
    second = await _code(harness, walk)  # one active code per session
    if first != second:
        status, body = await _resume(harness, first)
        assert status == 422 and body["code"] == "resume_code_wrong", body
    status, body = await _resume(harness, second)  # on /h5/resume: no link at all
    assert status == 200 and body["session"]["state"] == "consented", body


async def test_a_code_expires_after_its_time_R20(harness: Harness) -> None:
    walk = await harness.walk_to("opened")
    code = await _code(harness, walk)
    # Ten minutes pass (the code's keys in Redis carry the expiry).
    key = f"resume:session:{walk.session_id}"
    assert await harness.redis.exists(key)
    await harness.redis.pexpire(key, 1)
    for _ in range(200):
        if not await harness.redis.exists(key):
            break
        await asyncio.sleep(0.01)
    status, body = await _resume(harness, code, walk.invitation_token)
    assert status == 410 and body["code"] == "resume_code_missing", body
    assert "过期" in body["detail"]


async def test_wrong_codes_burn_the_code_and_are_limited_per_address_R20(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("identity_verified")
    code = await _code(harness, walk)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    lefts = []
    for _ in range(resume_codes.MAX_WRONG_PER_CODE - 1):
        status, body = await _resume(harness, wrong, walk.invitation_token)
        assert status == 422 and body["code"] == "resume_code_wrong", body
        lefts.append(body["attempts_left"])
    assert lefts == [4, 3, 2, 1]
    status, body = await _resume(harness, wrong, walk.invitation_token)
    assert status == 410 and body["code"] == "resume_code_burnt", body
    # Burnt: even the right code no longer works; the agent gives a new one.
    status, body = await _resume(harness, code, walk.invitation_token)
    assert status == 410, body
    fresh = await _code(harness, walk)
    status, body = await _resume(harness, fresh, walk.invitation_token)
    assert status == 200, body
    refused = await AuditEntry.filter(action="session.resume_code.refused",
                                      object_id=walk.session_id).values_list("details", flat=True)
    # The first wrong code of the minute individually (the rest aggregated), the burn always.
    assert {"code_wrong", "code_burnt"} <= {cast(dict[str, Any], d)["reason"] for d in refused}

    # Without a link, wrong codes are limited per address: then refused without being tried.
    other = await harness.walk_to("opened")
    live = await _code(harness, other)
    guesses = [f"{n:06d}" for n in range(10**6 - 1, 0, -1) if f"{n:06d}" not in (live, fresh)]
    for guess in guesses[:resume_codes.ADDRESS_WRONG_LIMIT]:
        status, body = await _resume(harness, guess)
        assert status == 422, body
    status, body = await _resume(harness, live)
    assert status == 429 and body["code"] == "resume_code_attempts", body
    # The customer can still come back from the link with the code.
    status, body = await _resume(harness, live, other.invitation_token)
    assert status == 200, body


async def test_codes_only_for_open_unfinished_sessions_of_the_agent(harness: Harness) -> None:
    walk = await harness.walk_to("invited")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/resume-code")
    assert r.status == 409 and r.body["code"] == "session_not_resumable", r.body
    walk = await harness.walk_to("opened", walk=walk)
    r = await harness.as_("agent02", "POST", f"/sessions/{walk.session_id}/resume-code")
    assert r.status == 404  # another agent's session
    code = await _code(harness, walk)
    await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/abort",
                      json={"reason": "客户放弃"})
    status, body = await _resume(harness, code, walk.invitation_token)
    assert status == 410 and body["code"] == "session_finished", body
    status, body = await _resume(harness, "12345", walk.invitation_token)
    assert status == 422 and body["code"] == "resume_code_format", body


async def test_a_code_token_names_the_current_invitation_and_a_reissue_revokes_it_R20(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("opened")
    # The agent re-sends (revoking the first link); the customer opens the new one.
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/invitation", json={})
    second_link = r.body["token"]
    opened = await harness.request("POST", "/invitations/open", json={"token": second_link})
    assert opened.status == 200
    # Coming back from the *first* (revoked) link with a code: the token names the current
    # invitation, so the rule "a re-issue revokes older tokens" does not refuse it.
    code = await _code(harness, walk)
    status, body = await _resume(harness, code, walk.invitation_token)
    assert status == 200, body
    token = body["customer_token"]
    consent = await harness.request("POST", "/customer/consent", token=token,
                                    json=consent_body())
    assert consent.status == 200 and consent.body["state"] == "consented", consent.body
    # A later re-issue (not possible once consented) is what revokes: checked on a fresh one.
    other = await harness.walk_to("opened")
    code = await _code(harness, other)
    status, body = await _resume(harness, code, other.invitation_token)
    token = body["customer_token"]
    r = await harness.as_("agent01", "POST", f"/sessions/{other.session_id}/invitation", json={})
    assert r.status == 201
    refused = await harness.request("GET", "/customer/session", token=token)
    assert refused.status == 401 and refused.body["code"] == "invitation_reissued"


async def test_the_same_wechat_user_comes_back_in_the_call_and_after_an_interruption_R20(
    kit: Kit,  # noqa: F811 (the channel tests' fixture, imported above)
) -> None:
    h = kit.h
    walk = await h.create_session()
    customer = openid("zhang-san")
    await kit.follower_customer(walk.session_id, customer)
    r = await h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                    json={"mode": "template"})
    assert r.status == 201, r.body
    await kit.run_worker()
    link = kit.fake.sent("template/send")[-1]["url"]
    opened = await kit.open_wechat(link, customer)
    assert opened.status == 200, opened.body
    walk.customer_token = opened.body["customer_token"]
    await h.walk_to("disclosing", walk=walk)

    back = await kit.open_wechat(link, customer)  # WeChat closed its page mid-call
    assert back.status == 200 and back.body["reentry"] is True, back.body
    assert back.body["session"]["state"] == "disclosing"
    token = back.body["customer_token"]
    assert (await h.request("GET", "/customer/session", token=token)).status == 200
    stranger = await kit.open_wechat(link, openid("someone-else"))
    assert stranger.status == 403

    r = await h.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/interrupt",
                    json={"reason": "客户页面关闭"})
    assert r.status == 200
    back = await kit.open_wechat(link, customer)
    assert back.status == 200 and back.body["session"]["state"] == "interrupted"
    offer = await h.request("POST", f"/calls/{walk.session_id}/customer/offer",
                            token=back.body["customer_token"],
                            json={"sdp": "v=0", "type": "offer"})
    assert offer.status == 409  # waits for 断点续录; the page rejoins when the agent resumes
    r = await h.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/resume",
                    json={"location": HERE})
    assert r.status == 200 and r.body["state"] == "disclosing", r.body
    events = await SessionEvent.filter(session_id=walk.session_id, type="customer_reentered")
    assert [e.data["state"] for e in events] == ["disclosing", "interrupted"]
    assert {e.data["via"] for e in events} == {"wechat"}


# -- 再听一遍 (R-23, R-24) ---------------------------------------------------------------------


async def _step(harness: Harness, walk: Walk) -> dict:  # type: ignore[type-arg]
    r = await harness.request("GET", "/customer/session", token=walk.customer_token)
    return r.body  # type: ignore[no-any-return]


async def test_hearing_again_closes_the_answer_until_the_replay_played_in_full_R24(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("disclosing")
    sid = UUID(walk.session_id)
    assert "step_replay_requested" in PLAY_ON  # the call bridge plays the step on it
    await harness.hear(walk)
    view = await _step(harness, walk)
    step = view["current_step"]["id"]
    assert view["answer_open"]
    # The clip the customer heard, and the one still playing when the replay is asked for.
    session = await RecordingSession.get(id=sid)
    old_clip = f"{step}@{session.event_seq}"
    await media_events.speech_started(harness.deps, sid, old_clip)

    r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                              json={"step_id": step})
    assert r.status == 202 and r.body["answer_open"] is False, r.body
    ack = await harness.ack(walk, step)
    assert ack.status == 409 and ack.body["code"] == "answer_not_open", ack.body
    # The earlier clip ends in full after the request: it no longer opens the answer.
    await media_events.clip_finished(harness.deps, sid, old_clip, 2000, 2000, True)
    assert not (await _step(harness, walk))["answer_open"]
    assert (await harness.ack(walk, step)).status == 409
    # The replay is cut half-way (the customer left the picture, say): still closed.
    session = await RecordingSession.get(id=sid)
    replay_clip = f"{step}@{session.event_seq}"
    await media_events.speech_started(harness.deps, sid, replay_clip)
    await media_events.clip_finished(harness.deps, sid, replay_clip, 900, 2000, False)
    assert not (await _step(harness, walk))["answer_open"]
    # Played again in full: the answer opens and is taken.
    await harness.hear(walk)
    assert (await _step(harness, walk))["answer_open"]
    ack = await harness.ack(walk, step)
    assert ack.status == 201, ack.body
    replays = await SessionEvent.filter(session_id=sid, type="step_replay_requested")
    assert [(e.data["step_id"], e.data["count"], e.actor_kind) for e in replays] == [
        (step, 1, "customer")]


async def test_hearing_again_only_for_the_current_unanswered_step_and_not_endlessly_R24(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("disclosing")
    await harness.hear(walk)
    first = (await _step(harness, walk))["current_step"]["id"]
    r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                              json={"step_id": "not-this-one"})
    assert r.status == 409 and r.body["code"] == "step_mismatch"
    assert (await harness.ack(walk, first)).status == 201  # answered: it is no longer current
    r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                              json={"step_id": first})
    assert r.status == 409 and r.body["code"] == "step_mismatch"
    agent_read = (await _step(harness, walk))["current_step"]
    assert agent_read["speaker"] == "agent"  # the agent shows the licence: no clip to replay
    r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                              json={"step_id": agent_read["id"]})
    assert r.status == 409 and r.body["code"] == "replay_not_available"
    session = await RecordingSession.get(id=walk.session_id)
    second = next(s["id"] for s in session.steps[2:] if s["speaker"] == "tts"
                  and s["answer"] not in ("none", "handwritten_copy", "signature"))
    await harness.play_script(walk, until=second)
    for n in range(customer_controls.MAX_REPLAYS_PER_STEP):  # five replays per step
        r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                                  json={"step_id": second})
        assert r.status == 202, (n, r.body)
    r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                              json={"step_id": second})
    assert r.status == 409 and r.body["code"] == "replay_limit", r.body
    # Paused for an explanation after 不清楚: the agent explains, no replay meanwhile.
    await harness.hear(walk)
    assert (await harness.ack(walk, second, "negative")).status == 201
    r = await harness.request("POST", "/customer/replay", token=walk.customer_token,
                              json={"step_id": second})
    assert r.status == 409 and r.body["code"] == "session_paused"


# -- devices and the first screen ----------------------------------------------------


async def test_a_refused_camera_reaches_the_timeline_and_the_script_waits_for_the_customer(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("identity_verified")
    sid = walk.session_id
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/call/start",
                          json={"location": HERE})
    assert r.status == 200
    await harness.connect_media(walk, roles=("agent",))  # the customer's page has no camera
    r = await harness.request("POST", "/customer/devices", token=walk.customer_token, json={
        "camera": "denied", "microphone": "ok", "stage": "call", "error": "NotAllowedError"})
    assert r.status == 200 and r.body == {"recorded": True, "event": "customer_device_denied"}
    again = await harness.request("POST", "/customer/devices", token=walk.customer_token, json={
        "camera": "denied", "microphone": "ok", "stage": "call", "error": "NotAllowedError"})
    assert again.body["recorded"] is False  # said once, not on every retry
    await harness.pin_speech(walk)
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    assert r.status == 409 and r.body["code"] == "call_not_ready", r.body
    assert "客户的音视频尚未接通录制" in r.body["detail"]
    r = await harness.request("POST", "/customer/devices", token=walk.customer_token, json={
        "camera": "ok", "microphone": "ok", "stage": "call"})
    assert r.body == {"recorded": True, "event": "customer_device_ready"}
    await harness.connect_media(walk, roles=("customer",))
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/script/start")
    assert r.status == 200, r.body
    events = await SessionEvent.filter(
        session_id=sid, type__in=["customer_device_denied", "customer_device_ready"])
    assert [(e.type, e.data["camera"]) for e in events] == [
        ("customer_device_denied", "denied"), ("customer_device_ready", "ok")]


async def test_the_first_screen_names_insurer_product_agent_licence_and_hotline(
    harness: Harness,
) -> None:
    walk = await harness.walk_to("invited")
    r = await harness.request("POST", "/invitations/preview",
                              json={"token": walk.invitation_token})
    assert r.status == 200, r.body
    intro = r.body
    assert intro["insurer"] and intro["product"] and intro["agent"]
    assert intro["agent_licence_no"] and intro["hotline"] == "400-000-5678"
    assert (await harness.state(walk)) == "invited"  # previewing does not use the link
    opened = await harness.request("POST", "/invitations/open",
                                   json={"token": walk.invitation_token})
    assert opened.status == 200
    r = await harness.request("POST", "/invitations/preview",
                              json={"token": walk.invitation_token})
    assert r.status == 410 and r.body["code"] == "invitation_used"
    mine = await harness.request("GET", "/customer/introduction",
                                 token=opened.body["customer_token"])
    assert mine.status == 200 and mine.body == intro
