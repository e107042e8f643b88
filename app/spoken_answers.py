"""Spoken answers in the live call (R-24): once a spoken-answer step's speech has played in full
(its answer is open), the hub decodes the customer's audio (`CallHub.listen_audio`), the
utterance is cut by voice activity detection (`media.voice.utterance`), and the recogniser
judges it against what the step asks for (`media.voice.answers.classify`: affirmative,
negative or unclear, never a negative as yes). The verdict goes to the workflow
(`media_events.spoken_answer`): an acknowledgement with the transcript, a pause to explain, or
"please say it again"; after two answers it cannot understand, or `buttons_after_seconds`
without one, the page offers the buttons (`media_events.offer_buttons`), and at once when no
recogniser can run here. Listening stops when the step is answered or changes.

Threads: decoding and cutting run in the hub's listener thread; recognition (a fraction of a
CPU-second per answer, CTranslate2 releases the GIL) in a one-thread executor of its own, so a
slow answer never holds the listener of another call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from infra.database import activate, deactivate
from media.call import CallHub, UnknownSession
from media.call.listen import AudioListener
from media.voice.answers import (
    LOST_LOOKAHEAD_MS,
    LOST_LOOKBACK_MS,
    Expectation,
    classify,
    expected_answers,
    lost_audio_reason,
    unjudged,
)
from media.voice.asr import AsrConfig, AsrError, SpeechRecognizer, load_asr
from media.voice.utterance import Utterance, UtteranceCutter
from media.voice.vad import RATE, SileroVad, VoiceActivityDetector
from models.sessions import RecordingSession
from workflow import media_events
from workflow.core import WorkflowDeps

log = logging.getLogger(__name__)
# What a step accepts when its text names no answer (请回答“…” / 是否…？).
DEFAULT_ANSWERS = ("清楚",)


@dataclass
class _Listening:
    step_id: str
    listener: AudioListener[Utterance | None]
    buttons_timer: asyncio.Task[None] | None = None
    pending: set[asyncio.Task[None]] = field(default_factory=set)


class SpokenAnswerWatcher:
    def __init__(self, hub: Callable[[], CallHub], deps: WorkflowDeps,
                 vad: Callable[[], VoiceActivityDetector], config: AsrConfig, database: Any,
                 buttons_after_seconds: float = 15.0) -> None:
        self._hub = hub
        self._database = database
        self._deps = deps
        self._vad = vad
        self._config = config
        self._buttons_after = buttons_after_seconds
        self._listening: dict[str, _Listening] = {}
        self._recognizer: SpeechRecognizer | None = None
        self._unavailable: str | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="spoken-answers")

    def _load(self) -> SpeechRecognizer:
        if self._recognizer is None:
            self._recognizer = load_asr(self._config)
        return self._recognizer

    async def follow(self, session_id: UUID, session: RecordingSession | None) -> None:
        """The session moved (`session`: as it is now, read once for all the call's followers,
        `workflow.call_followers`): listen for the answer of the step that now awaits one."""
        key = str(session_id)
        step = media_events.awaited_step(session) if session is not None else None
        current = self._listening.get(key)
        if current is not None:
            if step is not None and current.step_id == step.id:
                return
            await self.stop(key)
        if step is None:
            return
        vad = self._vad()
        if not isinstance(vad, SileroVad) or self._unavailable is not None:
            await media_events.offer_buttons(self._deps, session_id, step.id,
                                             self._unavailable or "no speech detector")
            return
        started = time.time()
        cutter = UtteranceCutter(vad)
        expectation = Expectation.of(expected_answers(step.text) or DEFAULT_ANSWERS)
        origin = session.recording_started_at.timestamp() if session and \
            session.recording_started_at else started
        first_t: list[float] = []

        def cut(t: float, samples: Any) -> Utterance | None:  # the listener's thread
            if not first_t:
                first_t.append(t)
            return cutter.feed(samples)

        async def heard(utterance: Utterance | None) -> None:
            if utterance is None:
                return
            begin = first_t[0] if first_t else started
            entry = self._listening.get(key)
            # Packets lost in or just before the answer: not judged (media/call/listen.py).
            lost = None if entry is None else lost_audio_reason(entry.listener.gaps(
                utterance.start_ms - LOST_LOOKBACK_MS, utterance.end_ms + LOST_LOOKAHEAD_MS))
            if utterance.clipped:  # the customer spoke before listening began: 不 unheard?
                lost = "answer_clipped"
            task = asyncio.get_running_loop().create_task(self._judge(
                session_id, step.id, expectation, utterance, begin - origin, lost))
            if entry is not None:
                entry.pending.add(task)
                task.add_done_callback(entry.pending.discard)

        try:
            listener = self._hub().listen_audio(key, "customer", cut,
                                                on_result=self._in_database(heard),
                                                block_seconds=0.25)
        except UnknownSession:
            return  # the room is on another node, or closed
        entry = _Listening(step.id, listener)
        entry.buttons_timer = asyncio.get_running_loop().create_task(
            self._buttons_later(session_id, step.id))
        self._listening[key] = entry

    def _in_database(self, handler: Callable[[Any], Awaitable[None]],
                     ) -> Callable[[Any], Awaitable[None]]:
        """Callbacks from the hub's tasks run in the app's database context."""
        async def run(value: Any) -> None:
            token = activate(self._database)
            try:
                await handler(value)
            finally:
                deactivate(token)

        return run

    async def _judge(self, session_id: UUID, step_id: str, expectation: Expectation,
                     utterance: Utterance, listening_from_s: float,
                     lost: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            if lost is not None:
                verdict = unjudged(lost, utterance.samples.size / RATE)
            else:
                recognizer = await loop.run_in_executor(self._executor, self._load)
                verdict = await loop.run_in_executor(
                    self._executor, classify, recognizer, utterance.samples, expectation)
        except AsrError as error:
            self._unavailable = f"speech recognition unavailable: {error}"
            log.error("%s: %s; the page offers the buttons", session_id, self._unavailable)
            await media_events.offer_buttons(self._deps, session_id, step_id, "no recogniser")
            return
        start_ms = round(listening_from_s * 1000) + utterance.start_ms
        end_ms = round(listening_from_s * 1000) + utterance.end_ms
        outcome = await media_events.spoken_answer(
            self._deps, session_id, step_id, verdict.as_dict(), start_ms, end_ms)
        log.info("%s/%s: heard %r → %s by %s %s (%s, %.2f s)", session_id, step_id,
                 verdict.transcript, verdict.verdict.value, verdict.reason,
                 verdict.probabilities, outcome, verdict.seconds)

    async def _buttons_later(self, session_id: UUID, step_id: str) -> None:
        await asyncio.sleep(self._buttons_after)
        await media_events.offer_buttons(self._deps, session_id, step_id, "no answer heard")

    async def stop(self, session_id: str) -> None:
        entry = self._listening.pop(session_id, None)
        if entry is None:
            return
        if entry.buttons_timer is not None:
            entry.buttons_timer.cancel()
        await self._hub().stop_listening(session_id, entry.listener)

    def forget(self, session_id: str) -> None:
        """The room closed (and closed its listeners)."""
        entry = self._listening.pop(session_id, None)
        if entry is not None and entry.buttons_timer is not None:
            entry.buttons_timer.cancel()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
