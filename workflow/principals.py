"""Who calls the workflow: a staff user or a customer holding an opened invitation."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from models.people import Role
from security.audit import Actor
from security.roles import ROLE_SCOPE, Permission, Scope, has_permission


@dataclass(frozen=True)
class StaffPrincipal:
    user_id: int
    username: str
    display_name: str
    role: Role
    institution_id: int
    branch_id: int | None
    agent_id: int | None
    ip: str = ""
    user_agent: str = ""

    @property
    def actor(self) -> Actor:
        return Actor("user", str(self.user_id), f"{self.username}({self.role.value})", self.ip)

    @property
    def scope(self) -> Scope:
        return ROLE_SCOPE[self.role]

    def can(self, permission: Permission) -> bool:
        return has_permission(self.role, permission)


@dataclass(frozen=True)
class CustomerPrincipal:
    session_id: UUID
    ip: str = ""
    user_agent: str = ""

    @property
    def actor(self) -> Actor:
        return Actor("customer", str(self.session_id), "customer", self.ip)
