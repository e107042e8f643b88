"""Institutions, branches and approved sales premises (R-02, R-03)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class InstitutionKind(StrEnum):
    INSURER = "insurer"
    AGENCY = "agency"
    BANK = "bank"


class Institution(Model):
    """An insurer, agency or bank. Only accepted (验收通过) institutions may record (R-02)."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=100)
    full_name = fields.CharField(max_length=200)
    kind = fields.CharEnumField(InstitutionKind, max_length=16)
    accepted = fields.BooleanField(default=False)
    accepted_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "institution"


class Branch(Model):
    id = fields.IntField(primary_key=True)
    institution: fields.ForeignKeyRelation[Institution] = fields.ForeignKeyField(
        "models.Institution", related_name="branches", on_delete=fields.RESTRICT
    )
    institution_id: int
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=100)

    class Meta:
        table = "branch"
        unique_together = (("institution", "code"),)


class GeofenceKind(StrEnum):
    CIRCLE = "circle"
    POLYGON = "polygon"


class Premises(Model):
    """An approved sales location: a geofence (circle or polygon) and the IP ranges of its network."""  # noqa: E501 - the migration records this first line

    id = fields.IntField(primary_key=True)
    branch: fields.ForeignKeyRelation[Branch] = fields.ForeignKeyField(
        "models.Branch", related_name="premises", on_delete=fields.RESTRICT
    )
    branch_id: int
    name = fields.CharField(max_length=100)
    address = fields.CharField(max_length=200, default="")
    geofence_kind = fields.CharEnumField(GeofenceKind, max_length=16)
    center_lat = fields.FloatField(null=True)
    center_lng = fields.FloatField(null=True)
    radius_m = fields.FloatField(null=True)
    # [[lat, lng], ...] for polygon geofences
    polygon: list[list[float]] | None = fields.JSONField(null=True)  # type: ignore[assignment]
    # ["10.1.0.0/16", "2001:db8::/48", ...]
    ip_cidrs: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    active = fields.BooleanField(default=True)

    class Meta:
        table = "premises"
