"""The stored conversations: every message in and out of a chat with a customer, linked to the
customer's session so that QA can replay it next to the recording (R-41). ID and phone numbers
a customer types are masked before they are stored (R-52)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from models import lean
from models.channels import ConversationMessage
from security.masking import mask_text

MAX_TEXT = 2000


def mask_openid(openid: str) -> str:
    """o6_bmjrPTlm6_2sgVt7hMZOPfL2M -> o6_bmj…fL2M (enough for QA to tell users apart)."""
    return openid if len(openid) <= 10 else f"{openid[:6]}…{openid[-4:]}"


def build(
    *, app_id: str, openid: str, direction: str, via: str, msg_type: str, text: str = "",
    session_id: UUID | str | None = None, intent: str = "", data: dict[str, Any] | None = None,
    at: datetime,
) -> ConversationMessage:
    """An unsaved message (see `save_all`)."""
    return ConversationMessage(
        app_id=app_id, openid=openid, direction=direction, via=via, msg_type=msg_type[:40],
        text=mask_text(text[:MAX_TEXT]), session_id=session_id, intent=intent[:32],
        data=data or {}, at=at,
    )


async def store(**fields: Any) -> ConversationMessage:
    message = build(**fields)
    await message.save()
    return message


async def save_all(messages: list[ConversationMessage]) -> None:
    """Several messages in one INSERT (one statement, so all or none, in their order): on the
    WeChat endpoint a transaction of one INSERT each cost three more round trips, and the ORM's
    `bulk_create` still ran BEGIN, INSERT and COMMIT on SQLite (issue 14). Their ids are not
    read back (nothing uses them after the turn)."""
    await lean.insert_all(messages)


def replay_view(message: ConversationMessage) -> dict[str, Any]:
    return {
        "id": message.id, "at": message.at.isoformat(), "direction": message.direction,
        "via": message.via, "type": message.msg_type, "text": message.text,
        "intent": message.intent, "data": message.data,
        "user": mask_openid(message.openid),
    }
