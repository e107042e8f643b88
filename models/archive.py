"""What the archive keeps (R-42, R-43): policy status and disputes reported for an order, the
retention end of each session, tombstones of deleted sessions, archived objects, and the
insurer's status snapshots and webhook deliveries."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class PolicyState(StrEnum):
    PENDING = "pending"  # application under underwriting
    IN_FORCE = "in_force"
    CANCELLED_COOLING_OFF = "cancelled_cooling_off"  # 犹豫期内撤单
    TERMINATED = "terminated"  # surrendered, matured, claim paid, ...
    NOT_ISSUED = "not_issued"  # declined or withdrawn before issue


# The states in which the contract has ended (retention counts from `ended_on`).
ENDED_STATES = frozenset({PolicyState.CANCELLED_COOLING_OFF, PolicyState.TERMINATED,
                          PolicyState.NOT_ISSUED})


class PolicyStatus(Model):
    """The current status of the policy of one order, as the insurer last reported it."""

    id = fields.IntField(primary_key=True)
    order: fields.OneToOneRelation = fields.OneToOneField(
        "models.Order", related_name="policy_status", on_delete=fields.RESTRICT
    )
    order_id: int
    policy_no = fields.CharField(max_length=64, default="")
    state = fields.CharEnumField(PolicyState, max_length=24)
    effective_on = fields.DateField(null=True)
    # The day the cooling-off period started (policy receipt); deadlines count from it.
    receipt_on = fields.DateField(null=True)
    ended_on = fields.DateField(null=True)
    reported_by = fields.CharField(max_length=64, default="")
    updated_at = fields.DatetimeField()

    class Meta:
        table = "policy_status"


class PolicyStatusUpdate(Model):
    """Every status update the insurer sent, kept as history."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Order", related_name="policy_status_updates", on_delete=fields.RESTRICT
    )
    order_id: int
    state = fields.CharField(max_length=24)
    effective_on = fields.DateField(null=True)
    receipt_on = fields.DateField(null=True)
    ended_on = fields.DateField(null=True)
    reason = fields.CharField(max_length=200, default="")
    reported_by = fields.CharField(max_length=64, default="")
    at = fields.DatetimeField()

    class Meta:
        table = "policy_status_update"


class Dispute(Model):
    """A dispute (complaint, lawsuit, arbitration) on an order: a legal hold while open."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Order", related_name="disputes", on_delete=fields.RESTRICT
    )
    order_id: int
    reference = fields.CharField(max_length=64)
    opened_on = fields.DateField()
    closed_on = fields.DateField(null=True)
    note = fields.CharField(max_length=500, default="")
    opened_by = fields.CharField(max_length=100, default="")
    closed_by = fields.CharField(max_length=100, default="")
    created_at = fields.DatetimeField()

    class Meta:
        table = "dispute"
        unique_together = (("order", "reference"),)


class RetentionRecord(Model):
    """When a session may be deleted, and why (R-42).

    A null `retain_until` means the end is not known yet (the contract has not ended).
    """

    id = fields.IntField(primary_key=True)
    session: fields.OneToOneRelation = fields.OneToOneField(
        "models.RecordingSession", related_name="retention", on_delete=fields.RESTRICT
    )
    session_id: Any
    retain_until = fields.DateField(null=True, db_index=True)
    on_hold = fields.BooleanField(default=False)
    basis: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    computed_at = fields.DatetimeField()
    purged_at = fields.DatetimeField(null=True)

    class Meta:
        table = "retention_record"


class Tombstone(Model):
    """What remains of a deleted session: its identity, the hashes of what was deleted, and the
    retention basis, so the deletion itself stays verifiable (R-42)."""

    id = fields.IntField(primary_key=True)
    session_id = fields.UUIDField(unique=True)
    order_id = fields.IntField()
    application_no = fields.CharField(max_length=64)
    manifest: dict[str, Any] | None = fields.JSONField(null=True)  # type: ignore[assignment]
    # [{"kind", "path", "sha256", "size_bytes", "deleted": bool}]
    files: list[dict[str, Any]] = fields.JSONField(default=list)  # type: ignore[assignment]
    # Row counts deleted per table.
    rows: dict[str, int] = fields.JSONField(default=dict)  # type: ignore[assignment]
    retention: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    audit_hash = fields.CharField(max_length=64, default="")
    deleted_at = fields.DatetimeField()
    files_pending = fields.BooleanField(default=False)

    class Meta:
        table = "tombstone"


class ArchivedObject(Model):
    """A file of a sealed session copied to (or verified in) the archive store."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.RecordingSession", related_name="archived_objects", on_delete=fields.RESTRICT
    )
    session_id: Any
    key = fields.CharField(max_length=300)
    sha256 = fields.CharField(max_length=64)
    size_bytes = fields.BigIntField()
    backend = fields.CharField(max_length=16)
    archived_at = fields.DatetimeField()

    class Meta:
        table = "archived_object"
        unique_together = (("session", "key"),)


class InsurerStatusSnapshot(Model):
    """The last status of an application sent to the insurer, a change queues a webhook."""

    id = fields.IntField(primary_key=True)
    order: fields.OneToOneRelation = fields.OneToOneField(
        "models.Order", related_name="insurer_snapshot", on_delete=fields.RESTRICT
    )
    order_id: int
    digest = fields.CharField(max_length=64)
    body: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    version = fields.IntField(default=0)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "insurer_status_snapshot"


class WebhookStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


class WebhookDelivery(Model):
    """One signed webhook to an insurer, retried with backoff until acknowledged (R-43)."""

    id = fields.BigIntField(primary_key=True)
    client_id = fields.CharField(max_length=64)
    order: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Order", related_name="insurer_webhooks", null=True, on_delete=fields.RESTRICT
    )
    order_id: int | None
    event = fields.CharField(max_length=40)
    body: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    status = fields.CharEnumField(WebhookStatus, max_length=12, default=WebhookStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(db_index=True)
    last_error = fields.CharField(max_length=300, default="")
    created_at = fields.DatetimeField()
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "insurer_webhook"
