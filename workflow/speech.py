"""Preparing the speech of a session's steps before the call (R-23): the job renders every TTS
step through the configured engines (cache first) and pins its audio hash, engine and voice on
the session, so the recording can later prove what the customer heard."""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis

from models.sessions import RecordingSession
from scripts_library.render import StepAudio
from security.audit import Actor
from workflow.core import WorkflowDeps, locked
from workflow.event_types import EventType
from workflow.script_speech import SpeechSettings, prerender_session_speech
from workflow.steps import steps_of


async def prepare_session_speech(
    deps: WorkflowDeps, speech: SpeechSettings, redis: Redis, session_id: UUID
) -> int:
    session = await RecordingSession.get(id=session_id)
    audio = await prerender_session_speech(session_id, session.steps, speech, redis)
    async with locked(deps, session_id, None) as unit:
        # Re-read under the lock: only the audio facts are added, nothing else is touched;
        # they are checked against the model the session's steps are read with.
        for facts in audio.values():
            StepAudio.model_validate(facts)
        unit.session.steps = [
            {**raw, "audio": audio[step.id]} if step.id in audio else raw
            for raw, step in zip(unit.session.steps, steps_of(unit.session), strict=True)
        ]
        await unit.event(Actor.system("tts"), EventType.SPEECH_PREPARED,
                         {"steps": len(audio),
                          "engines": sorted({a["engine"] for a in audio.values()})})
    return len(audio)
