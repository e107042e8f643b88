"""The WeChat message endpoint: URL verification, signatures, plain and AES safe mode, WeChat's
retries answered once, the 5-second rule, per-openid limits, and hostile XML refused safely."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot import dialogue
from bot.wechat_inbound import InboundRejected, MessageCodec
from models.channels import ConversationMessage, OutboundMessage, OutboxStatus
from tests.channels.conftest import AES_KEY, APP_ID, TOKEN, Kit, openid


async def test_url_verification_echoes_echostr(kit: Kit) -> None:
    query = {**kit.signed_query(), "echostr": "7318532905231648233"}
    async with kit.h.client.get("/api/v1/wechat/callback", params=query) as resp:
        assert resp.status == 200
        assert await resp.text() == "7318532905231648233"


async def test_url_verification_with_a_forged_signature_is_refused(kit: Kit) -> None:
    query = {**kit.signed_query(), "echostr": "123"}
    query["signature"] = "0" * 40
    async with kit.h.client.get("/api/v1/wechat/callback", params=query) as resp:
        assert resp.status == 403
        assert (await resp.json(content_type=None))["code"] == "signature_invalid"


async def test_a_forged_message_signature_is_refused_and_nothing_is_stored(kit: Kit) -> None:
    user = openid("forger")
    query = kit.signed_query(user=user)
    query["signature"] = "f" * 40
    status, _ = await kit.post_raw(kit.text_xml(user, "双录"), query)
    assert status == 403
    # AES mode: a valid query signature but a tampered msg_signature
    query = kit.signed_query(user=user)
    body = kit.encrypt(kit.text_xml(user, "双录"), query)
    query["msg_signature"] = "0" * 40
    status, _ = await kit.post_raw(body, query)
    assert status == 403
    assert await ConversationMessage.filter(openid=user).count() == 0


async def test_an_old_timestamp_is_refused(kit: Kit) -> None:
    user = openid("replayer")
    query = kit.signed_query(timestamp=str(int(time.time()) - 3600), user=user)
    status, text = await kit.post_raw(kit.text_xml(user, "双录"), query)
    assert status == 403 and "timestamp_out_of_window" in text


async def test_a_plain_text_message_gets_the_faq_answer(kit: Kit) -> None:
    reply = await kit.say(openid("plain"), "什么是远程双录？", encrypted=False)
    assert "同步录音录像" in reply


async def test_an_encrypted_message_gets_an_encrypted_answer(kit: Kit) -> None:
    user = openid("aes")
    r = await kit.post(kit.text_xml(user, "为什么要录像"), encrypted=True)
    assert r.status == 200 and "<Encrypt>" in r.text and "保护您的权益" not in r.text
    assert "保护您的权益" in r.content  # decrypted with wechatpy's own crypto


def test_safe_mode_refuses_unencrypted_messages() -> None:
    codec = MessageCodec(TOKEN, AES_KEY, APP_ID, "safe", 300)
    kit = Kit.__new__(Kit)
    query = Kit.signed_query(kit, user="x")
    with pytest.raises(InboundRejected) as refused:
        codec.decode(query, Kit.text_xml("x", "双录").encode())
    assert refused.value.code == "encryption_required"


async def test_a_message_retried_by_wechat_is_handled_once(kit: Kit) -> None:
    user = openid("retry")
    xml = kit.text_xml(user, "链接", msg_id=987654321)
    replies = [await kit.post(xml) for _ in range(3)]
    assert {r.status for r in replies} == {200}
    assert len({r.content for r in replies}) == 1
    assert await ConversationMessage.filter(openid=user, direction="in").count() == 1


async def test_simultaneous_retries_share_one_turn(kit: Kit) -> None:
    user = openid("burst")
    xml = kit.event_xml(user, "subscribe", create_time=1700000000)
    replies = await asyncio.gather(*[kit.post(xml) for _ in range(3)])
    assert all("欢迎关注" in r.content for r in replies)
    assert await ConversationMessage.filter(openid=user, direction="in").count() == 1


async def test_slow_work_goes_out_as_a_customer_service_message(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply deadline (4 s by default, WeChat's limit is 5 s) passes: WeChat gets
    "success" at once and the answer follows as a customer-service message."""
    kit.channels.config.wechat.reply_deadline_seconds = 0.2
    real = dialogue.run_intent

    async def slow(turn: dialogue.Turn, intent: dialogue.Intent) -> dialogue.Outcome:
        await asyncio.sleep(0.6)
        return await real(turn, intent)

    monkeypatch.setattr(dialogue, "run_intent", slow)
    user = openid("slow")
    kit.fake.recent.add(user)
    started = time.monotonic()
    r = await kit.post(kit.text_xml(user, "准备"))
    assert r.status == 200 and r.text == "success"
    assert time.monotonic() - started < 0.55
    for _ in range(50):
        await asyncio.sleep(0.05)
        if await OutboundMessage.filter(target=user).exists():
            break
    await kit.run_worker()
    sent = kit.fake.sent("custom/send")
    assert sent and sent[-1]["touser"] == user and "身份证" in sent[-1]["text"]["content"]
    row = await OutboundMessage.get(target=user)
    assert row.status == OutboxStatus.SENT


async def test_too_many_messages_from_one_openid_are_limited(kit: Kit) -> None:
    kit.channels.limits.openid_messages = type(kit.channels.limits.openid_messages)(
        kit.channels.redis, "wechat-openid-test", 3, 60)
    user = openid("chatty")
    replies = [await kit.say(user, "双录") for _ in range(5)]
    assert all("同步录音录像" in r for r in replies[:3])
    assert "太频繁" in replies[3]
    assert replies[4] == ""
    assert await ConversationMessage.filter(openid=user, direction="in").count() == 3


XXE = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh</ToUserName><FromUserName>{u}</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId></xml>"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<xml><ToUserName>gh</ToUserName><FromUserName>{u}</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&lol4;</Content><MsgId>2</MsgId></xml>"""


@pytest.mark.parametrize(("body", "status"), [
    (XXE, 400), (LAUGHS, 400),
    ("<xml><ToUserName>gh</ToUserName><FromUserName>{u}", 400),
    ("<html><body>hello</body></html>", 400),
    ("<xml><FromUserName>{u}</FromUserName></xml>", 400),
    ("\xff\xfe not xml at all", 400),
    ("<xml><Content>" + "长" * 40000 + "</Content></xml>", 413),
])
async def test_malicious_or_malformed_xml_is_refused_without_harm(
    kit: Kit, body: str, status: int
) -> None:
    user = openid("attacker")
    code, text = await kit.post_raw(body.replace("{u}", user).encode("utf-8", "surrogatepass"),
                                    kit.signed_query(user=user))
    assert code == status, text
    assert "root:" not in text and "lollol" not in text
    assert await ConversationMessage.filter(openid=user).count() == 0
    # the endpoint still works afterwards
    assert "同步录音录像" in await kit.say(openid("after-attack"), "双录")


async def test_too_many_requests_from_one_ip_are_limited(kit: Kit) -> None:
    kit.channels.limits.ip_messages = type(kit.channels.limits.ip_messages)(
        kit.channels.redis, "wechat-ip-test", 4, 60)
    user = openid("flood")
    statuses = []
    for _ in range(6):
        status, _ = await kit.post_raw(kit.text_xml(user, "双录"), kit.signed_query(user=user))
        statuses.append(status)
    assert statuses == [200, 200, 200, 200, 429, 429]


async def test_unknown_events_and_non_text_messages_are_answered_sensibly(kit: Kit) -> None:
    user = openid("image-sender")
    image = kit.text_xml(user, "x").replace("<MsgType><![CDATA[text]]></MsgType>",
                                             "<MsgType><![CDATA[image]]></MsgType>")
    assert "文字" in (await kit.post(image)).content
    assert await kit.event(user, "some_future_event") == ""
