"""Preparing the speech of a session's steps before the call (R-23): the job renders every TTS
step through the configured engines (cache first) and pins its audio hash, engine and voice on
the session, so the recording can later prove what the customer heard."""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis

from models.sessions import RecordingSession
from security.audit import Actor
from workflow.core import WorkflowDeps, locked
from workflow.script_speech import SpeechSettings, prerender_session_speech


async def prepare_session_speech(
    deps: WorkflowDeps, speech: SpeechSettings, redis: Redis, session_id: UUID
) -> int:
    session = await RecordingSession.get(id=session_id)
    audio = await prerender_session_speech(session_id, session.steps, speech, redis)
    async with locked(deps, session_id, None) as unit:
        # Re-read under the lock: only the audio facts are added, nothing else is touched.
        unit.session.steps = [
            {**step, "audio": audio[step["id"]]} if step["id"] in audio else step
            for step in unit.session.steps
        ]
        await unit.event(Actor.system("tts"), "speech_prepared",
                         {"steps": len(audio),
                          "engines": sorted({a["engine"] for a in audio.values()})})
    return len(audio)
