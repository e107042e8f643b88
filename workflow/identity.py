"""Recording identity results (R-12): OCR, face match and liveness, with an attempt limit.

The engines (media/identity) produce the results; this module only decides what they mean for
the session: all three passed → identity_verified; otherwise another attempt, until the limit
→ identity_failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from models.sessions import IdentityCheck, SessionState
from security.audit import Actor
from workflow.core import WorkflowDeps, locked


@dataclass(frozen=True)
class ComponentResult:
    passed: bool
    engine: str = ""
    score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "engine": self.engine, "score": self.score,
                "details": self.details, "reason": self.reason}


@dataclass(frozen=True)
class AttemptOutcome:
    check: IdentityCheck
    state: SessionState
    attempts_left: int


async def record_attempt(
    deps: WorkflowDeps, actor: Actor, session_id: UUID,
    ocr: ComponentResult, face: ComponentResult, liveness: ComponentResult,
) -> AttemptOutcome:
    limit = deps.settings.identity_max_attempts
    async with locked(deps, session_id, "identity") as unit:
        session = unit.session
        session.identity_attempts += 1
        passed = ocr.passed and face.passed and liveness.passed
        reasons = [r.reason for r in (ocr, face, liveness) if not r.passed and r.reason]
        check = await IdentityCheck.create(
            session_id=session.id, attempt=session.identity_attempts, passed=passed,
            ocr=ocr.as_dict(), face=face.as_dict(), liveness=liveness.as_dict(),
            reasons=reasons, at=deps.clock(), using_db=unit.conn,
        )
        data = {"attempt": session.identity_attempts, "passed": passed, "reasons": reasons}
        if passed:
            await unit.move(actor, SessionState.IDENTITY_VERIFIED, "identity_verified", data)
        elif session.identity_attempts >= limit:
            session.ended_at = deps.clock()
            session.end_reason = "identity verification failed"
            await unit.move(actor, SessionState.IDENTITY_FAILED, "identity_failed", data)
        else:
            await unit.move(actor, SessionState.CONSENTED, "identity_attempt_failed", data)
        state = session.state
        left = max(limit - session.identity_attempts, 0) if not passed else 0
    return AttemptOutcome(check, state, left)
