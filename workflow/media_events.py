"""What the call hub reports, applied to the session (R-23, R-24, R-30): recorded segments are
registered, every TTS clip's outcome goes on the timeline (played in full or cut), a step that
needs no answer moves on once its speech has played in full, and a lost party interrupts the
call; the presence monitor's reference (R-13) is the verified live face. The hub itself knows
nothing of sessions; `app/call_bridge.py` wires it to this module."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from models.sessions import IdentityCheck, RecordingSession
from scripts_library.speech import SpeechSettings
from security.audit import Actor
from workflow import call
from workflow.core import WorkflowDeps, locked
from workflow.errors import WorkflowError
from workflow.evidence import EvidenceStore
from workflow.states import CALL_STATES

log = logging.getLogger(__name__)
MEDIA = Actor.system("media")


async def segment_written(
    deps: WorkflowDeps, session_id: UUID, kind: str, segment: int, path: str, sha256: str,
    size_bytes: int, duration_ms: int, started_at: datetime, ended_at: datetime | None,
) -> None:
    try:
        await call.register_recording(deps, MEDIA, session_id, call.NewRecording(
            kind=kind, segment=segment, path=path, sha256=sha256, size_bytes=size_bytes,
            duration_ms=duration_ms, started_at=started_at, ended_at=ended_at,
        ))
    except WorkflowError as exc:
        # The file stays on disk; sealing would list it as added, so make it loud.
        log.error("segment %s/%s/%s not registered: %s", session_id, kind, segment, exc)


async def speech_started(deps: WorkflowDeps, session_id: UUID, clip_id: str) -> None:
    step_id = clip_id.split("@", 1)[0]
    async with locked(deps, session_id, None) as unit:
        unit.session.speaking_step = step_id
        await unit.event(MEDIA, "tts_started", {"step_id": step_id, "clip_id": clip_id})


async def clip_finished(
    deps: WorkflowDeps, session_id: UUID, clip_id: str, played_ms: int, duration_ms: int,
    complete: bool,
) -> None:
    step_id = clip_id.split("@", 1)[0]
    advance_to_next = False
    async with locked(deps, session_id, None) as unit:
        await unit.event(MEDIA, "tts_played", {
            "step_id": step_id, "clip_id": clip_id, "played_ms": played_ms,
            "duration_ms": duration_ms, "complete": complete,
        })
        session = unit.session
        if session.speaking_step == step_id:
            session.speaking_step = ""
        if complete and session.state.value == "disclosing" and not session.paused:
            step = session.steps[session.current_step]
            advance_to_next = step["id"] == step_id and step.get("answer") == call.NO_ANSWER
    if advance_to_next:
        await call.advance_after_speech(deps, session_id, step_id)


async def party_lost(deps: WorkflowDeps, session_id: UUID, role: str, reason: str) -> None:
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or session.state not in CALL_STATES:
        return
    try:
        await call.interrupt(deps, MEDIA, session_id, f"{role} lost: {reason}")
    except WorkflowError as exc:
        log.info("session %s not interrupted: %s", session_id, exc)


@dataclass(frozen=True)
class PresenceReference:
    """What the presence monitor of a call needs (R-13): the verified live face and the zero of
    the session's timeline."""

    image: bytes  # JPEG of the live face the identity check matched (decrypted evidence)
    attempt: int
    origin: float  # recording_started_at as POSIX seconds: presence times count from here


class NoPresenceReference(LookupError):
    """The session has no verified live face to compare the call's video with."""


def live_face_path(session_id: UUID, attempt: int) -> str:
    """Where `workflow.identity.run_identity_check` stores the matched live face."""
    return f"sessions/{session_id}/identity/attempt-{attempt}/live-face.jpg.enc"


async def presence_reference(deps: WorkflowDeps, session_id: UUID) -> PresenceReference:
    """The reference for R-13: the live face of the passed identity check. Raises
    `NoPresenceReference` (with the reason) when there is none, e.g. a check reported by an
    external engine without the evidence file, or a call without a verified identity."""
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or session.recording_started_at is None:
        raise NoPresenceReference("the call has not started")
    check = await IdentityCheck.filter(session_id=session_id, passed=True) \
        .order_by("-attempt").first()
    if check is None:
        raise NoPresenceReference("no passed identity check")
    path = live_face_path(session_id, check.attempt)
    if not deps.storage.exists(path):
        raise NoPresenceReference(f"no live face stored for attempt {check.attempt}")
    image = await asyncio.to_thread(EvidenceStore(deps.storage, deps.cipher).get, path)
    return PresenceReference(image, check.attempt, session.recording_started_at.timestamp())


def clip_for(session: RecordingSession, speech: SpeechSettings) -> tuple[str, Path] | None:
    """The current step's pre-rendered speech (R-23): its clip id and WAV file, if any."""
    if session.state.value != "disclosing" or session.paused:
        return None
    step: dict[str, Any] = session.steps[session.current_step]
    audio = step.get("audio")
    if step.get("speaker") != "tts" or not audio:
        return None
    from media.tts.cache import SpeechCache

    cached = SpeechCache(speech.cache_dir).get(audio["cache_key"])
    if cached is None or cached.wav_sha256 != audio["sha256"]:
        log.error("speech of step %s is missing or changed in the cache", step["id"])
        return None
    return f"{step['id']}@{session.event_seq}", cached.wav_path
