"""The chatbot: an explicit dialogue (intents and texts in `dialogue.yaml`, handlers here, two
states: `idle` and `handoff`), not a language model. A turn takes a typed WeChat message and
returns the passive reply; anything that has to call WeChat (resending the link, telling the
agent) is queued in the outbox and sent by the channel worker.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from wechatpy import events, messages
from wechatpy.messages import BaseMessage

from bot import invitations as channel_invitations
from bot import outbox
from bot.runtime import Channels
from models import lean
from models.channels import (
    ChannelInvitation,
    ConversationMessage,
    DeliveryStatus,
    OutboundMessage,
    OutboxKind,
    SubscriptionGrant,
    WechatUser,
)
from models.people import Agent, Role, User
from models.sessions import Invitation, RecordingSession
from security import audit
from security.audit import Actor
from workflow import conversations
from workflow.states import STATE_LABELS_ZH

log = logging.getLogger(__name__)
DIALOGUE_PATH = Path(__file__).with_name("dialogue.yaml")
IDLE = "idle"
HANDOFF = "handoff"
HANDLER_NAMES = frozenset({"status", "resend_link", "handoff", "handoff_end", "unsubscribe",
                           "resubscribe", "bind_agent", "unbind_agent", "help"})


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z_]{2,32}$")
    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    click: str | None = None
    answer: str | None = None
    handler: str | None = None
    states: list[str] = Field(default_factory=lambda: [IDLE])

    @model_validator(mode="after")
    def _answer_or_handler(self) -> Intent:
        if (self.answer is None) == (self.handler is None):
            raise ValueError(f"intent {self.id}: exactly one of answer and handler")
        if self.handler is not None and self.handler not in HANDLER_NAMES:
            raise ValueError(f"intent {self.id}: unknown handler {self.handler}")
        for pattern in self.patterns:
            re.compile(pattern)
        return self


class DialogueData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    intents: list[Intent]
    fallback: str
    texts: dict[str, str]
    agent_notifications: dict[str, str]


def normalise(text: str) -> str:
    """Full-width to half-width (NFKC), lower case, no surrounding blanks or end punctuation."""
    text = unicodedata.normalize("NFKC", text).strip().lower()
    stripped = text.rstrip("?!.。，,~～ ")
    return stripped or text


@dataclass
class Dialogue:
    data: DialogueData
    _compiled: list[tuple[Intent, list[re.Pattern[str]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._compiled = [(i, [re.compile(p) for p in i.patterns]) for i in self.data.intents]

    @property
    def texts(self) -> dict[str, str]:
        return self.data.texts

    def match(self, text: str, state: str = IDLE) -> tuple[Intent | None, re.Match[str] | None]:
        """The intent for a text message in a dialogue state (see the rules in the YAML)."""
        norm = normalise(text)
        candidates = [(i, ps) for i, ps in self._compiled if state in i.states]
        for intent, patterns in candidates:
            if norm in (normalise(k) for k in intent.keywords):
                return intent, None
            for pattern in patterns:
                found = pattern.match(norm)
                if found:
                    return intent, found
        best: tuple[int, Intent] | None = None
        for intent, _ in candidates:
            for keyword in intent.keywords:
                k = normalise(keyword)
                if len(k) >= 2 and k in norm and (best is None or len(k) > best[0]):
                    best = (len(k), intent)
        return (best[1], None) if best else (None, None)

    def by_click(self, key: str) -> Intent | None:
        return next((i for i in self.data.intents if i.click == key), None)


def load_dialogue(path: Path = DIALOGUE_PATH) -> Dialogue:
    return Dialogue(DialogueData.model_validate(yaml.safe_load(path.read_text("utf-8"))))


DIALOGUE = load_dialogue()


@dataclass
class Turn:
    """One incoming message with what the handlers need."""

    channels: Channels
    message: BaseMessage
    user: WechatUser
    text: str
    now: datetime
    invitation: ChannelInvitation | None
    match: re.Match[str] | None = None

    @property
    def app_id(self) -> str:
        return self.channels.config.app_id

    @property
    def openid(self) -> str:
        return self.user.openid

    @property
    def session_id(self) -> Any:
        return self.invitation.session_id if self.invitation else None


@dataclass(frozen=True)
class Outcome:
    """The passive reply ("" for none), the intent, and the session the user is on."""

    reply: str
    intent: str
    session_id: Any = None
    pending: list[ConversationMessage] = field(default_factory=list)


def _t(key: str, **values: Any) -> str:
    return DIALOGUE.texts[key].format(**values)


async def _agent_of(session_id: Any) -> tuple[Agent, User] | None:
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None:
        return None
    agent = await Agent.get(id=session.agent_id)
    user = await User.get(id=agent.user_id)
    return agent, user


async def notify_agent(
    channels: Channels, session_id: Any, first: str, text: str, dedup_key: str,
) -> OutboundMessage | None:
    """A template message to the agent's bound WeChat, plus the live console channel."""
    found = await _agent_of(session_id)
    if found is None:
        return None
    agent, user = found
    await channels.redis.publish(f"agent-inbox:{agent.id}", json.dumps(
        {"session_id": str(session_id), "text": text, "at": channels.now().isoformat()},
        ensure_ascii=False))
    bound = await WechatUser.filter(
        app_id=channels.config.app_id, staff_user_id=user.id, subscribed=True).first()
    if bound is None:
        return None
    wx = channels.config.wechat
    return await outbox.enqueue(
        channels, OutboxKind.WECHAT_TEMPLATE, dedup_key, bound.openid,
        {"purpose": "agent_notice", "template_id": wx.agent_notice_template_id,
         "audience": "agent", "app_id": channels.config.app_id,
         "data": {"first": {"value": first}, "keyword1": {"value": text[:180]},
                  "keyword2": {"value": channels.now().isoformat(timespec="minutes")},
                  "remark": {"value": "请登录工作台查看。"}}},
        session_id=session_id,
    )


# -- handlers ----------------------------------------------------------------------------------
async def h_help(turn: Turn) -> str:
    return _t("help")


async def h_status(turn: Turn) -> str:
    inv = turn.invitation
    if inv is None:
        return _t("status_none")
    session = await RecordingSession.get(id=inv.session_id)
    found = await _agent_of(session.id)
    agent_name = found[1].display_name if found else ""
    key = f"status_hint_{session.state.value}"
    expires = inv.expires_at.astimezone(channel_invitations.CHINA).strftime("%m月%d日%H:%M")
    hint = (DIALOGUE.texts.get(key) or DIALOGUE.texts["status_hint_default"]).format(
        expires=expires)
    return _t("status", agent=agent_name, state=STATE_LABELS_ZH[session.state], hint=hint)


async def h_resend_link(turn: Turn) -> str:
    inv = turn.invitation
    if inv is None:
        return _t("status_none")
    ch = turn.channels
    session = await RecordingSession.get(id=inv.session_id)
    found = await _agent_of(session.id)
    agent_name = found[1].display_name if found else ""
    if session.state in channel_invitations.FINISHED:
        return _t("resend_finished", state=STATE_LABELS_ZH[session.state])
    workflow_invitation = await Invitation.get(id=inv.invitation_id)
    usable = inv.revoked_at is None and (
        (workflow_invitation.used_at is None and inv.expires_at > turn.now)
        or (workflow_invitation.used_at is not None and inv.opened_at is not None
            and ch.config.wechat.allow_reentry))
    if not usable:
        await notify_agent(
            ch, session.id, _t("agent_expired_first"),
            "客户的邀请链接已过期或已作废，请在工作台重新发送邀请。",
            f"expired-notice:{inv.id}:{turn.now:%Y%m%d%H}",
        )
        return _t("resend_expired", agent=agent_name)
    link = channel_invitations.wechat_link(ch, channel_invitations.ref_of(ch, inv))
    # At most one resend a minute for the same invitation, however often the user asks.
    await outbox.enqueue(
        ch, OutboxKind.WECHAT_CUSTOM, f"resend:{inv.id}:{turn.now:%Y%m%d%H%M}", turn.openid,
        {"purpose": "resend_link", "text": _t("resend_link", link=link),
         "audience": "customer", "app_id": turn.app_id, "via": "custom"},
        session_id=session.id,
    )
    return _t("resend_sent")


async def h_handoff(turn: Turn) -> str:
    inv = turn.invitation
    found = await _agent_of(inv.session_id) if inv else None
    if inv is None or found is None:
        return _t("handoff_none")
    turn.user.dialogue_state = HANDOFF
    turn.user.dialogue_expires_at = turn.now + timedelta(
        seconds=turn.channels.config.wechat.handoff_idle_seconds)
    await turn.user.save(update_fields=["dialogue_state", "dialogue_expires_at"])
    await notify_agent(turn.channels, inv.session_id, _t("agent_message_first"),
                       "客户请求人工服务，请在工作台查看留言。",
                       f"handoff:{turn.openid}:{turn.message.time}")
    return _t("handoff_start", agent=found[1].display_name)


async def forward_to_agent(turn: Turn) -> str:
    assert turn.invitation is not None
    turn.user.dialogue_expires_at = turn.now + timedelta(
        seconds=turn.channels.config.wechat.handoff_idle_seconds)
    await turn.user.save(update_fields=["dialogue_expires_at"])
    await notify_agent(turn.channels, turn.invitation.session_id, _t("agent_message_first"),
                       f"客户留言：{turn.text}",
                       f"handoff-msg:{turn.openid}:{turn.message.id or turn.message.time}")
    return _t("handoff_forwarded")


async def h_handoff_end(turn: Turn) -> str:
    turn.user.dialogue_state = IDLE
    turn.user.dialogue_expires_at = None
    await turn.user.save(update_fields=["dialogue_state", "dialogue_expires_at"])
    return _t("handoff_end")


async def h_unsubscribe(turn: Turn) -> str:
    turn.user.reminders_opt_out = True
    await turn.user.save(update_fields=["reminders_opt_out"])
    return _t("unsubscribed")


async def h_resubscribe(turn: Turn) -> str:
    turn.user.reminders_opt_out = False
    await turn.user.save(update_fields=["reminders_opt_out"])
    return _t("resubscribed")


async def bind_agent(channels: Channels, user: WechatUser, code: str) -> str:
    """An agent binds their WeChat to their staff account with a one-time code from the
    console (typed, or scanned as the QR scene `bind_<code>`)."""
    limiter = channels.limits.bind_attempts
    if await limiter.hit(f"{user.app_id}:{user.openid}") > limiter.limit:
        return _t("bind_too_many")
    raw = await channels.redis.getdel(f"bot:bind:{code}")
    if raw is None:
        return _t("bind_failed")
    staff = await User.get_or_none(id=int(raw), active=True)
    if staff is None or staff.role != Role.AGENT:
        return _t("bind_failed")
    # One WeChat per staff account: a new binding replaces the old one.
    await WechatUser.filter(staff_user_id=staff.id).exclude(id=user.id).update(staff_user_id=None)
    user.staff_user_id = staff.id
    await user.save(update_fields=["staff_user_id"])
    await audit.record_alone(
        Actor("user", str(staff.id), f"{staff.username}({staff.role.value})", ""),
        "wechat.agent.bound", object_type="user", object_id=str(staff.id),
        details={"app_id": user.app_id, "openid": conversations.mask_openid(user.openid)},
    )
    return _t("bind_ok", name=staff.display_name)


async def h_bind_agent(turn: Turn) -> str:
    assert turn.match is not None
    return await bind_agent(turn.channels, turn.user, turn.match.group(1))


async def h_unbind_agent(turn: Turn) -> str:
    if turn.user.staff_user_id is None:
        return _t("unbind_none")
    staff_id = turn.user.staff_user_id
    turn.user.staff_user_id = None
    await turn.user.save(update_fields=["staff_user_id"])
    await audit.record_alone(
        Actor("user", str(staff_id), "wechat", ""), "wechat.agent.unbound",
        object_type="user", object_id=str(staff_id),
    )
    return _t("unbind_ok")


HANDLERS: dict[str, Callable[[Turn], Awaitable[str]]] = {
    "status": h_status, "resend_link": h_resend_link, "handoff": h_handoff,
    "handoff_end": h_handoff_end, "unsubscribe": h_unsubscribe, "resubscribe": h_resubscribe,
    "bind_agent": h_bind_agent, "unbind_agent": h_unbind_agent, "help": h_help,
}


async def run_intent(turn: Turn, intent: Intent) -> Outcome:
    if intent.answer is not None:
        return Outcome(intent.answer, intent.id)
    assert intent.handler is not None
    return Outcome(await HANDLERS[intent.handler](turn), intent.id)


# -- a whole turn ------------------------------------------------------------------------------
def _text_of(message: BaseMessage) -> str | None:
    if isinstance(message, messages.TextMessage):
        return str(message.content or "")
    if isinstance(message, messages.VoiceMessage) and message.recognition:
        return str(message.recognition)
    return None


# Read on every message: written out (models.lean) rather than built by the ORM each time.
_USER_SQL = "SELECT * FROM wechat_user WHERE app_id = ? AND openid = ? LIMIT 1"
# bot.invitations.latest_for, the same query.
_LATEST_INVITATION_SQL = (
    "SELECT * FROM channel_invitation WHERE bound_app_id = ? AND bound_openid = ? "
    "AND revoked_at IS NULL ORDER BY id DESC LIMIT 1")


async def latest_invitation(app_id: str, openid: str) -> ChannelInvitation | None:
    """The newest unrevoked invitation bound to this user (`bot.invitations.latest_for`)."""
    return await lean.fetch_one(ChannelInvitation, _LATEST_INVITATION_SQL, [app_id, openid])


async def _user(channels: Channels, openid: str, now: datetime) -> WechatUser:
    app_id = channels.config.app_id
    user = await lean.fetch_one(WechatUser, _USER_SQL, [app_id, openid])
    if user is None:  # the first message: created (or found, if another request won the race)
        user, _ = await WechatUser.get_or_create(app_id=app_id, openid=openid)
    changed = []
    if user.dialogue_state != IDLE and user.dialogue_expires_at and \
            user.dialogue_expires_at <= now:
        user.dialogue_state = IDLE
        user.dialogue_expires_at = None
        changed += ["dialogue_state", "dialogue_expires_at"]
    # Written at most every few minutes: it only has to be precise enough for WeChat's 48-hour
    # customer-service window, and a write per message would cost throughput.
    if user.last_inbound_at is None or now - user.last_inbound_at > timedelta(minutes=5):
        user.last_inbound_at = now
        changed.append("last_inbound_at")
    if changed:
        await user.save(update_fields=changed)
    return user


async def handle(channels: Channels, message: BaseMessage) -> Outcome:
    """One turn: pick the intent (or event) and answer. The incoming message comes back
    unsaved in `pending`: the caller stores it with the answer in one transaction, once it
    knows whether the answer went out in time (passive) or later (customer-service)."""
    now = channels.now()
    openid = str(message.source)
    user = await _user(channels, openid, now)
    invitation = await latest_invitation(channels.config.app_id, openid)
    text = _text_of(message)
    turn = Turn(channels, message, user, text or "", now, invitation)
    raw = message._data
    inbound = conversations.build(
        app_id=turn.app_id, openid=openid, direction="in",
        via="event" if _is_event(message) else "message",
        msg_type=str(raw.get("Event") or raw.get("MsgType") or "unknown").lower(),
        text=turn.text, session_id=turn.session_id, at=now,
        data={k: v for k, v in raw.items()
              if k in ("Event", "EventKey", "MsgId", "MsgID", "Status", "MsgType")},
    )
    try:
        outcome = await _respond(turn)
    except Exception:
        inbound.intent = "error"
        await conversations.save_all([inbound])
        raise
    session_id = turn.invitation.session_id if turn.invitation else None
    inbound.intent = outcome.intent[:32]
    inbound.session_id = inbound.session_id or session_id
    return Outcome(outcome.reply, outcome.intent, session_id, [inbound])


async def _respond(turn: Turn) -> Outcome:
    message = turn.message
    if _is_event(message):
        return await _event(turn)
    if _text_of(message) is None:
        return Outcome(_t("not_text"), "not_text")
    state = turn.user.dialogue_state
    intent, found = DIALOGUE.match(turn.text, state)
    if state == HANDOFF and intent is None:
        if turn.invitation is None:
            return await run_intent(turn, DIALOGUE.by_click("HELP"))  # type: ignore[arg-type]
        return Outcome(await forward_to_agent(turn), "handoff_message")
    if intent is None:
        return Outcome(DIALOGUE.data.fallback, "fallback")
    turn.match = found
    return await run_intent(turn, intent)


async def _scene(turn: Turn, scene: str) -> Outcome:
    ch = turn.channels
    if scene.startswith("inv_"):
        person = channel_invitations.Person(turn.app_id, turn.openid)
        reply = await channel_invitations.claim_by_scene(ch, scene, person)
        turn.invitation = await latest_invitation(turn.app_id, turn.openid)
        return Outcome(reply, "invitation_scan")
    if scene.startswith("bind_"):
        return Outcome(await bind_agent(ch, turn.user, scene.removeprefix("bind_")),
                       "bind_agent")
    return Outcome(_t("welcome"), "welcome")


async def _event(turn: Turn) -> Outcome:
    message = turn.message
    user = turn.user
    if isinstance(message, events.SubscribeScanEvent | events.SubscribeEvent):
        user.subscribed = True
        user.subscribed_at = turn.now
        await user.save(update_fields=["subscribed", "subscribed_at"])
        scene = str(getattr(message, "scene_id", "") or "")
        if scene:
            return await _scene(turn, scene)
        return Outcome(_t("welcome"), "welcome")
    if isinstance(message, events.ScanEvent):
        if not user.subscribed:
            user.subscribed = True
            await user.save(update_fields=["subscribed"])
        return await _scene(turn, str(message.scene_id or ""))
    if isinstance(message, events.UnsubscribeEvent):
        user.subscribed = False
        user.unsubscribed_at = turn.now
        user.dialogue_state = IDLE
        await user.save(update_fields=["subscribed", "unsubscribed_at", "dialogue_state"])
        return Outcome("", "unsubscribe_event")
    if isinstance(message, events.ClickEvent):
        intent = DIALOGUE.by_click(str(message.key or ""))
        if intent is None:
            return Outcome(DIALOGUE.data.fallback, "fallback")
        return await run_intent(turn, intent)
    if isinstance(message, events.TemplateSendJobFinishEvent):
        await record_template_report(int(message.id or 0), str(message.status or ""))
        return Outcome("", "template_report")
    name = str(message._data.get("Event", "")).lower()
    if name in ("subscribe_msg_popup_event", "subscribe_msg_change_event"):
        await record_subscriptions(turn)
        return Outcome("", "subscription")
    # VIEW (a menu link was opened) and other events need no answer; they are stored.
    return Outcome("", "event")


def _is_event(message: BaseMessage) -> bool:
    # Events wechatpy 1.8 does not know (subscribe_msg_popup_event) parse as UnknownMessage.
    return str(message._data.get("MsgType", "")).lower() == "event"


async def record_subscriptions(turn: Turn) -> None:
    """订阅通知: the user accepted (or rejected) subscribe-message templates in WeChat's popup;
    each acceptance allows one message with that template."""
    key = ("SubscribeMsgPopupEvent" if "SubscribeMsgPopupEvent" in turn.message._data
           else "SubscribeMsgChangeEvent")
    listed = (turn.message._data.get(key) or {}).get("List") or []
    for item in listed if isinstance(listed, list) else [listed]:
        template_id = str(item.get("TemplateId", ""))[:64]
        if not template_id:
            continue
        grant, _ = await SubscriptionGrant.get_or_create(
            app_id=turn.app_id, openid=turn.openid, template_id=template_id)
        accepted = item.get("SubscribeStatusString") == "accept"
        grant.remaining = min(grant.remaining + 1, 50) if accepted else 0
        await grant.save(update_fields=["remaining", "updated_at"])


async def record_template_report(msgid: int, status: str) -> None:
    """TEMPLATESENDJOBFINISH: "success", "failed:user block" or "failed: system failed"."""
    if not msgid:
        return
    await OutboundMessage.filter(wechat_msgid=msgid).update(delivery_report=status[:64])
    delivered = status == "success"
    # An invitation already opened was delivered whatever the late report says.
    await ChannelInvitation.filter(template_msgid=msgid, opened_at__isnull=True).update(
        delivery_status=DeliveryStatus.DELIVERED if delivered else DeliveryStatus.FAILED,
        delivery_detail=status[:200],
    )
