"""Statistics (R-55): counts and rates by institution, branch, agent, product and period —
sessions by outcome, identity pass rates, QA pass rates, median durations.

Sessions are counted in the period of their creation (China time). The figures are computed
from the sessions' own rows, so they always agree with what the API shows for each session.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Literal

from models.org import Branch, Institution
from models.people import Agent, User
from models.sales import Product
from models.sessions import IdentityCheck, RecordingSession, SessionState

S = SessionState
CHINA = timezone(timedelta(hours=8), "CST")
GroupBy = Literal["institution", "branch", "agent", "product", "period"]
Period = Literal["day", "week", "month"]
OUTCOMES: dict[str, frozenset[SessionState]] = {
    "qa_passed": frozenset({S.QA_PASSED}),
    "qa_rejected": frozenset({S.QA_REJECTED}),
    # evidence_incomplete: completed, sealed once its missing file is back
    "awaiting_qa": frozenset({S.COMPLETED, S.EVIDENCE_INCOMPLETE, S.SEALED, S.QA_PENDING}),
    "in_progress": frozenset({S.CREATED, S.INVITED, S.OPENED, S.CONSENTED,
                              S.IDENTITY_VERIFIED, S.IN_CALL, S.DISCLOSING, S.SIGNING,
                              S.INTERRUPTED}),
    "declined": frozenset({S.DECLINED}),
    "identity_failed": frozenset({S.IDENTITY_FAILED}),
    "expired": frozenset({S.EXPIRED}),
    "aborted": frozenset({S.ABORTED}),
}
OUTCOME_OF = {state: name for name, states in OUTCOMES.items() for state in states}


@dataclass(frozen=True)
class StatsQuery:
    group_by: GroupBy
    institution_id: int
    branch_id: int | None = None
    period: Period = "month"
    start: date | None = None
    end: date | None = None  # exclusive


def period_key(at: datetime, period: Period) -> str:
    day = at.astimezone(CHINA).date()
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _median(values: list[float]) -> int | None:
    return round(statistics.median(values)) if values else None


@dataclass
class _Bucket:
    sessions: int = 0
    outcomes: dict[str, int] | None = None
    identity_sessions: int = 0
    identity_passed: int = 0
    identity_attempts: int = 0
    identity_attempts_passed: int = 0
    call_ms: list[float] | None = None
    session_ms: list[float] | None = None

    def __post_init__(self) -> None:
        self.outcomes = {name: 0 for name in OUTCOMES}
        self.call_ms = []
        self.session_ms = []

    def view(self) -> dict[str, Any]:
        assert self.outcomes is not None and self.call_ms is not None
        assert self.session_ms is not None
        passed, rejected = self.outcomes["qa_passed"], self.outcomes["qa_rejected"]
        return {
            "sessions": self.sessions, "outcomes": self.outcomes,
            "identity_pass_rate": _rate(self.identity_passed, self.identity_sessions),
            "identity_attempt_pass_rate": _rate(self.identity_attempts_passed,
                                                self.identity_attempts),
            "qa_pass_rate": _rate(passed, passed + rejected),
            "median_call_ms": _median(self.call_ms),
            "median_session_ms": _median(self.session_ms),
        }


def _bounds(q: StatsQuery) -> tuple[datetime | None, datetime | None]:
    def at(day: date | None) -> datetime | None:
        return (datetime.combine(day, time(0, 0), tzinfo=CHINA).astimezone(UTC)
                if day else None)

    return at(q.start), at(q.end)


async def _labels(group_by: GroupBy, keys: set[Any]) -> dict[Any, str]:
    if group_by == "institution":
        return {i.id: i.name for i in await Institution.filter(id__in=list(keys))}
    if group_by == "branch":
        return {b.id: b.name for b in await Branch.filter(id__in=list(keys))}
    if group_by == "product":
        return {p.id: p.name for p in await Product.filter(id__in=list(keys))}
    if group_by == "agent":
        agents = await Agent.filter(id__in=list(keys))
        users = {u.id: u for u in await User.filter(id__in=[a.user_id for a in agents])}
        return {a.id: users[a.user_id].display_name for a in agents}
    return {k: str(k) for k in keys}


async def compute(q: StatsQuery) -> dict[str, Any]:
    query = RecordingSession.filter(institution_id=q.institution_id)
    if q.branch_id is not None:
        query = query.filter(branch_id=q.branch_id)
    start, end = _bounds(q)
    if start is not None:
        query = query.filter(created_at__gte=start)
    if end is not None:
        query = query.filter(created_at__lt=end)
    rows = await query.values("id", "institution_id", "branch_id", "agent_id", "product_id",
                              "state", "created_at", "recording_started_at", "completed_at")
    checks: dict[Any, list[bool]] = defaultdict(list)
    ids = [r["id"] for r in rows]
    for chunk in range(0, len(ids), 500):
        for session_id, passed in await IdentityCheck.filter(
                session_id__in=ids[chunk:chunk + 500]).values_list("session_id", "passed"):
            checks[session_id].append(bool(passed))
    buckets: dict[Any, _Bucket] = defaultdict(_Bucket)
    total = _Bucket()
    for r in rows:
        key = (period_key(r["created_at"], q.period) if q.group_by == "period"
               else r[f"{q.group_by}_id"])
        for bucket in (buckets[key], total):
            _add(bucket, r, checks.get(r["id"], []))
    labels = await _labels(q.group_by, set(buckets))
    items = [{"key": str(k), "label": labels.get(k, str(k)), **b.view()}
             for k, b in sorted(buckets.items(), key=lambda kv: str(kv[0]))]
    return {"group_by": q.group_by, "period": q.period,
            "from": q.start.isoformat() if q.start else None,
            "to": q.end.isoformat() if q.end else None,
            "items": items, "total": total.view()}


def _add(b: _Bucket, r: dict[str, Any], attempts: list[bool]) -> None:
    assert b.outcomes is not None and b.call_ms is not None and b.session_ms is not None
    b.sessions += 1
    b.outcomes[OUTCOME_OF[SessionState(r["state"])]] += 1
    if attempts:
        b.identity_sessions += 1
        b.identity_passed += any(attempts)
        b.identity_attempts += len(attempts)
        b.identity_attempts_passed += sum(attempts)
    done = r["completed_at"]
    if done is not None:
        b.session_ms.append((done - r["created_at"]).total_seconds() * 1000)
        if r["recording_started_at"] is not None:
            b.call_ms.append((done - r["recording_started_at"]).total_seconds() * 1000)
