"""Consent first (R-10): both consents with the exact text hash, time, IP and device.
Declining either ends the session; nothing is ever recorded for it."""

from __future__ import annotations

from dataclasses import dataclass

from models.sessions import Consent, ConsentKind, RecordingSession, SessionState
from workflow.consent_texts import CONSENT_TEXTS
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict
from workflow.event_types import EventType
from workflow.principals import CustomerPrincipal


@dataclass(frozen=True)
class ConsentAnswer:
    kind: ConsentKind
    text_hash: str
    agreed: bool


async def give_consent(
    deps: WorkflowDeps, principal: CustomerPrincipal, answers: list[ConsentAnswer]
) -> RecordingSession:
    by_kind = {a.kind: a for a in answers}
    if set(by_kind) != set(CONSENT_TEXTS):
        raise Conflict("consent_incomplete", "请分别阅读并回答录音录像同意书和个人信息处理授权书")
    for kind, answer in by_kind.items():
        if answer.text_hash != CONSENT_TEXTS[kind].sha256:
            raise Conflict("consent_text_outdated", "同意书内容已更新，请刷新页面后重新阅读")
    now = deps.clock()
    async with locked(deps, principal.session_id, "consent") as unit:
        for kind, answer in by_kind.items():
            text = CONSENT_TEXTS[kind]
            await Consent.create(
                session_id=unit.session.id, kind=kind, text_version=text.version,
                text_hash=text.sha256, agreed=answer.agreed, at=now, ip=principal.ip[:64],
                user_agent=principal.user_agent[:300], using_db=unit.conn,
            )
        details = {k.value: a.agreed for k, a in by_kind.items()}
        if all(a.agreed for a in answers):
            unit.session.consented_at = now
            await unit.move(principal.actor, SessionState.CONSENTED, EventType.CONSENTED, details)
        else:
            unit.session.ended_at = now
            unit.session.end_reason = "customer declined consent"
            await unit.move(principal.actor, SessionState.DECLINED, EventType.DECLINED, details)
        session: RecordingSession = unit.session
    return session
