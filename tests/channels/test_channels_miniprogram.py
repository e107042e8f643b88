"""The mini-program backend: code2session login into the invited session with a short-lived
customer token bound to the user (R-20), subscribe messages the customer accepted."""

from __future__ import annotations

from uuid import UUID

from bot import invitations as channel_invitations
from models.channels import ChannelInvitation, ChannelKind
from models.people import Agent, User
from tests.channels.conftest import Kit, openid
from tests.harness import Walk
from workflow.principals import StaffPrincipal


async def _mp_invitation(kit: Kit) -> tuple[str, str]:
    """A session whose invitation is to be opened in the mini-program (e.g. the agent shared
    the mini-program card carrying the ref)."""
    walk = await kit.h.create_session()
    user = await User.get(username="agent01")
    agent = await Agent.get(user_id=user.id)
    principal = StaffPrincipal(user.id, user.username, user.display_name, user.role,
                               user.institution_id, user.branch_id, agent.id)
    _, _, ref = await channel_invitations.issue(
        kit.channels, principal, UUID(walk.session_id), ChannelKind.MINIPROGRAM, "miniprogram")
    return walk.session_id, ref


async def test_a_miniprogram_login_gives_a_short_lived_token_for_the_session(kit: Kit) -> None:
    session_id, ref = await _mp_invitation(kit)
    customer = openid("mp-customer")
    r = await kit.h.request("POST", "/miniprogram/login",
                            json={"code": kit.fake.code_for(customer, "union-1"), "ref": ref})
    assert r.status == 200, r.body
    assert r.body["expires_in"] == 900 and r.body["session"]["state"] == "opened"
    token = r.body["customer_token"]
    assert await kit.channels.redis.ttl(kit.channels.short_tokens._key(token)) <= 900
    same = await kit.h.request("GET", "/customer/session", token=token)
    assert same.status == 200 and same.body["id"] == session_id
    # the same user comes back later without the ref: found through the binding
    again = await kit.h.request("POST", "/miniprogram/login",
                                json={"code": kit.fake.code_for(customer, "union-1")})
    assert again.status == 200 and again.body["reentry"] is True


async def test_another_user_or_a_bad_code_cannot_log_into_the_invitation(kit: Kit) -> None:
    _, ref = await _mp_invitation(kit)
    first = await kit.h.request("POST", "/miniprogram/login",
                                json={"code": kit.fake.code_for(openid("mp-a")), "ref": ref})
    assert first.status == 200
    other = await kit.h.request("POST", "/miniprogram/login",
                                json={"code": kit.fake.code_for(openid("mp-b")), "ref": ref})
    assert other.status == 403 and other.body["code"] == "invitation_bound_to_other_user"
    bad = await kit.h.request("POST", "/miniprogram/login", json={"code": "nope", "ref": ref})
    assert bad.status == 401 and bad.body["code"] == "wechat_code_invalid"  # 40029
    code = kit.fake.code_for(openid("mp-a"))
    await kit.h.request("POST", "/miniprogram/login", json={"code": code, "ref": ref})
    reused = await kit.h.request("POST", "/miniprogram/login", json={"code": code, "ref": ref})
    assert reused.status == 401  # 40163 code been used


async def test_the_same_person_through_the_official_account_is_recognised_by_unionid(
    kit: Kit,
) -> None:
    _session_id, ref = await _mp_invitation(kit)
    r = await kit.h.request("POST", "/miniprogram/login",
                            json={"code": kit.fake.code_for(openid("mp-u"), "union-7"),
                                  "ref": ref})
    assert r.status == 200
    link = channel_invitations.wechat_link(kit.channels, ref)
    via_oa = await kit.open_wechat(link, openid("oa-u"), unionid="union-7")
    assert via_oa.status == 200 and via_oa.body["reentry"] is True
    stranger = await kit.open_wechat(link, openid("oa-x"), unionid="union-8")
    assert stranger.status == 403


async def test_accepted_subscribe_messages_carry_the_status_on_completion(kit: Kit) -> None:
    session_id, ref = await _mp_invitation(kit)
    customer = openid("mp-subscriber")
    r = await kit.h.request("POST", "/miniprogram/login",
                            json={"code": kit.fake.code_for(customer), "ref": ref})
    token = r.body["customer_token"]
    bad = await kit.h.request("POST", "/miniprogram/subscriptions", token=token,
                              json={"accepted": ["SOMETHING_ELSE"]})
    assert bad.status == 422
    ok = await kit.h.request("POST", "/miniprogram/subscriptions", token=token,
                             json={"accepted": ["MP_TPL_STATUS"]})
    assert ok.status == 201
    kit.fake.subscribers.add(customer)
    await kit.h.walk_to("completed", walk=Walk(session_id, customer_token=token))
    await kit.run_worker()
    sent = kit.fake.sent("subscribe/send")
    assert len(sent) == 1 and sent[0]["touser"] == customer
    assert sent[0]["template_id"] == "MP_TPL_STATUS"
    assert (await ChannelInvitation.get(session_id=session_id)).bound_openid == customer
