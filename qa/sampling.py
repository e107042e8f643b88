"""Which sessions an inspector reviews (R-40): configured rules by product type, customer age
and the agent's history, a default share (100% for remote sessions unless configured lower),
and a deterministic draw so the decision can be recomputed and audited."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from models.qa import QaCheckReport, QaTask
from models.sales import Product
from models.sessions import RecordingSession, SessionState
from qa.settings import SamplingConfig, SamplingRule


@dataclass(frozen=True)
class AgentHistory:
    sessions: int
    rejections: int


@dataclass(frozen=True)
class SamplingDecision:
    sampled: bool
    share: float
    reasons: list[str]
    draw: float


def draw(session_id: object, salt: str) -> float:
    """A number in [0, 1) fixed by the session id: the same session always draws the same."""
    digest = hashlib.sha256(f"{salt}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


async def agent_history(agent_id: int, days: int, now: datetime,
                        exclude: object = None) -> AgentHistory:
    since = now - timedelta(days=days)
    finished = RecordingSession.filter(
        agent_id=agent_id, completed_at__gte=since,
    ).exclude(id=exclude)
    sessions = await finished.count()
    rejections = await RecordingSession.filter(
        agent_id=agent_id, completed_at__gte=since, state=SessionState.QA_REJECTED,
    ).exclude(id=exclude).count()
    # Sessions rejected and already re-recorded stay counted: the history is the agent's.
    return AgentHistory(sessions, rejections)


async def _matches(rule: SamplingRule, session: RecordingSession, product: Product,
                   now: datetime) -> bool:
    if rule.product_types is not None and product.product_type not in rule.product_types:
        return False
    age = session.customer_age
    if rule.min_customer_age is not None and (age is None or age < rule.min_customer_age):
        return False
    if rule.max_customer_age is not None and (age is None or age > rule.max_customer_age):
        return False
    if rule.agent_rejections_at_least is not None or rule.agent_sessions_at_most is not None:
        history = await agent_history(session.agent_id, rule.agent_history_days, now,
                                      exclude=session.id)
        if rule.agent_rejections_at_least is not None \
                and history.rejections < rule.agent_rejections_at_least:
            return False
        if rule.agent_sessions_at_most is not None \
                and history.sessions > rule.agent_sessions_at_most:
            return False
    return True


async def decide(config: SamplingConfig, session: RecordingSession, product: Product,
                 report: QaCheckReport | None, now: datetime) -> SamplingDecision:
    share = config.default_share
    reasons = ["default"]
    matched = [rule for rule in config.rules if await _matches(rule, session, product, now)]
    if matched:
        best = max(rule.share for rule in matched)
        if best >= share:
            share = best
            reasons = [rule.name for rule in matched if rule.share == best]
    value = draw(session.id, config.salt)
    sampled = value < share
    if config.findings_force_review and report is not None and report.passed is False:
        sampled = True
        reasons = [*reasons, "automated_findings"]
    return SamplingDecision(sampled, share, reasons, value)


async def observed_share(institution_id: int) -> float:
    """The share of queued sessions actually sampled (for the queue page)."""
    total = await QaTask.filter(institution_id=institution_id).count()
    if not total:
        return 0.0
    sampled = await QaTask.filter(institution_id=institution_id, sampled=True).count()
    return sampled / total
