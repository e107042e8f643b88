"""The recording session and everything that happens in it: invitations, consents, events,
acknowledgements, identity checks, signatures, recordings and QA reviews."""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from tortoise import fields
from tortoise.models import Model


class SessionState(StrEnum):
    CREATED = "created"
    INVITED = "invited"
    OPENED = "opened"
    CONSENTED = "consented"
    IDENTITY_VERIFIED = "identity_verified"
    IN_CALL = "in_call"
    DISCLOSING = "disclosing"
    SIGNING = "signing"
    COMPLETED = "completed"
    SEALED = "sealed"
    QA_PENDING = "qa_pending"
    QA_PASSED = "qa_passed"
    QA_REJECTED = "qa_rejected"
    DECLINED = "declined"
    IDENTITY_FAILED = "identity_failed"
    INTERRUPTED = "interrupted"
    EXPIRED = "expired"
    ABORTED = "aborted"
    # Sealing refused: a registered file is missing, unreadable or not what was written.
    EVIDENCE_INCOMPLETE = "evidence_incomplete"


class RecordingSession(Model):
    """A remote double-recording of one sale (one application, R-26)."""

    id = fields.UUIDField(primary_key=True)
    order_id: int
    agent_id: int
    institution_id: int
    branch_id: int
    product_id: int
    premises_id: int | None
    script_version_id: int | None
    order: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Order", related_name="sessions", on_delete=fields.RESTRICT
    )
    agent: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Agent", related_name="sessions", on_delete=fields.RESTRICT
    )
    institution: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Institution", related_name="sessions", on_delete=fields.RESTRICT
    )
    branch: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Branch", related_name="sessions", on_delete=fields.RESTRICT
    )
    product: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Product", related_name="sessions", on_delete=fields.RESTRICT
    )
    premises: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Premises", related_name="sessions", null=True, on_delete=fields.RESTRICT
    )
    script_version: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.ScriptVersion", related_name="sessions", null=True, on_delete=fields.RESTRICT
    )
    script_hash = fields.CharField(max_length=80, default="")
    # The concrete ordered steps pinned at creation: [{"id", "kind", "text", "ack": bool}, ...]
    steps: list[dict[str, Any]] = fields.JSONField(default=list)  # type: ignore[assignment]
    state = fields.CharEnumField(SessionState, max_length=20, default=SessionState.CREATED)
    # The state an interrupted session resumes into.
    resume_state: SessionState | None = fields.CharEnumField(  # type: ignore[assignment]
        SessionState, max_length=20, null=True
    )
    paused = fields.BooleanField(default=False)
    # The step whose speech is being played into the call; answers wait for it.
    speaking_step = fields.CharField(max_length=64, default="")
    pause_reason = fields.CharField(max_length=200, default="")
    # The step whose answer (button, voice, hand-copy, signature, or the agent moving on) the
    # server accepts now: set only once its speech reached the connected customer in full, or
    # the agent was heard reading it; cleared whenever the step changes.
    answer_open_step = fields.CharField(max_length=64, default="")
    # The parties whose media is connected to the call hub: {"customer": {"at": iso,
    # "recording": bool}, "agent": {...}}; the script starts only with both.
    call_parties: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    # The spoken answer to the current step: {"step_id", "attempts", "heard",
    # "verdict", "buttons"} — what the customer was heard saying, and whether the page now
    # offers the buttons (after answers it could not understand, or silence). Reset per step.
    spoken: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    current_step = fields.IntField(default=0)
    identity_attempts = fields.IntField(default=0)
    customer_age = fields.IntField(null=True)
    event_seq = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    consented_at = fields.DatetimeField(null=True)
    recording_started_at = fields.DatetimeField(null=True)
    interrupted_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    sealed_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    end_reason = fields.CharField(max_length=200, default="")
    manifest: dict[str, Any] | None = fields.JSONField(null=True)  # type: ignore[assignment]

    class Meta:
        table = "recording_session"


class Invitation(Model):
    """A single-use, expiring link. Only the SHA-256 of the token is stored."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="invitations", on_delete=fields.RESTRICT
    )
    session_id: UUID
    token_hash = fields.CharField(max_length=64, unique=True)
    channel = fields.CharField(max_length=20, default="link")
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    opened_ip = fields.CharField(max_length=64, default="")
    opened_user_agent = fields.CharField(max_length=300, default="")

    class Meta:
        table = "invitation"


class ConsentKind(StrEnum):
    RECORDING = "recording"
    PERSONAL_INFORMATION = "personal_information"


class Consent(Model):
    """The answer of the customer to one consent text, with its exact version hash (R-10)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="consents", on_delete=fields.RESTRICT
    )
    kind = fields.CharEnumField(ConsentKind, max_length=24)
    text_version = fields.CharField(max_length=32)
    text_hash = fields.CharField(max_length=64)
    agreed = fields.BooleanField()
    at = fields.DatetimeField()
    ip = fields.CharField(max_length=64)
    user_agent = fields.CharField(max_length=300)

    class Meta:
        table = "consent"


class SessionEvent(Model):
    """One entry of the timeline of a session. Every transition appends one."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="events", on_delete=fields.RESTRICT
    )
    seq = fields.IntField()
    type = fields.CharField(max_length=40)
    from_state = fields.CharField(max_length=20, default="")
    to_state = fields.CharField(max_length=20, default="")
    actor_kind = fields.CharField(max_length=16)
    actor_id = fields.CharField(max_length=64, default="")
    ip = fields.CharField(max_length=64, default="")
    data: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    at = fields.DatetimeField()

    class Meta:
        table = "session_event"
        unique_together = (("session", "seq"),)


class AnswerValue(StrEnum):
    AFFIRMATIVE = "affirmative"
    NEGATIVE = "negative"
    UNCLEAR = "unclear"


class Acknowledgement(Model):
    """The answer of the customer to a script step, with its offset in the recording (R-24)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="acknowledgements", on_delete=fields.RESTRICT
    )
    step_id = fields.CharField(max_length=64)
    step_index = fields.IntField()
    answer_kind = fields.CharField(max_length=24)
    answer = fields.CharEnumField(AnswerValue, max_length=16)
    text = fields.CharField(max_length=500, default="")
    at = fields.DatetimeField()
    offset_ms = fields.BigIntField()
    client_event_id = fields.CharField(max_length=64)
    # A spoken answer: what was heard, the verdict's confidence and engine, and where
    # the answer lies on the recording clock: {"transcript", "verdict", "confidence",
    # "start_ms", "end_ms", "engine", ...}; null for buttons and writing.
    speech: dict[str, Any] | None = fields.JSONField(null=True)  # type: ignore[assignment]

    class Meta:
        table = "acknowledgement"
        unique_together = (("session", "client_event_id"),)


class IdentityCheck(Model):
    """One identity attempt: OCR, face match and liveness results with their engines (R-12)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="identity_checks", on_delete=fields.RESTRICT
    )
    attempt = fields.IntField()
    passed = fields.BooleanField()
    ocr: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    face: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    liveness: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    reasons: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    at = fields.DatetimeField()

    class Meta:
        table = "identity_check"
        unique_together = (("session", "attempt"),)


class IdentityUpload(Model):
    """An uploaded ID-card side or liveness clip, stored encrypted (R-12, R-52)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="identity_uploads", on_delete=fields.RESTRICT
    )
    session_id: UUID
    attempt = fields.IntField()
    kind = fields.CharField(max_length=16)  # id_front, id_back, liveness
    path = fields.CharField(max_length=300)
    sha256 = fields.CharField(max_length=64)
    size_bytes = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "identity_upload"


class Signature(Model):
    """The hand-copied risk sentence and the handwritten signature (R-25)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="signatures", on_delete=fields.RESTRICT
    )
    risk_sentence = fields.TextField()
    image_path = fields.CharField(max_length=300)
    image_sha256 = fields.CharField(max_length=64)
    # The strokes the page recorded (JSON, stored next to the image and sealed with it), what
    # the recogniser read in the hand-copy and its character error rate.
    strokes_path = fields.CharField(max_length=300, default="")
    strokes_sha256 = fields.CharField(max_length=64, default="")
    recognised_text = fields.TextField(default="")
    cer = fields.FloatField(null=True)
    engine = fields.CharField(max_length=120, default="")
    at = fields.DatetimeField()
    offset_ms = fields.BigIntField()

    class Meta:
        table = "signature"


class Recording(Model):
    """One recorded file (a segment of one track kind), immutable once written (R-30, R-31)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="recordings", on_delete=fields.RESTRICT
    )
    kind = fields.CharField(max_length=24)
    segment = fields.IntField()
    path = fields.CharField(max_length=300)
    sha256 = fields.CharField(max_length=64)
    size_bytes = fields.BigIntField()
    duration_ms = fields.BigIntField(default=0)
    started_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "recording"
        unique_together = (("session", "kind", "segment"),)


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    REJECT = "reject"


class QaReview(Model):
    """The verdict of a QA inspector on a sealed session (R-40)."""

    id = fields.IntField(primary_key=True)
    session: fields.ForeignKeyRelation[RecordingSession] = fields.ForeignKeyField(
        "models.RecordingSession", related_name="qa_reviews", on_delete=fields.RESTRICT
    )
    inspector_id: int
    inspector: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.User", related_name="qa_reviews", on_delete=fields.RESTRICT
    )
    verdict = fields.CharEnumField(Verdict, max_length=8)
    comments = fields.TextField(default="")
    findings: list[dict[str, str]] = fields.JSONField(default=list)  # type: ignore[assignment]
    at = fields.DatetimeField()

    class Meta:
        table = "qa_review"
