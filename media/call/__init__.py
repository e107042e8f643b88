"""The WebRTC call hub (aiortc): rooms of customer and agent, encoded-frame relay, the TTS track,
the control data channel with keep-alive, and recording through :mod:`media.recording`."""

from media.call.events import (
    ROLES,
    ClipFinished,
    PartyConnected,
    PartyLost,
    PartyMessage,
    Role,
)
from media.call.hub import CallHub, CallHubConfig, SignallingError, UnknownSession
from media.call.ice import include_loopback_candidates
from media.call.messages import Ping, Pong, TtsFinished, TtsStarted
from media.recording import SegmentWritten

__all__ = [
    "ROLES",
    "CallHub",
    "CallHubConfig",
    "ClipFinished",
    "PartyConnected",
    "PartyLost",
    "PartyMessage",
    "Ping",
    "Pong",
    "Role",
    "SegmentWritten",
    "SignallingError",
    "TtsFinished",
    "TtsStarted",
    "UnknownSession",
    "include_loopback_candidates",
]
