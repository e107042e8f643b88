"""What the channels keep: WeChat users (customers and agents), invitations delivered through a
channel and bound to one person, the stored conversations (QA replay, R-41), the outbox of
messages and webhooks to deliver, and the feed cursor of sessions the channels follow."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class ChannelKind(StrEnum):
    WECHAT = "wechat"
    MINIPROGRAM = "miniprogram"
    BANK_APP = "bank_app"
    # The plain single-use H5 link, sent by text message, shown as a QR code or copied.
    SMS = "sms"
    LINK = "link"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    WAITING_SCAN = "waiting_scan"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class OutboxKind(StrEnum):
    WECHAT_TEMPLATE = "wechat_template"
    WECHAT_CUSTOM = "wechat_custom"
    WECHAT_SUBSCRIBE = "wechat_subscribe"
    MP_SUBSCRIBE = "mp_subscribe"
    WEBHOOK = "webhook"
    # Invitations (issue 17 item 4): a text message, a mini-program card (customer-service
    # message of msgtype miniprogrampage), a push through the bank's server to its app.
    SMS = "sms"
    MP_CARD = "mp_card"
    BANK_PUSH = "bank_push"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    GAVE_UP = "gave_up"


class WechatUser(Model):
    """A WeChat user of the official account or the mini-program, by app and openid."""

    id = fields.IntField(primary_key=True)
    app_id = fields.CharField(max_length=32)
    openid = fields.CharField(max_length=64)
    unionid = fields.CharField(max_length=64, null=True)
    subscribed = fields.BooleanField(default=False)
    subscribed_at = fields.DatetimeField(null=True)
    unsubscribed_at = fields.DatetimeField(null=True)
    reminders_opt_out = fields.BooleanField(default=False)
    staff_user_id: int | None
    staff_user: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="wechat_accounts", null=True, on_delete=fields.RESTRICT
    )
    customer_id: int | None
    customer: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Customer", related_name="wechat_accounts", null=True, on_delete=fields.RESTRICT
    )
    dialogue_state = fields.CharField(max_length=20, default="idle")
    dialogue_expires_at = fields.DatetimeField(null=True)
    last_inbound_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "wechat_user"
        unique_together = (("app_id", "openid"),)


class ChannelInvitation(Model):
    """An invitation delivered through a channel and bound to the person it was meant for.

    The workflow token is kept encrypted and never leaves the server through the channel link:
    the link carries only `ref`, which is redeemed after the opener's identity is checked.
    """

    id = fields.IntField(primary_key=True)
    ref_hash = fields.CharField(max_length=64, unique=True)
    ref_enc = fields.TextField()
    token_enc = fields.TextField()
    session_id: Any
    session: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="channel_invitations", on_delete=fields.RESTRICT
    )
    invitation_id: int
    invitation: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Invitation", related_name="channel_invitations", on_delete=fields.RESTRICT
    )
    channel = fields.CharEnumField(ChannelKind, max_length=16)
    delivery = fields.CharField(max_length=16, default="link")
    delivery_status = fields.CharEnumField(DeliveryStatus, max_length=16,
                                           default=DeliveryStatus.PENDING)
    delivery_detail = fields.CharField(max_length=200, default="")
    template_msgid = fields.BigIntField(null=True, db_index=True)
    qr_scene = fields.CharField(max_length=64, null=True, unique=True)
    qr_url = fields.CharField(max_length=500, default="")
    bound_app_id = fields.CharField(max_length=32, null=True)
    bound_openid = fields.CharField(max_length=64, null=True, db_index=True)
    bound_unionid = fields.CharField(max_length=64, null=True)
    bound_at = fields.DatetimeField(null=True)
    bank_client = fields.CharField(max_length=64, null=True)
    bank_customer_ref = fields.CharField(max_length=128, null=True)
    created_by_id: int | None
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="channel_invitations", null=True, on_delete=fields.RESTRICT
    )
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    reminder_sent_at = fields.DatetimeField(null=True)
    opened_at = fields.DatetimeField(null=True)
    open_count = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "channel_invitation"


class ConversationMessage(Model):
    """One message of a chat with a customer, in or out, kept for QA replay (R-41)."""

    id = fields.BigIntField(primary_key=True)
    app_id = fields.CharField(max_length=32)
    openid = fields.CharField(max_length=64, db_index=True)
    session_id: Any
    session: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="conversation", null=True,
        on_delete=fields.RESTRICT,
    )
    direction = fields.CharField(max_length=3)
    via = fields.CharField(max_length=16)
    msg_type = fields.CharField(max_length=40)
    text = fields.TextField(default="")
    data: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    intent = fields.CharField(max_length=32, default="")
    at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "conversation_message"


class OutboundMessage(Model):
    """A message or webhook waiting to be delivered, retried with backoff until acknowledged."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharEnumField(OutboxKind, max_length=20)
    dedup_key = fields.CharField(max_length=200, unique=True)
    session_id: Any
    session: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="outbound_messages", null=True,
        on_delete=fields.RESTRICT,
    )
    target = fields.CharField(max_length=200)
    payload: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    status = fields.CharEnumField(OutboxStatus, max_length=10, default=OutboxStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(db_index=True)
    last_error = fields.CharField(max_length=300, default="")
    result: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    # The msgid WeChat gave a template message; TEMPLATESENDJOBFINISH reports on it later.
    wechat_msgid = fields.BigIntField(null=True, db_index=True)
    delivery_report = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbound_message"


class SubscriptionGrant(Model):
    """How many one-time subscribe messages a user has accepted for one template."""

    id = fields.IntField(primary_key=True)
    app_id = fields.CharField(max_length=32)
    openid = fields.CharField(max_length=64)
    template_id = fields.CharField(max_length=64)
    remaining = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "subscription_grant"
        unique_together = (("app_id", "openid", "template_id"),)


class ChannelFeed(Model):
    """The last session event the channels have acted on, for each session they follow."""

    id = fields.IntField(primary_key=True)
    session_id: Any
    session: fields.OneToOneRelation = fields.OneToOneField(
        "models.RecordingSession", related_name="channel_feed", on_delete=fields.RESTRICT
    )
    last_seq = fields.IntField(default=0)
    bank_client = fields.CharField(max_length=64, null=True)
    active = fields.BooleanField(default=True, db_index=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "channel_feed"
