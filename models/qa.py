"""Quality inspection after the call (R-40): automated check reports with their findings, the
QA queue (sampling, assignment, deadlines) and rectification of rejected sessions."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class ReportStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class QaCheckReport(Model):
    """One run of the automated checks on a sealed session (R-40)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="qa_check_reports", on_delete=fields.RESTRICT
    )
    session_id: Any
    status = fields.CharEnumField(ReportStatus, max_length=12, default=ReportStatus.RUNNING)
    passed = fields.BooleanField(null=True)
    # {"critical": n, "major": n, "minor": n, "info": n}
    counts: dict[str, int] = fields.JSONField(default=dict)  # type: ignore[assignment]
    recorded_ms = fields.BigIntField(default=0)
    elapsed_ms = fields.IntField(default=0)
    # Which engines and thresholds produced the report (VAD engine, limits).
    engines: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    error = fields.TextField(default="")
    created_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "qa_check_report"


class FindingDecision(StrEnum):
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


class QaFinding(Model):
    """One finding: what is wrong, how badly, which requirement, and where in the recording."""

    id = fields.IntField(primary_key=True)
    report: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.QaCheckReport", related_name="findings", null=True, on_delete=fields.RESTRICT
    )
    report_id: int | None
    session: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="qa_findings", on_delete=fields.RESTRICT
    )
    session_id: Any
    # "auto" for the automated checks, "inspector" for findings an inspector adds.
    source = fields.CharField(max_length=12, default="auto")
    code = fields.CharField(max_length=48)
    severity = fields.CharField(max_length=12)
    requirement = fields.CharField(max_length=8)
    at_ms = fields.BigIntField(null=True)
    step_id = fields.CharField(max_length=64, default="")
    message = fields.CharField(max_length=500)
    details: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    decision: FindingDecision | None = fields.CharEnumField(  # type: ignore[assignment]
        FindingDecision, max_length=12, null=True
    )
    decision_note = fields.CharField(max_length=500, default="")
    # A code of `qa.dismissals.REASONS` when dismissed; a dismissal counts only with its
    # `QaDismissal` row in effect (four eyes for a critical finding).
    dismissal_reason = fields.CharField(max_length=40, default="")
    decided_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="qa_finding_decisions", null=True, on_delete=fields.RESTRICT
    )
    decided_by_id: int | None
    decided_at = fields.DatetimeField(null=True)

    class Meta:
        table = "qa_finding"


class DismissalStatus(StrEnum):
    PROPOSED = "proposed"  # a critical finding: waiting for a second inspector
    APPROVED = "approved"  # in effect (a second inspector agreed, or a non-critical finding)
    REFUSED = "refused"  # the second inspector did not agree: the finding stays open


class QaDismissal(Model):
    """A dismissal of one finding, with a reason from the fixed list (R-40).

    For a critical finding the first inspector only proposes it; it takes effect when a second,
    different inspector of the institution approves (four eyes). Kept after refusal as the
    record."""

    id = fields.IntField(primary_key=True)
    finding: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.QaFinding", related_name="dismissals", on_delete=fields.RESTRICT
    )
    finding_id: int
    session: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="qa_dismissals", on_delete=fields.RESTRICT
    )
    session_id: Any
    reason_code = fields.CharField(max_length=40)
    note = fields.CharField(max_length=500)
    # The finding this one repeats (reason `duplicate`); that one stays to be decided.
    duplicate_of_id = fields.IntField(null=True)
    four_eyes = fields.BooleanField()
    status = fields.CharEnumField(DismissalStatus, max_length=12)
    proposed_by: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.User", related_name="qa_dismissals_proposed", on_delete=fields.RESTRICT
    )
    proposed_by_id: int
    proposed_at = fields.DatetimeField()
    reviewed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="qa_dismissals_reviewed", null=True,
        on_delete=fields.RESTRICT,
    )
    reviewed_by_id: int | None
    reviewed_at = fields.DatetimeField(null=True)
    review_note = fields.CharField(max_length=500, default="")

    class Meta:
        table = "qa_dismissal"


class TaskStatus(StrEnum):
    OPEN = "open"  # sampled, waiting for an inspector
    ASSIGNED = "assigned"
    DECIDED = "decided"  # an inspector passed or rejected it
    AUTO_PASSED = "auto_passed"  # not sampled and the automated checks were clean
    # Decided outside the queue by the retired plain review endpoint (before four eyes): kept for
    # old rows, never a recognised pass (the insurer does not see it as one).
    CLOSED = "closed"


class QaTask(Model):
    """A session in the QA queue: sampled or not, who inspects it and by when (R-40)."""

    id = fields.IntField(primary_key=True)
    session: fields.OneToOneRelation = fields.OneToOneField(
        "models.RecordingSession", related_name="qa_task", on_delete=fields.RESTRICT
    )
    session_id: Any
    institution_id = fields.IntField(db_index=True)
    branch_id = fields.IntField()
    report: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.QaCheckReport", related_name="tasks", null=True, on_delete=fields.RESTRICT
    )
    report_id: int | None
    sampled = fields.BooleanField()
    sample_share = fields.FloatField()
    # The rules that applied, e.g. ["remote_default", "customer_age_60_plus"].
    sample_reasons: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    status = fields.CharEnumField(TaskStatus, max_length=12, default=TaskStatus.OPEN)
    assignee: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="qa_tasks", null=True, on_delete=fields.RESTRICT
    )
    assignee_id: int | None
    assigned_at = fields.DatetimeField(null=True)
    # The end of the cooling-off period: the review must be done before it.
    deadline = fields.DatetimeField(db_index=True)
    alert_level = fields.CharField(max_length=12, default="")
    alerted_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)
    verdict = fields.CharField(max_length=8, default="")

    class Meta:
        table = "qa_task"


class RectificationStatus(StrEnum):
    REQUIRED = "required"  # rejected; waiting for the agent to record again
    RECORDING = "recording"  # the new session exists
    DONE = "done"  # the new session passed QA
    FAILED = "failed"  # the new session was rejected as well (a new rectification follows)


class Rectification(Model):
    """A rejected session leads to a new session for the same order, linked to the old one."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Order", related_name="rectifications", on_delete=fields.RESTRICT
    )
    order_id: int
    original_session: fields.OneToOneRelation = fields.OneToOneField(
        "models.RecordingSession", related_name="rectification", on_delete=fields.RESTRICT
    )
    original_session_id: Any
    new_session: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="rectifies", null=True,
        on_delete=fields.RESTRICT,
    )
    new_session_id: Any
    status = fields.CharEnumField(RectificationStatus, max_length=12,
                                  default=RectificationStatus.REQUIRED)
    reasons: list[dict[str, Any]] = fields.JSONField(default=list)  # type: ignore[assignment]
    deadline = fields.DatetimeField()
    created_by: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.User", related_name="rectifications_requested", on_delete=fields.RESTRICT
    )
    created_by_id: int
    created_at = fields.DatetimeField()
    linked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "qa_rectification"
