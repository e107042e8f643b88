"""The QA inspector's verdict on a sealed session (R-40)."""

from __future__ import annotations

from uuid import UUID

from models.sessions import QaReview, SessionState, Verdict
from workflow.core import WorkflowDeps, locked
from workflow.errors import NotFound
from workflow.principals import StaffPrincipal


async def review(
    deps: WorkflowDeps, principal: StaffPrincipal, session_id: UUID, verdict: Verdict,
    comments: str, findings: list[dict[str, str]],
) -> QaReview:
    async with locked(deps, session_id, "review") as unit:
        if unit.session.institution_id != principal.institution_id:
            raise NotFound("session_not_found", "找不到该录制会话")
        qa = await QaReview.create(
            session_id=session_id, inspector_id=principal.user_id, verdict=verdict,
            comments=comments[:2000], findings=findings, at=deps.clock(), using_db=unit.conn,
        )
        target = SessionState.QA_PASSED if verdict == Verdict.PASS else SessionState.QA_REJECTED
        await unit.move(principal.actor, target, f"qa_{verdict.value}",
                        {"review_id": qa.id, "findings": len(findings)})
    return qa
