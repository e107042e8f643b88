"""Events the call hub reports to the application (the session workflow).

Each callback receives one of these frozen dataclasses; a callback may be a plain function or
a coroutine function. Segment events are :class:`media.recording.SegmentWritten`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Role = Literal["customer", "agent"]
ROLES: tuple[Role, ...] = ("customer", "agent")
LostReason = Literal["keepalive_timeout", "connect_timeout", "connection_failed",
                     "connection_closed"]


@dataclass(frozen=True, slots=True)
class PartyConnected:
    """The party's control channel is open: media and messages flow."""

    session_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class PartyLost:
    """A party vanished without leaving (R-30: the workflow marks the call interrupted).

    aiortc has no "disconnected" state, so this comes from the data-channel keep-alive
    (``keepalive_timeout``), a party that never opened its channel (``connect_timeout``) or
    ICE/DTLS giving up (``connection_failed``/``connection_closed``).
    """

    session_id: str
    role: Role
    reason: LostReason


@dataclass(frozen=True, slots=True)
class PartyMessage:
    """An application message from a party's control channel (already parsed JSON)."""

    session_id: str
    role: Role
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClipFinished:
    """A TTS clip ended (R-23). ``complete`` is true only if every sample of the clip was sent
    while the customer was connected and the customer's page answered after the clip's end;
    ``played_ms`` counts what was sent while the customer was connected."""

    session_id: str
    clip_id: str
    played_ms: int
    duration_ms: int
    complete: bool


EventT = TypeVar("EventT")
Callback = Callable[[EventT], Awaitable[None] | None]
AnyCallback = Callable[[Any], Awaitable[None] | None]
