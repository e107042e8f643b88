"""The append-only, hash-chained audit log (R-51)."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class AuditEntry(Model):
    """One security-relevant action. `hash` = SHA-256(prev_hash + canonical entry).

    `chain` names the chain the entry belongs to (security/audit.py): `institution:<id>` for
    what an institution's people do, `system` for the platform, anonymous callers and
    services; "" for the legacy single chain of the entries written before migration 0012."""

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
    chain = fields.CharField(max_length=40, default="", db_default="")

    class Meta:
        table = "audit_entry"


class AuditChain(Model):
    """The head of one chain, locked (SELECT ... FOR UPDATE) by the writers of that chain only.

    `anchor` is the prev_hash of the chain's first entry: the last hash of the legacy chain when
    the chain was created (all zeros on a database that never had one), so the legacy chain is
    the first segment of every chain and its tail cannot be cut off unnoticed."""

    chain = fields.CharField(max_length=40, primary_key=True)
    last_hash = fields.CharField(max_length=64)
    count = fields.BigIntField(default=0)
    anchor = fields.CharField(max_length=64)

    class Meta:
        table = "audit_chain"


class AuditChainHead(Model):
    """The head of the legacy single chain (entries before migration 0012), kept read-only for
    its verification: every writer locked this one row, a cluster-wide hot spot."""

    id = fields.IntField(primary_key=True)
    last_hash = fields.CharField(max_length=64)
    count = fields.BigIntField(default=0)

    class Meta:
        table = "audit_chain_head"
