"""Messages on a party's "control" data channel, validated at the edge.

The hub itself speaks only the keep-alive (``ping``/``pong``, either side may ping) and the TTS
notices (``tts_started``/``tts_finished``, sent to both parties so the page can show captions
while a clip plays). Every other message must be a JSON object with a string ``type``; the hub
hands it unchanged to the application (the workflow), which owns that vocabulary.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_MESSAGE_BYTES = 64 * 1024


class ControlMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ping(ControlMessage):
    type: Literal["ping"] = "ping"
    seq: int
    sent_at: float | None = None


class Pong(ControlMessage):
    type: Literal["pong"] = "pong"
    seq: int


class TtsStarted(ControlMessage):
    """A clip started playing on the TTS track (R-23)."""

    type: Literal["tts_started"] = "tts_started"
    clip_id: str
    duration_ms: int


class TtsFinished(ControlMessage):
    """A clip ended: played to the end (``complete``) or cut (R-23)."""

    type: Literal["tts_finished"] = "tts_finished"
    clip_id: str
    played_ms: int
    duration_ms: int
    complete: bool


KeepAlive = Annotated[Ping | Pong, Field(discriminator="type")]
_keepalive = TypeAdapter(KeepAlive)


class InvalidMessage(ValueError):
    """A data-channel message that is not a JSON object with a string ``type``."""


def parse_incoming(raw: str | bytes) -> Ping | Pong | dict[str, Any]:
    """A keep-alive message as its model, anything else as a JSON object for the application."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidMessage(f"not JSON: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise InvalidMessage("a message must be a JSON object with a string 'type'")
    if data["type"] in ("ping", "pong"):
        try:
            return _keepalive.validate_python(data)
        except ValidationError as error:
            raise InvalidMessage(str(error)) from error
    return data


def encode(message: BaseModel | dict[str, Any]) -> str:
    """JSON text of an outgoing message; dicts must carry a string ``type`` like models do."""
    if isinstance(message, BaseModel):
        return message.model_dump_json()
    if not isinstance(message.get("type"), str):
        raise InvalidMessage("a message must have a string 'type'")
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
