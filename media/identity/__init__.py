"""Identity verification for remote double-recording (R-12, R-13), offline by default.

ID-card OCR and validation, face match between the ID portrait and the live face, active
liveness with random challenges (plus passive anti-spoofing when configured), and presence
monitoring during the call. Start with ``IdentityService``; docs/identity.md has the details.
"""

# The names below are loaded on first use (PEP 562), so that the workflow can import the
# light modules of this package (e.g. ``media.identity.results``) without loading the engines.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media.identity.config import IdentityConfig
    from media.identity.results import (
        CardSideRead,
        Challenge,
        ChallengePlan,
        ExpectedHolder,
        FaceMatchResult,
        IdCardVerification,
        LivenessResult,
        PresenceMark,
        PresenceReport,
    )
    from media.identity.service import IdentityService

_WHERE = {
    "IdentityConfig": "media.identity.config",
    "IdentityService": "media.identity.service",
    **{name: "media.identity.results" for name in (
        "CardSideRead", "Challenge", "ChallengePlan", "ExpectedHolder", "FaceMatchResult",
        "IdCardVerification", "LivenessResult", "PresenceMark", "PresenceReport")},
}

__all__ = [
    "CardSideRead",
    "Challenge",
    "ChallengePlan",
    "ExpectedHolder",
    "FaceMatchResult",
    "IdCardVerification",
    "IdentityConfig",
    "IdentityService",
    "LivenessResult",
    "PresenceMark",
    "PresenceReport",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
