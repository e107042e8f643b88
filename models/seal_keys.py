"""Per-institution Ed25519 seal keys (R-31): one active key per institution, retired keys kept
so that older manifests stay verifiable. Only the public half is ever shown; the private half is
stored encrypted with the field cipher (see security/seal_keys.py)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class SealKeyStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class SealKey(Model):
    """An Ed25519 key that signs the manifests of the sessions of one institution."""

    id = fields.IntField(primary_key=True)
    institution: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Institution", related_name="seal_keys", on_delete=fields.RESTRICT
    )
    institution_id: int
    # The fingerprint of the public key: 16 hex digits of its SHA-256 (security.seal_manifest).
    key_id = fields.CharField(max_length=32, unique=True)
    algorithm = fields.CharField(max_length=16, default="Ed25519")
    public_key = fields.CharField(max_length=64)
    # Where the private half lives: "db-aesgcm" (encrypted in `private_key_enc`), or the name
    # of an external key manager that holds it (then `private_key_enc` is its reference).
    custody = fields.CharField(max_length=32, default="db-aesgcm")
    private_key_enc = fields.TextField()
    status = fields.CharEnumField(SealKeyStatus, max_length=8, default=SealKeyStatus.ACTIVE)
    created_at = fields.DatetimeField()
    created_by = fields.CharField(max_length=100, default="")
    retired_at = fields.DatetimeField(null=True)

    class Meta:
        table = "seal_key"
