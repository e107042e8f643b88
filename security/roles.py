"""Roles and their explicit permissions, and the scope of sessions each role may see (R-50)."""

from __future__ import annotations

from enum import StrEnum

from models.people import Role


class Permission(StrEnum):
    RECORD = "record"
    VIEW_RECORDING = "view_recording"
    INSPECT = "inspect"
    STATISTICS = "statistics"
    EDIT_SCRIPT = "edit_script"
    PUBLISH_SCRIPT = "publish_script"
    MANAGE_USERS = "manage_users"
    READ_AUDIT = "read_audit"
    VIEW_SESSIONS = "view_sessions"
    VIEW_PERSONAL_DATA = "view_personal_data"
    REPORT_IDENTITY = "report_identity"
    REPORT_MEDIA = "report_media"


class Scope(StrEnum):
    """Which sessions a role sees: its own, its branch, its institution, or none."""

    OWN = "own"
    BRANCH = "branch"
    INSTITUTION = "institution"
    NONE = "none"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.AGENT: frozenset({P.RECORD, P.VIEW_SESSIONS}),
    Role.PRODUCT_OWNER: frozenset({P.EDIT_SCRIPT, P.PUBLISH_SCRIPT}),
    Role.QA_INSPECTOR: frozenset(
        {P.INSPECT, P.VIEW_RECORDING, P.VIEW_SESSIONS, P.VIEW_PERSONAL_DATA}
    ),
    Role.SUPERVISOR: frozenset({P.STATISTICS, P.VIEW_SESSIONS, P.VIEW_RECORDING}),
    Role.ADMIN: frozenset({P.MANAGE_USERS, P.STATISTICS}),
    Role.AUDITOR: frozenset({P.READ_AUDIT}),
    Role.SYSTEM: frozenset({P.REPORT_IDENTITY, P.REPORT_MEDIA, P.VIEW_SESSIONS}),
}

ROLE_SCOPE: dict[Role, Scope] = {
    Role.AGENT: Scope.OWN,
    Role.PRODUCT_OWNER: Scope.NONE,
    Role.QA_INSPECTOR: Scope.INSTITUTION,
    Role.SUPERVISOR: Scope.BRANCH,
    Role.ADMIN: Scope.NONE,
    Role.AUDITOR: Scope.NONE,
    Role.SYSTEM: Scope.INSTITUTION,
}


def permissions_of(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]


def has_permission(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
