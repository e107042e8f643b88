"""Staff users with their role, agents' licences, and customers (personal data encrypted, R-52)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class Role(StrEnum):
    AGENT = "agent"
    PRODUCT_OWNER = "product_owner"
    QA_INSPECTOR = "qa_inspector"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    AUDITOR = "auditor"
    # A service account for the identity/media engines that report results to the workflow.
    SYSTEM = "system"


class User(Model):
    id = fields.IntField(primary_key=True)
    institution_id: int
    branch_id: int | None
    username = fields.CharField(max_length=64, unique=True)
    password_hash = fields.CharField(max_length=200)
    display_name = fields.CharField(max_length=100)
    role = fields.CharEnumField(Role, max_length=20)
    institution: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Institution", related_name="users", on_delete=fields.RESTRICT
    )
    branch: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Branch", related_name="users", null=True, on_delete=fields.RESTRICT
    )
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_login_at = fields.DatetimeField(null=True)

    class Meta:
        table = "app_user"


class Agent(Model):
    """A licensed sales person (销售从业人员), whose fields the R-03 gates read."""

    id = fields.IntField(primary_key=True)
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "models.User", related_name="agent", on_delete=fields.RESTRICT
    )
    user_id: int
    licence_no = fields.CharField(max_length=64)
    licence_expires = fields.DateField()
    training_expires = fields.DateField()
    grade = fields.IntField(default=1)

    class Meta:
        table = "agent"


class Customer(Model):
    """A policyholder. Name, ID number and phone are stored encrypted (AES-GCM) (R-52).

    `id_number_index` is a keyed hash (HMAC) of the ID number so a customer can be found by number
    without decrypting every row.
    """

    id = fields.IntField(primary_key=True)
    institution: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Institution", related_name="customers", on_delete=fields.RESTRICT
    )
    institution_id: int
    name_enc = fields.TextField()
    id_number_enc = fields.TextField()
    id_number_index = fields.CharField(max_length=64, db_index=True)
    phone_enc = fields.TextField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "customer"
        unique_together = (("institution", "id_number_index"),)
