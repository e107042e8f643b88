"""Identity verification for remote double-recording (R-12, R-13), offline by default.

ID-card OCR and validation, face match between the ID portrait and the live face, active
liveness with random challenges (plus passive anti-spoofing when configured), and presence
monitoring during the call. Start with ``IdentityService``; docs/identity.md has the details.
"""

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
