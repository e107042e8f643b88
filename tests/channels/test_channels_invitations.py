"""Invitations through WeChat (R-20): template message to a known follower, QR code with a
scene value for others, delivery status from TEMPLATESENDJOBFINISH, fallback link and SMS text,
links bound to the customer's openid, reminders before expiry."""

from __future__ import annotations

import re
from datetime import timedelta

from models.audit import AuditEntry
from models.channels import ChannelInvitation, OutboundMessage, OutboxStatus
from tests.channels.conftest import Kit, openid

HREF = re.compile(r'href="([^"]+)"')


async def _send(kit: Kit, session_id: str, mode: str = "auto") -> dict:  # type: ignore[type-arg]
    r = await kit.h.as_("agent01", "POST", f"/sessions/{session_id}/wechat/invitation",
                        json={"mode": mode})
    assert r.status == 201, r.body
    return r.body  # type: ignore[no-any-return]


async def test_invitation_from_agent_to_template_message_to_an_open_bound_to_the_openid_R20(
    kit: Kit,
) -> None:
    walk = await kit.h.create_session()
    customer = openid("zhang-san")
    await kit.follower_customer(walk.session_id, customer)
    sent_view = await _send(kit, walk.session_id)
    assert sent_view["mode"] == "template" and sent_view["delivery_status"] == "pending"
    assert walk.session_id  # the session is now invited
    assert await kit.h.state(walk) == "invited"

    await kit.run_worker()
    message = kit.fake.sent("template/send")[-1]
    assert message["touser"] == customer and message["template_id"] == "TPL_INVITATION"
    link = message["url"]
    assert "oauth2/authorize" in link and "snsapi_base" in link
    invitation = await ChannelInvitation.get(session_id=walk.session_id)
    assert invitation.delivery_status == "sent" and invitation.template_msgid

    # WeChat reports that the template message reached the phone
    await kit.event(customer, "TEMPLATESENDJOBFINISH", MsgID=str(invitation.template_msgid),
                    Status="success")
    view = (await kit.h.as_("agent01", "GET",
                            f"/sessions/{walk.session_id}/channel-invitation")).body
    assert view["delivery_status"] == "delivered"
    assert view["deliveries"][0]["report"] == "success"

    opened = await kit.open_wechat(link, customer)
    assert opened.status == 200, opened.body
    assert opened.body["session"]["state"] == "opened" and not opened.body["reentry"]
    token = opened.body["customer_token"]
    r = await kit.h.request("GET", "/customer/session", token=token)
    assert r.status == 200 and r.body["id"] == walk.session_id


async def test_a_forwarded_link_is_refused_for_another_openid_R20(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer, friend = openid("customer-a"), openid("friend-b")
    await kit.follower_customer(walk.session_id, customer)
    await _send(kit, walk.session_id, "template")
    await kit.run_worker()
    link = kit.fake.sent("template/send")[-1]["url"]

    forwarded = await kit.open_wechat(link, friend)
    assert forwarded.status == 403
    assert forwarded.body["code"] == "invitation_bound_to_other_user"
    assert "本人" in forwarded.body["detail"]
    assert await AuditEntry.filter(action="channel.invitation.refused",
                                   outcome="denied").exists()
    assert await kit.h.state(walk) == "invited"  # the friend did not open it

    opened = await kit.open_wechat(link, customer)
    assert opened.status == 200
    # the customer closed WeChat's browser and taps the link again: let back in, not re-opened
    again = await kit.open_wechat(link, customer)
    assert again.status == 200 and again.body["reentry"] is True
    still = await kit.open_wechat(link, friend)
    assert still.status == 403


async def test_non_followers_get_a_qr_code_whose_scan_binds_the_scanner(kit: Kit) -> None:
    walk = await kit.h.create_session()
    view = await _send(kit, walk.session_id)
    assert view["mode"] == "qrcode" and view["delivery_status"] == "waiting_scan"
    assert "showqrcode?ticket=gQ" in view["qrcode"]["url"]
    created = kit.fake.sent("qrcode/create")[-1]
    assert created["action_name"] == "QR_STR_SCENE"
    scene = created["action_info"]["scene"]["scene_str"]
    assert scene == view["qrcode"]["scene"] and scene.startswith("inv_")

    customer = openid("wang-wu")
    reply = await kit.event(customer, "subscribe", key=f"qrscene_{scene}", Ticket="gQxyz")
    link = HREF.search(reply).group(1)  # type: ignore[union-attr]
    other = await kit.event(openid("zhao-liu"), "SCAN", key=scene, Ticket="gQxyz")
    assert "其他微信用户" in other

    opened = await kit.open_wechat(link, customer)
    assert opened.status == 200, opened.body
    refused = await kit.open_wechat(link, openid("zhao-liu"))
    assert refused.status == 403


async def test_failed_delivery_offers_the_copyable_link_and_sms_text(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("blocked")
    await kit.follower_customer(walk.session_id, customer)
    view = await _send(kit, walk.session_id, "template")
    assert view["fallback"]["link"].startswith("http") and "/h5/invite/" in view["fallback"]["link"]
    assert view["fallback"]["link"] in view["fallback"]["sms_text"]
    assert "仅限本人使用" in view["fallback"]["sms_text"]
    await kit.run_worker()
    invitation = await ChannelInvitation.get(session_id=walk.session_id)
    await kit.event(customer, "TEMPLATESENDJOBFINISH", MsgID=str(invitation.template_msgid),
                    Status="failed:user block")
    view = (await kit.h.as_("agent01", "GET",
                            f"/sessions/{walk.session_id}/channel-invitation")).body
    assert view["delivery_status"] == "failed" and view["delivery_detail"] == "failed:user block"
    # the agent sends the fallback link by SMS; it opens through the ordinary H5 flow
    token = view["fallback"]["link"].rsplit("/", 1)[-1]
    r = await kit.h.request("POST", "/invitations/open", json={"token": token})
    assert r.status == 200


async def test_a_template_refused_by_wechat_is_marked_failed_at_once(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("unfollowed")
    await kit.follower_customer(walk.session_id, customer)
    kit.fake.followers.discard(customer)  # unfollowed since: 43004 require subscribe
    await _send(kit, walk.session_id, "template")
    await kit.run_worker()
    row = await OutboundMessage.get(session_id=walk.session_id)
    assert row.status == OutboxStatus.FAILED and "43004" in row.last_error
    invitation = await ChannelInvitation.get(session_id=walk.session_id)
    assert invitation.delivery_status == "failed"


async def test_template_mode_needs_a_known_follower(kit: Kit) -> None:
    walk = await kit.h.create_session()
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                        json={"mode": "template"})
    assert r.status == 409 and r.body["code"] == "customer_not_following"
    r = await kit.h.as_("agent02", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                        json={})
    assert r.status == 404  # another agent's session does not exist for them


async def test_reissuing_revokes_the_old_wechat_link(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("reissue")
    await kit.follower_customer(walk.session_id, customer)
    await _send(kit, walk.session_id, "template")
    await kit.run_worker()
    old = kit.fake.sent("template/send")[-1]["url"]
    await _send(kit, walk.session_id, "template")
    await kit.run_worker()
    new = kit.fake.sent("template/send")[-1]["url"]
    refused = await kit.open_wechat(old, customer)
    assert refused.status == 410 and refused.body["code"] == "invitation_revoked"
    assert (await kit.open_wechat(new, customer)).status == 200


async def test_a_reminder_is_sent_once_before_the_link_expires(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("forgetful")
    await kit.follower_customer(walk.session_id, customer)
    await _send(kit, walk.session_id, "template")
    await kit.run_worker()
    real = kit.h.deps.clock
    kit.h.deps.clock = lambda: real() + timedelta(hours=23)  # link lapses at 24 h
    await kit.run_worker()
    await kit.run_worker()
    reminders = [m for m in kit.fake.sent("template/send") if m["template_id"] == "TPL_REMINDER"]
    assert len(reminders) == 1 and reminders[0]["touser"] == customer
    assert "oauth2/authorize" in reminders[0]["url"]


async def test_no_reminder_for_a_customer_who_unsubscribed(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("no-reminders")
    await kit.follower_customer(walk.session_id, customer)
    await _send(kit, walk.session_id, "template")
    await kit.run_worker()
    assert "关闭双录提醒" in await kit.say(customer, "退订")
    real = kit.h.deps.clock
    kit.h.deps.clock = lambda: real() + timedelta(hours=23)
    await kit.run_worker()
    assert not [m for m in kit.fake.sent("template/send") if m["template_id"] == "TPL_REMINDER"]


async def test_a_subscribe_message_invitation_spends_an_accepted_subscription(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("subscriber")
    await kit.follower_customer(walk.session_id, customer)
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                        json={"mode": "subscribe"})
    assert r.status == 409 and r.body["code"] == "no_subscription"
    # the customer accepts 订阅通知 in WeChat's popup; WeChat tells us by an event
    await kit.event(customer, "subscribe_msg_popup_event", SubscribeMsgPopupEvent=(
        "<List><TemplateId><![CDATA[TPL_SUBSCRIBE_INVITATION]]></TemplateId>"
        "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>"
        "<PopupScene>2</PopupScene></List>"))
    kit.fake.subscribers.add(customer)
    await _send(kit, walk.session_id, "subscribe")
    await kit.run_worker()
    sent = kit.fake.sent("subscribe/bizsend")[-1]
    assert sent["touser"] == customer and sent["template_id"] == "TPL_SUBSCRIBE_INVITATION"
    assert "oauth2/authorize" in sent["page"]
    assert (await ChannelInvitation.get(session_id=walk.session_id)).delivery_status == "sent"
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                        json={"mode": "subscribe"})
    assert r.status == 409  # the one-time subscription is used up
