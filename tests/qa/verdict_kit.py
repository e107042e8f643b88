"""QA preconditions stated by the test itself: a finished automated report holding exactly the
findings a test names, queued like the sweep queues it — so verdict tests do not depend on what
the automated checks happen to find in a walked session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from models.qa import QaCheckReport, QaFinding, QaTask, ReportStatus
from qa import queue
from qa.findings import FAILING, KINDS, Severity
from qa.settings import QaSettings
from tests.harness import Harness


async def queue_with_findings(h: Harness, session_id: str | UUID, codes: Sequence[str] = (),
                              settings: QaSettings | None = None,
                              **report: Any) -> tuple[QaTask, list[QaFinding]]:
    """A finished report with one automated finding per code (in that order), then the queue
    (default settings: every remote session sampled and assigned)."""
    sid = UUID(str(session_id))
    now = h.deps.clock()
    counts = {s.value: 0 for s in Severity}
    for code in codes:
        counts[KINDS[code].severity.value] += 1
    fields: dict[str, Any] = {
        "status": ReportStatus.DONE, "counts": counts, "finished_at": now,
        "passed": not any(KINDS[c].severity in FAILING for c in codes), **report}
    row = await QaCheckReport.create(session_id=sid, created_at=now, **fields)
    findings = []
    for i, code in enumerate(codes):
        kind = KINDS[code]
        findings.append(await QaFinding.create(
            report_id=row.id, session_id=sid, source="auto", code=code,
            severity=kind.severity.value, requirement=kind.requirement, at_ms=(i + 1) * 1000,
            message=kind.title))
    task = await queue.enqueue(h.deps, sid, settings or QaSettings(), row)
    return task, findings


async def pass_clean(h: Harness, session_id: str, inspector: str = "qa01") -> None:
    """A walked session through QA the only way there is: a clean report, the queue, and the
    inspector's pass."""
    await queue_with_findings(h, session_id)
    r = await h.as_(inspector, "POST", f"/qa/sessions/{session_id}/verdict",
                    json={"verdict": "pass"})
    assert r.status == 201, r.body
