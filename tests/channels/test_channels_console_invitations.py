"""The agent's 发送邀请 through a channel of their choice (issue 17 item 4, R-20): a text
message through Tencent Cloud SMS (the fake verifies the TC3-HMAC-SHA256 signature), a
mini-program card (customer-service message, msgtype miniprogrampage), a signed push through
the bank's server, a QR code of the single-use link, the link to copy; the delivery status
and the fallbacks after a failure; own sessions only; every send audited; phones encrypted."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest
import pytest_asyncio

from bot.sms import SmsError, SmsMessage, TencentSmsSender
from models.audit import AuditEntry
from models.channels import ChannelInvitation, OutboundMessage, OutboxKind, OutboxStatus
from models.sales import Order
from tests.channels.conftest import Kit, openid
from tests.channels.fake_sms import FakeTencentSms, serving

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
SDK_APP_ID = "1400006666"


@pytest_asyncio.fixture
async def fake_sms() -> AsyncIterator[FakeTencentSms]:
    async with serving(SECRET_ID, SECRET_KEY, SDK_APP_ID) as fake:
        yield fake


@pytest.fixture
def channel_env(fake_sms: FakeTencentSms) -> dict[str, str]:
    return {"SHUANGLU_SMS_ENGINE": "tencent", "SHUANGLU_SMS_ENDPOINT": fake_sms.url,
            "SHUANGLU_SMS_SECRET_ID": SECRET_ID, "SHUANGLU_SMS_SECRET_KEY": SECRET_KEY,
            "SHUANGLU_SMS_SDK_APP_ID": SDK_APP_ID, "SHUANGLU_SMS_REPORT_PULL_SECONDS": "0.01"}


async def _send(kit: Kit, session_id: str, body: dict[str, object],
                status: int = 201) -> dict:  # type: ignore[type-arg]
    r = await kit.h.as_("agent01", "POST", f"/sessions/{session_id}/channel-invitations",
                        json=body)
    assert r.status == status, r.body
    return r.body  # type: ignore[no-any-return]


async def _view(kit: Kit, session_id: str) -> dict:  # type: ignore[type-arg]
    r = await kit.h.as_("agent01", "GET", f"/sessions/{session_id}/channel-invitation")
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


async def test_sms_goes_out_signed_through_the_outbox_and_the_console_sees_it_opened(
    kit: Kit, fake_sms: FakeTencentSms,
) -> None:
    walk = await kit.h.create_session()
    options = (await kit.h.as_("agent01", "GET",
                               f"/sessions/{walk.session_id}/invitation-channels")).body
    by_channel = {o["channel"]: o for o in options["channels"]}
    assert by_channel["sms"]["available"] and options["phone_masked"] == "138****5678"
    assert not by_channel["miniprogram"]["available"]  # not a follower
    assert not by_channel["bank_app"]["available"]

    fake_sms.public_url = kit.channels.config.public_url
    view = await _send(kit, walk.session_id, {"channel": "sms"})
    assert view["status"]["code"] == "pending" and view["recipient"] == "138****5678"
    assert await kit.h.state(walk) == "invited"
    row = await OutboundMessage.get(kind=OutboxKind.SMS, session_id=walk.session_id)
    # The number is in the outbox encrypted only; the target column holds it masked.
    assert "13812345678" not in json.dumps(row.payload) and row.target == "138****5678"

    # One worker pass sends the text, then pulls the operator's report (PullSmsSendStatus).
    await kit.run_worker()
    assert fake_sms.refused == []
    sent = fake_sms.sent[-1]
    assert sent["phone"] == "+8613812345678" and sent["context"] == f"outbox:{row.id}"
    assert "/h5/invite/" in sent["text"] and sent["text"].startswith("【远程双录】您好")
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "delivered" and view["status"]["label"] == "已送达"
    assert view["deliveries"][0]["status"] == "sent"
    assert view["deliveries"][0]["report"] == "DELIVRD"
    pulls = fake_sms.pulls
    await kit.run_worker()
    assert fake_sms.pulls == pulls  # nothing awaits a report: no more pulls

    # The customer opens the link from the text message: the console shows 客户已打开. The
    # template writes the link's start; the variable is the token only (no URL in a parameter).
    link = re.search(r"完成：(\S+) 链接", sent["text"])
    assert link is not None
    prefix = f"{kit.channels.config.public_url}/h5/invite/"
    assert link[1].startswith(prefix) and sent["params"][1] == link[1].removeprefix(prefix)
    token = link[1].rsplit("/", 1)[1]
    r = await kit.h.request("POST", "/invitations/open", json={"token": token})
    assert r.status == 200, r.body
    view = await _view(kit, walk.session_id)
    assert view["status"] == {"code": "opened", "label": "客户已打开", "detail": ""}

    entry = await AuditEntry.filter(action="channel.invitation.sent").order_by("-id").first()
    assert entry is not None and entry.details["channel"] == "sms"
    assert entry.details["phone"] == "138****5678"


async def test_sms_to_another_number_retries_a_provider_timeout_and_fails_on_a_blacklist(
    kit: Kit, fake_sms: FakeTencentSms,
) -> None:
    walk = await kit.h.create_session()
    fake_sms.fail_api.append("InternalError.Timeout")
    await _send(kit, walk.session_id, {"channel": "sms", "phone": "13900001111"})
    await kit.run_worker()
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "pending"
    assert "第 1 次发送未成功" in view["status"]["label"]
    row = await OutboundMessage.get(kind=OutboxKind.SMS, session_id=walk.session_id)
    assert row.status == OutboxStatus.PENDING and "InternalError.Timeout" in row.last_error
    row.next_attempt_at = kit.channels.now()
    await row.save(update_fields=["next_attempt_at"])
    await kit.run_worker()
    assert fake_sms.sent[-1]["phone"] == "+8613900001111"
    assert (await _view(kit, walk.session_id))["recipient"] == "139****1111"

    # A blacklisted number is final: failed with the reason, and the fallbacks are offered.
    fake_sms.fail_numbers.append("FailedOperation.PhoneNumberInBlacklist")
    await _send(kit, walk.session_id, {"channel": "sms"})
    await kit.run_worker()
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "failed"
    assert "PhoneNumberInBlacklist" in view["status"]["label"]
    assert [f["channel"] for f in view["fallbacks"]] == ["qrcode", "link"]
    assert await AuditEntry.filter(action="channel.sms.failed").exists()


async def test_a_text_the_operator_could_not_deliver_fails_with_the_fallbacks(
    kit: Kit, fake_sms: FakeTencentSms,
) -> None:
    walk = await kit.h.create_session()
    fake_sms.undelivered = 1
    await _send(kit, walk.session_id, {"channel": "sms"})
    await kit.run_worker()
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "failed"
    assert view["status"]["label"].startswith("发送失败（短信未送达客户手机")
    assert view["deliveries"][0]["report"] == "FAIL MK:0005"
    assert [f["channel"] for f in view["fallbacks"]] == ["qrcode", "link"]


async def test_the_fake_refuses_a_wrong_secret_and_the_sender_reports_it(
    kit: Kit, fake_sms: FakeTencentSms,
) -> None:
    sender = TencentSmsSender(kit.channels.http, fake_sms.url, SECRET_ID, "wrong-key",
                              SDK_APP_ID, "远程双录")
    with pytest.raises(SmsError, match=r"AuthFailure\.SignatureFailure") as info:
        await sender.send(SmsMessage("13812345678", "1000001", ("12月05日", "x"), "t"))
    assert info.value.transient is False
    assert fake_sms.refused == ["AuthFailure.SignatureFailure"]


async def test_a_link_in_a_template_parameter_is_refused_as_tencent_does(
    kit: Kit, fake_sms: FakeTencentSms,
) -> None:
    sender = TencentSmsSender(kit.channels.http, fake_sms.url, SECRET_ID, SECRET_KEY,
                              SDK_APP_ID, "远程双录")
    code = "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"
    with pytest.raises(SmsError, match=code) as info:
        await sender._call("SendSms", {
            "PhoneNumberSet": ["+8613812345678"], "SmsSdkAppId": SDK_APP_ID,
            "SignName": "远程双录", "TemplateId": "1000001",
            "TemplateParamSet": ["12月05日", "https://shuanglu.example.cn/h5/invite/abc"]})
    assert info.value.transient is False and fake_sms.refused == [code]
    # A text queued with the whole link (before the parameters became the token) goes out
    # with the token only.
    await sender.send(SmsMessage("13812345678", "1000001",
                                 ("12月05日", "https://shuanglu.example.cn/h5/invite/abc"), "t"))
    assert fake_sms.sent[-1]["params"] == ["12月05日", "abc"]
    assert "完成：https://shuanglu.example.cn/h5/invite/abc 链接" in fake_sms.sent[-1]["text"]


async def test_bad_sms_input_is_a_problem_document(kit: Kit) -> None:
    walk = await kit.h.create_session()
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/channel-invitations",
                        json={"channel": "sms", "phone": "12345"})
    assert r.status == 422 and r.body["type"]
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/channel-invitations",
                        json={"channel": "fax"})
    assert r.status == 422
    # The session stays as it was: nothing was issued.
    assert await kit.h.state(walk) == "created"


async def test_qr_code_of_the_single_use_link_and_the_link_to_copy(kit: Kit) -> None:
    walk = await kit.h.create_session()
    view = await _send(kit, walk.session_id, {"channel": "qrcode"})
    assert view["status"]["code"] == "waiting_scan"
    assert view["qr_image"].startswith("data:image/svg+xml")
    assert "<svg" in unquote(view["qr_image"]) and "/h5/invite/" in view["link"]

    view = await _send(kit, walk.session_id, {"channel": "link"})
    assert view["status"]["label"] == "链接已生成，请复制发送给客户" and view["qr_image"] is None
    # Re-issuing revoked the QR code's link.
    assert await ChannelInvitation.filter(session_id=walk.session_id,
                                          revoked_at__isnull=False).count() == 1
    # An unopened link past its time says so.
    await ChannelInvitation.filter(id=view["id"]).update(
        expires_at=kit.channels.now() - timedelta(seconds=1))
    assert (await _view(kit, walk.session_id))["status"]["label"] == "已过期，请重新发送邀请"


async def test_mini_program_card_to_a_known_follower_R20(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("mp-card-customer")
    await kit.follower_customer(walk.session_id, customer)
    kit.fake.recent.add(customer)  # wrote to the account within 48 hours
    view = await _send(kit, walk.session_id, {"channel": "miniprogram"})
    assert view["choice"] == "miniprogram"
    await kit.run_worker()
    message = kit.fake.sent("custom/send")[-1]
    assert message["touser"] == customer and message["msgtype"] == "miniprogrampage"
    card = message["miniprogrampage"]
    assert card["appid"] == kit.channels.config.mp_app_id
    assert card["pagepath"].startswith("pages/session/index?ref=")
    assert card["thumb_media_id"] and card["title"] == "保险远程双录邀请"
    assert (await _view(kit, walk.session_id))["status"]["code"] == "sent"

    # The mini-program opens it with the ref (code2session proves the opener).
    ref = card["pagepath"].split("ref=", 1)[1]
    code = kit.fake.code_for(openid("mp-openid-of-customer"))
    r = await kit.h.request("POST", "/miniprogram/login", json={"code": code, "ref": ref})
    assert r.status == 200, r.body
    assert (await _view(kit, walk.session_id))["status"]["code"] == "opened"


async def test_mini_program_card_outside_the_48_hours_fails_with_the_fallbacks(kit: Kit) -> None:
    walk = await kit.h.create_session()
    customer = openid("mp-card-silent")
    await kit.follower_customer(walk.session_id, customer)
    await _send(kit, walk.session_id, {"channel": "miniprogram"})
    await kit.run_worker()
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "failed" and "45015" in view["status"]["label"]
    assert [f["channel"] for f in view["fallbacks"]] == ["sms", "qrcode", "link"]


async def test_a_card_to_a_customer_not_following_is_refused_without_revoking_the_link(
    kit: Kit,
) -> None:
    walk = await kit.h.create_session()
    await _send(kit, walk.session_id, {"channel": "link"})
    body = await _send(kit, walk.session_id, {"channel": "miniprogram"}, status=409)
    assert body["code"] == "customer_not_following"
    assert await ChannelInvitation.filter(session_id=walk.session_id,
                                          revoked_at__isnull=True).count() == 1


async def test_bank_app_push_is_signed_and_opens_for_the_bank_customer(kit: Kit) -> None:
    walk = await kit.h.create_session()
    order = await Order.get(id=walk.order_id)
    body = await _send(kit, walk.session_id, {"channel": "bank_app"}, status=409)
    assert body["code"] == "bank_customer_unknown"
    status, _ = await kit.bank_call("POST", "/bank/invitations", {
        "application_no": order.application_no, "bank_customer_ref": "BC-20001"})
    assert status == 201
    options = (await kit.h.as_("agent01", "GET",
                               f"/sessions/{walk.session_id}/invitation-channels")).body
    assert {o["channel"]: o for o in options["channels"]}["bank_app"]["available"]

    view = await _send(kit, walk.session_id, {"channel": "bank_app"})
    assert view["choice"] == "bank_app"
    await kit.run_worker()
    pushes = [m for m in kit.bank.received if m["body"]["type"] == "invitation"]
    assert len(pushes) == 1 and kit.bank.rejected == []  # verified with the reference verifier
    push = pushes[0]["body"]
    assert push["application_no"] == order.application_no
    assert push["bank_customer_ref"] == "BC-20001"
    assert push["deep_link"].startswith("demobank://shuanglu/open?url=")
    assert (await _view(kit, walk.session_id))["status"]["code"] == "sent"

    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(push["h5_url"])
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    r = await kit.h.request("POST", "/bank/invitations/open", json={
        "ref": parts.path.rsplit("/", 1)[-1], "cu": q["cu"], "exp": int(q["exp"]),
        "n": q["n"], "sig": q["sig"]})
    assert r.status == 200, r.body
    assert (await _view(kit, walk.session_id))["status"]["code"] == "opened"


async def test_only_the_sessions_agent_may_invite_or_see_the_channels(kit: Kit) -> None:
    walk = await kit.h.create_session()
    for method, path, body in (
        ("POST", "channel-invitations", {"channel": "link"}),
        ("GET", "invitation-channels", None),
    ):
        r = await kit.h.as_("agent02", method, f"/sessions/{walk.session_id}/{path}", json=body)
        assert r.status == 404, r.body
        r = await kit.h.as_("qa01", method, f"/sessions/{walk.session_id}/{path}", json=body)
        assert r.status in (403, 404), r.body
    assert await kit.h.state(walk) == "created"


async def test_the_log_engine_records_the_text_masked(tmp_path: Path) -> None:
    from bot.sms import LogSmsSender

    sender = LogSmsSender(tmp_path / "sms.jsonl")
    receipt = await sender.send(SmsMessage("13812345678", "1000001", ("a", "b"), "正文 http://x"))
    record = json.loads((tmp_path / "sms.jsonl").read_text(encoding="utf-8"))
    assert record["phone"] == "138****5678" and record["text"] == "正文 http://x"
    assert receipt.message_id == record["id"]


async def test_a_blacklisted_number_answered_as_an_api_error_fails_at_once(
    kit: Kit, fake_sms: FakeTencentSms,
) -> None:
    """Tencent may refuse a blacklisted number in `Response.Error` rather than per number:
    that is final too (issue 18 item 6), one attempt, no retry."""
    walk = await kit.h.create_session()
    fake_sms.fail_api.append("FailedOperation.PhoneNumberInBlacklist")
    await _send(kit, walk.session_id, {"channel": "sms", "phone": "13900002222"})
    await kit.run_worker()
    row = await OutboundMessage.get(kind=OutboxKind.SMS, session_id=walk.session_id)
    assert row.status == OutboxStatus.FAILED and row.attempts == 1
    assert "PhoneNumberInBlacklist" in row.last_error
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "failed"
    assert "PhoneNumberInBlacklist" in view["status"]["label"]
    assert fake_sms.sent == []
