"""Aliyun SMS behind the same SMS interface (issue 17 item 4): `SHUANGLU_SMS_ENGINE=aliyun`
sends the console's invitation text through Aliyun's RPC API (SendSms, signed with HMAC-SHA1
as Aliyun documents it; the fake checks the signature independently), the delivery comes back
through QuerySendDetails, and refusals are final or retried as with Tencent."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.sms import SmsError, SmsMessage
from bot.sms_aliyun import AliyunSmsSender, rpc_signature, string_to_sign
from infra.config import ConfigurationError
from models.channels import OutboundMessage, OutboxKind, OutboxStatus
from tests.channels.conftest import Kit
from tests.channels.fake_sms_aliyun import FakeAliyunSms, serving

pytestmark = pytest.mark.timeout(30)

ACCESS_KEY_ID = "LTAI5tQ8example7Hk2Vd9Zt"
ACCESS_KEY_SECRET = "Qm3v8ExampleSecretForTests0aB1cD"
TEMPLATE = "SMS_465380001"


@pytest_asyncio.fixture
async def fake_aliyun() -> AsyncIterator[FakeAliyunSms]:
    async with serving(ACCESS_KEY_ID, ACCESS_KEY_SECRET) as fake:
        yield fake


@pytest.fixture
def channel_env(fake_aliyun: FakeAliyunSms) -> dict[str, str]:
    return {"SHUANGLU_SMS_ENGINE": "aliyun", "SHUANGLU_SMS_ALIYUN_ENDPOINT": fake_aliyun.url,
            "SHUANGLU_SMS_SECRET_ID": ACCESS_KEY_ID,
            "SHUANGLU_SMS_SECRET_KEY": ACCESS_KEY_SECRET,
            "SHUANGLU_SMS_INVITATION_TEMPLATE_ID": TEMPLATE,
            "SHUANGLU_SMS_REPORT_PULL_SECONDS": "0.01"}


def test_the_signature_matches_aliyuns_documented_example() -> None:
    """The worked example of Aliyun's signature documentation (DescribeRegions, AccessKey
    testid/testsecret): the string to sign and CT9X0VtwR86fNWSnsc6v8YGOjuE=."""
    params = {"TimeStamp": "2016-02-23T12:46:24Z", "Format": "XML", "AccessKeyId": "testid",
              "Action": "DescribeRegions", "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
              "Version": "2014-05-26", "SignatureVersion": "1.0"}
    assert string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26")
    assert rpc_signature("testsecret", "GET", params) == "CT9X0VtwR86fNWSnsc6v8YGOjuE="
    # Space, "*" and "~" as the documentation's percentEncode has them.
    assert "a%2520b%252A~" in string_to_sign("POST", {"k": "a b*~"})


async def _send(kit: Kit, session_id: str, body: dict[str, object]) -> dict:  # type: ignore[type-arg]
    r = await kit.h.as_("agent01", "POST", f"/sessions/{session_id}/channel-invitations",
                        json=body)
    assert r.status == 201, r.body
    return r.body  # type: ignore[no-any-return]


async def _view(kit: Kit, session_id: str) -> dict:  # type: ignore[type-arg]
    r = await kit.h.as_("agent01", "GET", f"/sessions/{session_id}/channel-invitation")
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


async def test_the_console_text_goes_out_through_aliyun_and_comes_back_delivered(
    kit: Kit, fake_aliyun: FakeAliyunSms,
) -> None:
    assert kit.channels.sms is not None and kit.channels.sms.name == "aliyun"
    fake_aliyun.public_url = kit.channels.config.public_url
    walk = await kit.h.create_session()
    view = await _send(kit, walk.session_id, {"channel": "sms"})
    assert view["status"]["code"] == "pending"
    fake_aliyun.waiting = 1  # the first query finds no receipt yet
    await kit.run_worker()
    assert fake_aliyun.refused == []
    sent = fake_aliyun.sent[-1]
    row = await OutboundMessage.get(kind=OutboxKind.SMS, session_id=walk.session_id)
    assert sent["phone"] == "13812345678" and sent["out_id"] == f"outbox:{row.id}"
    # The link's start is the template's; the variable carries the token only.
    link = f"{kit.channels.config.public_url}/h5/invite/{sent['params']['token']}"
    assert sent["text"].startswith("【远程双录】您好") and f"完成：{link} 链接" in sent["text"]
    assert (await _view(kit, walk.session_id))["status"]["code"] == "sent"

    await kit.channels.redis.delete("sms:reports:pull")  # the pull interval has passed
    # The report is asked for by a sender that never sent the text (another node, or this one
    # after a restart): what is awaited comes from the outbox, not from a sender's memory.
    sender = kit.channels.sms
    assert isinstance(sender, AliyunSmsSender)
    kit.channels.sms = dataclasses.replace(sender)
    await kit.run_worker()  # the operator's receipt has come: SendStatus 3
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "delivered" and view["status"]["label"] == "已送达"
    assert view["deliveries"][0]["report"] == "DELIVRD"
    queries = fake_aliyun.queries
    await kit.channels.redis.delete("sms:reports:pull")
    await kit.run_worker()
    assert fake_aliyun.queries == queries  # nothing waits any more

    r = await kit.h.request("POST", "/invitations/open",
                            json={"token": sent["params"]["token"]})
    assert r.status == 200, r.body  # the link in the text opens the invitation
    assert (await _view(kit, walk.session_id))["status"]["code"] == "opened"


async def test_an_undelivered_text_and_a_blacklisted_number_fail_with_the_fallbacks(
    kit: Kit, fake_aliyun: FakeAliyunSms,
) -> None:
    walk = await kit.h.create_session()
    fake_aliyun.undelivered = 1
    await _send(kit, walk.session_id, {"channel": "sms"})
    await kit.run_worker()
    view = await _view(kit, walk.session_id)
    assert view["status"]["code"] == "failed"
    assert view["deliveries"][0]["report"] == "FAIL MK:0005"
    assert [f["channel"] for f in view["fallbacks"]] == ["qrcode", "link"]

    fake_aliyun.fail_codes.append("isv.BLACK_KEY_CONTROL_LIMIT")
    await _send(kit, walk.session_id, {"channel": "sms", "phone": "13900003333"})
    await kit.run_worker()
    row = await OutboundMessage.filter(kind=OutboxKind.SMS, session_id=walk.session_id
                                       ).order_by("-id").first()
    assert row is not None and row.status == OutboxStatus.FAILED and row.attempts == 1
    assert "BLACK_KEY_CONTROL_LIMIT" in (await _view(kit, walk.session_id))["status"]["label"]


async def test_flow_control_is_retried_and_a_wrong_secret_is_refused(
    kit: Kit, fake_aliyun: FakeAliyunSms,
) -> None:
    walk = await kit.h.create_session()
    fake_aliyun.fail_codes.append("isv.BUSINESS_LIMIT_CONTROL")
    await _send(kit, walk.session_id, {"channel": "sms"})
    await kit.run_worker()
    row = await OutboundMessage.get(kind=OutboxKind.SMS, session_id=walk.session_id)
    assert row.status == OutboxStatus.PENDING and "BUSINESS_LIMIT_CONTROL" in row.last_error

    sender = AliyunSmsSender(kit.channels.http, fake_aliyun.url, ACCESS_KEY_ID, "wrong",
                             "远程双录")
    with pytest.raises(SmsError, match="SignatureDoesNotMatch") as info:
        await sender.send(SmsMessage("13812345678", TEMPLATE, ("12月05日", "x"), "t"))
    assert info.value.transient is False
    # A replayed request (same nonce) is refused by the provider.
    good = AliyunSmsSender(kit.channels.http, fake_aliyun.url, ACCESS_KEY_ID,
                           ACCESS_KEY_SECRET, "远程双录")
    params = good.signed("SendSms", {"PhoneNumbers": "13812345678", "SignName": "远程双录",
                                     "TemplateCode": TEMPLATE,
                                     "TemplateParam": '{"until":"a","token":"b"}'})
    for expected in ("OK", "SignatureNonceUsed"):
        async with kit.channels.http.post(fake_aliyun.url, data=params) as resp:
            assert (await resp.json())["Code"] == expected
    # A whole link in a variable is refused, for good.
    with pytest.raises(SmsError, match="PARAM_NOT_SUPPORT_URL") as info:
        await good.send(SmsMessage("13812345678", TEMPLATE, ("a", "https://x.example/h5/i/t"),
                                   "t"))
    assert info.value.transient is False


def test_the_aliyun_engine_is_configured_with_an_access_key_and_https_in_production(
    tmp_path: Path,
) -> None:
    from tests.channels.test_channels_config import OFF, _prod

    with pytest.raises(ConfigurationError, match="SHUANGLU_SMS_SECRET_ID"):
        _prod(tmp_path, {**OFF, "shuanglu_sms_engine": "aliyun"})
    keys = {"shuanglu_sms_engine": "aliyun", "shuanglu_sms_secret_id": ACCESS_KEY_ID,
            "shuanglu_sms_secret_key": ACCESS_KEY_SECRET}
    channels = _prod(tmp_path, {**OFF, **keys}).channels  # no SdkAppId needed
    assert channels.sms_engine == "aliyun"
    assert channels.sms.aliyun_endpoint == "https://dysmsapi.aliyuncs.com"
    with pytest.raises(ConfigurationError, match="SHUANGLU_SMS_ALIYUN_ENDPOINT must be https"):
        _prod(tmp_path, {**OFF, **keys, "shuanglu_sms_aliyun_endpoint": "http://sms.example"})
