"""The identity jobs (R-12) as the job queue runs them: `identity_card_read` reads an attempt's
card while the customer records the liveness clip (issue 17), `identity_check` runs the engines
on a submitted attempt with the challenge plan the customer was given. The plan and the
"being checked" mark live in Redis under the keys below (the customer API sets them,
api/routes_identity.py); the composition root (app/factory.py) only registers the jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from redis.asyncio import Redis

from media.identity.results import ChallengePlan
from workflow.core import WorkflowDeps
from workflow.identity import CardReads, IdentityEngines, read_card_early, run_identity_check

log = logging.getLogger(__name__)


def plan_key(session_id: UUID, attempt: int) -> str:
    """The attempt's random challenge plan, kept until the attempt is decided."""
    return f"identity:plan:{session_id}:{attempt}"


def pending_key(session_id: UUID) -> str:
    """Set while a submitted attempt is being checked; the check clears it."""
    return f"identity:pending:{session_id}"


@dataclass
class IdentityJobs:
    """The two jobs of one process, sharing the cards read early (`card_reads`)."""

    deps: WorkflowDeps
    engines: Callable[[], IdentityEngines]
    redis: Redis
    card_reads: CardReads = field(default_factory=CardReads)

    async def card_read(self, session_id: str, attempt: int) -> None:
        await read_card_early(self.deps, self.engines(), self.card_reads, UUID(session_id),
                              attempt)

    async def check(self, session_id: str, attempt: int) -> None:
        sid = UUID(session_id)
        try:
            raw = await self.redis.get(plan_key(sid, attempt))
            if raw is None:
                log.warning("no challenge plan for %s attempt %s", sid, attempt)
                return
            await run_identity_check(self.deps, self.engines(), sid, attempt,
                                     ChallengePlan.model_validate_json(raw), self.card_reads)
        finally:
            await self.redis.delete(pending_key(sid))
