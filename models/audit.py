"""The append-only, hash-chained audit log (R-51)."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class AuditEntry(Model):
    """One security-relevant action. `hash` = SHA-256(prev_hash + canonical entry)."""

    id = fields.BigIntField(primary_key=True)
    at = fields.DatetimeField()
    actor_kind = fields.CharField(max_length=16)
    actor_id = fields.CharField(max_length=64, default="")
    actor_label = fields.CharField(max_length=100, default="")
    action = fields.CharField(max_length=64, db_index=True)
    object_type = fields.CharField(max_length=40, default="")
    object_id = fields.CharField(max_length=64, default="")
    outcome = fields.CharField(max_length=16, default="success")
    ip = fields.CharField(max_length=64, default="")
    details: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    prev_hash = fields.CharField(max_length=64)
    hash = fields.CharField(max_length=64, unique=True)

    class Meta:
        table = "audit_entry"


class AuditChainHead(Model):
    """A single row locked by every writer so that entries chain in one order (PostgreSQL)."""

    id = fields.IntField(primary_key=True)
    last_hash = fields.CharField(max_length=64)
    count = fields.BigIntField(default=0)

    class Meta:
        table = "audit_chain_head"
