"""Products, their script versions, and orders (applications) (R-01, R-23, R-26)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class ProductType(StrEnum):
    TRADITIONAL = "traditional"
    PARTICIPATING = "participating"
    UNIVERSAL = "universal"
    INVESTMENT_LINKED = "investment_linked"


class Channel(StrEnum):
    BANK = "bank"
    AGENCY = "agency"
    ONLINE = "online"


class Product(Model):
    id = fields.IntField(primary_key=True)
    insurer: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Institution", related_name="products", on_delete=fields.RESTRICT
    )
    insurer_id: int
    code = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=100)
    product_type = fields.CharEnumField(ProductType, max_length=24)
    term_years = fields.IntField()
    grade = fields.IntField(default=1)
    channel = fields.CharEnumField(Channel, max_length=16)
    cooling_off_days = fields.IntField(default=15)
    active = fields.BooleanField(default=True)

    class Meta:
        table = "product"


class ScriptStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    PUBLISHED = "published"
    RETIRED = "retired"


class ScriptVersion(Model):
    """One version of the script (话术) of a product. Published versions are immutable (R-23)."""

    id = fields.IntField(primary_key=True)
    product: fields.ForeignKeyRelation[Product] = fields.ForeignKeyField(
        "models.Product", related_name="script_versions", on_delete=fields.RESTRICT
    )
    product_id: int
    version = fields.IntField()
    status = fields.CharEnumField(ScriptStatus, max_length=16, default=ScriptStatus.DRAFT)
    source_yaml = fields.TextField()
    document: dict[str, Any] = fields.JSONField()  # type: ignore[assignment]
    content_hash = fields.CharField(max_length=80)  # "sha256:" + hex
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="scripts_created", null=True, on_delete=fields.RESTRICT
    )
    approved_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="scripts_approved", null=True, on_delete=fields.RESTRICT
    )
    submitted_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.User", related_name="scripts_submitted", null=True, on_delete=fields.RESTRICT
    )
    created_by_id: int | None
    approved_by_id: int | None
    submitted_by_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)
    submitted_at = fields.DatetimeField(null=True)
    approved_at = fields.DatetimeField(null=True)
    published_at = fields.DatetimeField(null=True)
    retired_at = fields.DatetimeField(null=True)
    # Lint findings of the last validation.
    lint: list[dict[str, Any]] = fields.JSONField(default=list)  # type: ignore[assignment]
    # Pre-rendered speech of the steps that need no order value: step id -> audio facts.
    audio: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    prerender_status = fields.CharField(max_length=16, default="")
    prerender_error = fields.TextField(default="")

    class Meta:
        table = "script_version"
        unique_together = (("product", "version"),)


class Order(Model):
    """An application (投保单), recorded in exactly one session (R-26)."""

    id = fields.IntField(primary_key=True)
    institution_id: int
    branch_id: int
    agent_id: int
    customer_id: int
    product_id: int
    application_no = fields.CharField(max_length=64, unique=True)
    institution: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Institution", related_name="orders", on_delete=fields.RESTRICT
    )
    branch: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Branch", related_name="orders", on_delete=fields.RESTRICT
    )
    agent: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Agent", related_name="orders", on_delete=fields.RESTRICT
    )
    customer: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Customer", related_name="orders", on_delete=fields.RESTRICT
    )
    product: fields.ForeignKeyRelation[Product] = fields.ForeignKeyField(
        "models.Product", related_name="orders", on_delete=fields.RESTRICT
    )
    premium = fields.DecimalField(max_digits=14, decimal_places=2)
    payment_years = fields.IntField()
    payment_mode = fields.CharField(max_length=16, default="年交")
    sum_insured = fields.DecimalField(max_digits=14, decimal_places=2, null=True)
    # The insured when it is not the policyholder (encrypted like all personal data, R-52).
    insured_name_enc = fields.TextField(null=True)
    # Product-specific values the script needs (e.g. annuity_start_age, chosen fund accounts).
    extra_values: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "sales_order"
