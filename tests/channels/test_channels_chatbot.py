"""The chatbot's intents: FAQ about 远程双录 in plain Chinese, session status, the link again,
hand-off to the agent and back, reminders off and on, agents binding their WeChat and getting
notified; every conversation stored for QA replay (R-41)."""

from __future__ import annotations

import pytest

from bot.dialogue import DIALOGUE, normalise
from models.audit import AuditEntry
from models.channels import ConversationMessage, WechatUser
from tests.channels.conftest import APP_ID, Kit, openid
from tests.harness import consent_body


@pytest.mark.parametrize(("text", "intent"), [
    ("什么是远程双录？", "faq_what"), ("双录是啥", "faq_what"), ("为什么要录像", "faq_why"),
    ("双录需要准备什么", "faq_prepare"), ("要多久", "faq_prepare"), ("录像安全吗", "faq_privacy"),
    ("我的双录进度怎么样了", "status"), ("链接打不开", "resend_link"), ("转人工", "handoff"),
    ("ＴＤ", "unsubscribe"), ("绑定 12345678", "bind_agent"), ("你好！", "help"),
])
def test_intents_are_recognised_from_plain_chinese(text: str, intent: str) -> None:
    found, _ = DIALOGUE.match(text)
    assert found is not None and found.id == intent


def test_unknown_text_has_no_intent_and_end_words_only_count_in_a_handoff() -> None:
    assert DIALOGUE.match("今天天气不错")[0] is None
    assert DIALOGUE.match("结束")[0] is None
    assert DIALOGUE.match("结束", "handoff")[0].id == "handoff_end"  # type: ignore[union-attr]
    assert normalise("  双录？？ ") == "双录"


async def test_faq_answers_by_text_and_menu_click(kit: Kit) -> None:
    user = openid("faq")
    assert "保护您的权益" in await kit.say(user, "为什么要双录")
    assert "身份证" in await kit.event(user, "CLICK", key="FAQ_PREPARE")
    assert "加密" in await kit.event(user, "CLICK", key="FAQ_PRIVACY")
    assert "没有看懂" in await kit.say(user, "今天天气不错")
    assert await kit.event(user, "VIEW", key="https://example.com/menu") == ""


async def _opened_over_wechat(kit: Kit, name: str) -> tuple[str, str, str]:
    """A session invited by template and opened by the customer in WeChat."""
    walk = await kit.h.create_session()
    customer = openid(name)
    await kit.follower_customer(walk.session_id, customer)
    r = await kit.h.as_("agent01", "POST", f"/sessions/{walk.session_id}/wechat/invitation",
                        json={})
    assert r.status == 201
    await kit.run_worker()
    link = kit.fake.sent("template/send")[-1]["url"]
    opened = await kit.open_wechat(link, customer)
    assert opened.status == 200
    return walk.session_id, customer, opened.body["customer_token"]


async def test_status_tells_the_customer_where_their_session_is(kit: Kit) -> None:
    assert "暂未查到" in await kit.say(openid("stranger"), "进度")
    _session_id, customer, token = await _opened_over_wechat(kit, "status-user")
    reply = await kit.say(customer, "查进度")
    assert "客户已打开邀请" in reply and "王小明" in reply
    await kit.h.request("POST", "/customer/consent", token=token, json=consent_body())
    assert "身份证拍摄" in await kit.say(customer, "进度")


async def test_the_customer_gets_the_link_again(kit: Kit) -> None:
    _session_id, customer, _ = await _opened_over_wechat(kit, "resend-user")
    assert "重新发送" in await kit.say(customer, "链接")
    await kit.run_worker()
    sent = kit.fake.sent("custom/send")[-1]
    assert sent["touser"] == customer and "oauth2/authorize" in sent["text"]["content"]


async def test_handoff_forwards_messages_to_the_agent_until_the_customer_ends_it(
    kit: Kit,
) -> None:
    agent_wechat = openid("agent01-wechat")
    await kit.bind_agent("agent01", agent_wechat)
    session_id, customer, _ = await _opened_over_wechat(kit, "handoff-user")
    assert "王小明" in await kit.say(customer, "人工")
    assert "已转达" in await kit.say(customer, "保费可以月交吗？")
    assert "已转达" in await kit.say(customer, "进度")  # in a hand-off everything goes through
    assert "已结束" in await kit.say(customer, "结束")
    assert "客户已打开邀请" in await kit.say(customer, "进度")

    inbox = (await kit.h.as_("agent01", "GET", "/channels/agent/inbox")).body["items"]
    assert [m["text"] for m in inbox][:2] == ["进度", "保费可以月交吗？"]
    assert all(m["session_id"] == session_id for m in inbox)
    await kit.run_worker()
    to_agent = [m for m in kit.fake.sent("template/send") if m["touser"] == agent_wechat]
    assert any("保费可以月交吗" in m["data"]["keyword1"]["value"] for m in to_agent)

    # the agent answers from the console; it reaches the customer as a CS message
    r = await kit.h.as_("agent01", "POST", f"/sessions/{session_id}/wechat/messages",
                        json={"text": "可以月交，我稍后给您发说明。"})
    assert r.status == 202
    await kit.run_worker()
    answer = kit.fake.sent("custom/send")[-1]["text"]["content"]
    assert answer == "【王小明】可以月交，我稍后给您发说明。"


async def test_reminders_can_be_turned_off_and_on(kit: Kit) -> None:
    user = openid("reminders")
    assert "关闭" in await kit.say(user, "不要提醒")
    assert (await WechatUser.get(app_id=APP_ID, openid=user)).reminders_opt_out
    assert "开启" in await kit.say(user, "恢复提醒")
    assert not (await WechatUser.get(app_id=APP_ID, openid=user)).reminders_opt_out


async def test_an_agent_binds_their_wechat_once_per_code_and_is_notified(kit: Kit) -> None:
    agent_wechat = openid("agent-bind")
    await kit.bind_agent("agent01", agent_wechat)
    assert await AuditEntry.filter(action="wechat.agent.bound").exists()
    r = await kit.h.as_("agent01", "POST", "/channels/agent/wechat-binding")
    code = r.body["code"]
    assert r.body["qrcode"]["url"].startswith("https://mp.weixin.qq.com/cgi-bin/showqrcode")
    assert "绑定成功" in await kit.event(openid("agent-qr"), "SCAN", key=f"bind_{code}")
    assert "无效" in await kit.say(openid("thief"), f"绑定 {code}")  # used up

    # the customer consents and is then waiting for the call: the agent hears about both
    session_id, _customer, token = await _opened_over_wechat(kit, "notify-user")
    await kit.h.request("POST", "/customer/consent", token=token, json=consent_body())
    from tests.harness import PASSED

    await kit.h.as_("engine01", "POST", f"/sessions/{session_id}/identity-checks",
                    json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
    await kit.run_worker()
    notices = [m["data"]["keyword1"]["value"] for m in kit.fake.sent("template/send")
               if m["touser"] == openid("agent-qr")]
    assert any("同意远程双录" in n for n in notices)
    assert any("等待您发起视频通话" in n for n in notices)


async def test_the_conversation_is_stored_and_replayed_for_qa_R41(kit: Kit) -> None:
    session_id, customer, _ = await _opened_over_wechat(kit, "qa-user")
    await kit.say(customer, "我的身份证是110101199003071234，要准备什么")
    await kit.say(customer, "链接")
    await kit.run_worker()
    r = await kit.h.as_("qa01", "GET", f"/sessions/{session_id}/conversation")
    assert r.status == 200
    messages = r.body["messages"]
    kinds = [(m["direction"], m["via"]) for m in messages]
    assert ("out", "template") in kinds and ("in", "message") in kinds
    assert ("out", "passive") in kinds and ("out", "custom") in kinds
    assert "110101********1234" in messages[kinds.index(("in", "message"))]["text"]
    assert all("1990030712" not in m["text"] for m in messages)
    assert all("…" in m["user"] for m in messages)
    assert await AuditEntry.filter(action="session.conversation.viewed").exists()
    assert await ConversationMessage.filter(session_id=session_id).count() == len(messages)
    r = await kit.h.as_("agent02", "GET", f"/sessions/{session_id}/conversation")
    assert r.status == 403  # agents have no replay permission
