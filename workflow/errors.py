"""Errors the workflow raises: an English code for developers, a Chinese message for users."""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    status = 400

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra


class InvalidInput(WorkflowError):
    status = 422


class NotFound(WorkflowError):
    status = 404


class Forbidden(WorkflowError):
    status = 403


class Conflict(WorkflowError):
    """An illegal transition or a state that does not allow the action (HTTP 409)."""

    status = 409


class Gone(WorkflowError):
    """A used, revoked or expired invitation (HTTP 410)."""

    status = 410
