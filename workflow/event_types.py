"""Every kind of timeline event and the shape of its data (R-13, R-23, R-30): the timeline is
what is sealed, so what goes on it is typed.

`EventType` names each event written anywhere (the values are the strings stored in
`session_event.type` and read by the pages, QA and the evidence pack); `PAYLOADS` holds the
pydantic model its `data` must fit. `Unit.event` (workflow/core.py) checks the data before the
row is written and refuses what does not fit: an unknown key, a missing one or a wrong type is a
programming error, never a silently sealed event. The stored JSON is the writer's own dict, as
before; the models only check it (strict: no coercion, so what is checked is what is stored).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class EventType(StrEnum):
    # The session's life (workflow/sessions.py, invitations.py, consent.py, identity.py).
    CREATED = "created"
    INVITED = "invited"
    OPENED = "opened"
    CUSTOMER_REENTERED = "customer_reentered"
    RESUME_CODE_ISSUED = "resume_code_issued"
    CONSENTED = "consented"
    DECLINED = "declined"
    IDENTITY_UPLOAD = "identity_upload"
    IDENTITY_VERIFIED = "identity_verified"
    IDENTITY_FAILED = "identity_failed"
    IDENTITY_ATTEMPT_FAILED = "identity_attempt_failed"
    SPEECH_PREPARED = "speech_prepared"
    CUSTOMER_DEVICE_READY = "customer_device_ready"
    CUSTOMER_DEVICE_DENIED = "customer_device_denied"
    EXPIRED = "expired"
    # The call and the script (workflow/call.py, customer_controls.py, documents.py, signing.py).
    CALL_STARTED = "call_started"
    LIVE_LIVENESS_STARTED = "live_liveness_started"
    LIVE_LIVENESS_PASSED = "live_liveness_passed"
    LIVE_LIVENESS_FAILED = "live_liveness_failed"
    LIVE_LIVENESS_SPOT_DUE = "live_liveness_spot_due"
    SCRIPT_STARTED = "script_started"
    STEP_STARTED = "step_started"
    ACKNOWLEDGED = "acknowledged"
    SCRIPT_PAUSED = "script_paused"
    SCRIPT_RESUMED = "script_resumed"
    SCRIPT_FINISHED = "script_finished"
    STEP_REPLAY_REQUESTED = "step_replay_requested"
    DOCUMENT_PAGE_OPENED = "document_page_opened"
    DOCUMENT_PAGE_VIEWED = "document_page_viewed"
    SIGNED = "signed"
    INTERRUPTED = "interrupted"
    CALL_RESUMED = "call_resumed"
    COMPLETED = "completed"
    ABORTED = "aborted"
    NETWORK_POOR = "network_poor"
    NETWORK_RECOVERED = "network_recovered"
    # What the call hub reports (workflow/media_events.py, call_followers.py).
    PARTY_CONNECTED = "party_connected"
    PARTY_LOST = "party_lost"
    CALL_NODE_LOST = "call_node_lost"
    RECORDING_SEGMENT = "recording_segment"
    SEGMENT_UNREADABLE = "segment_unreadable"
    TTS_STARTED = "tts_started"
    TTS_PLAYED = "tts_played"
    ANSWER_OPENED = "answer_opened"
    ANSWER_HEARD = "answer_heard"
    ANSWER_BUTTONS_OFFERED = "answer_buttons_offered"
    PRESENCE_STARTED = "presence_started"
    PRESENCE_UNAVAILABLE = "presence_unavailable"
    PRESENCE_MARK = "presence_mark"
    PRESENCE_ALERT = "presence_alert"
    PRESENCE_RESTORED = "presence_restored"
    # Sealing and QA (workflow/sealing.py, qa/verdicts.py, qa/queue.py).
    SEALED = "sealed"
    EVIDENCE_INCOMPLETE = "evidence_incomplete"
    SUBMITTED_TO_QA = "submitted_to_qa"
    QA_PASS = "qa_pass"  # noqa: S105 - an event type, not a password
    QA_REJECT = "qa_reject"
    QA_AUTO_PASSED = "qa_auto_passed"


class Payload(BaseModel):
    """An event's data: exactly these keys (extra ones refused), values of these types."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Empty(Payload):
    pass


class Created(Payload):
    premises_id: int
    script_version: int
    script_hash: str


class Invited(Payload):
    channel: str
    revoked_previous: int
    revoked_opened: int
    expires_at: str


class Opened(Payload):
    invitation_id: int


class CustomerReentered(Payload):
    via: str
    state: str
    invitation_id: int | None = None  # through a resume code: the invitation it re-opened


class ResumeCodeIssued(Payload):
    expires_at: str
    ttl_seconds: int


class ConsentAnswers(Payload):
    """Each consent text's answer by its kind (models.sessions.ConsentKind)."""

    recording: bool | None = None
    personal_information: bool | None = None


class IdentityUpload(Payload):
    kind: str
    attempt: int
    stored_sha256: str
    # A card photo's recapture measures and warnings (media.identity.idcard.CardPhotoCheck).
    checks: dict[str, float] | None = None
    warnings: list[str] | None = None


class FaceMatch(Payload):
    passed: bool
    score: float | None
    threshold: float | None
    metric: str | None
    engine: str


class IdentityOutcome(Payload):
    attempt: int
    passed: bool
    reasons: list[str]
    face: FaceMatch


class SpeechPrepared(Payload):
    steps: int
    engines: list[str]


class CustomerDevices(Payload):
    camera: str
    microphone: str
    stage: str
    error: str


class Reason(Payload):
    reason: str


class CallStarted(Payload):
    premises_id: int


class LiveLivenessStarted(Payload):
    attempt: int
    plan: list[str]
    at_ms: int | None
    spot: int | None = None  # the spot check during the script it belongs to (None: before it)


class LiveLivenessSpotDue(Payload):
    check: int  # 1, 2, ...: the spot checks of the session in order
    step_id: str  # the step that starts once the check passed
    index: int
    at_ms: int | None


class LiveLivenessOutcome(Payload):
    attempt: int
    passed: bool
    challenges: list[dict[str, Any]]  # ChallengeRun.summary() of each challenge kept
    counted: bool
    attempts_left: int
    final: bool
    reason_code: str | None
    reason: str | None
    face_match: dict[str, Any]  # workflow.live_liveness.face_match_record
    spot: int | None = None


class ScriptStarted(Payload):
    step_id: str
    index: int
    live_liveness_required: bool


class StepAt(Payload):
    step_id: str
    index: int


class Answered(Payload):
    step_id: str
    index: int
    answer: str
    answer_kind: str
    offset_ms: int
    transcript: str | None = None  # a spoken answer's words


class ScriptResumed(Payload):
    step_id: str
    index: int
    note: str


class ScriptFinished(Payload):
    last_step_id: str


class ReplayRequested(Payload):
    step_id: str
    index: int
    count: int


class DocumentPageOpened(Payload):
    step_id: str
    document: str
    page: int
    page_sha256: str


class DocumentPageViewed(DocumentPageOpened):
    shown_ms: int


class Signed(Payload):
    image_sha256: str
    strokes_sha256: str
    offset_ms: int | None
    step_id: str | None
    copied: bool
    recognised_text: str
    cer: float | None
    engine: str


class Interrupted(Payload):
    reason: str
    step_index: int


class CallResumed(Payload):
    gap_ms: int
    resumed_into: str
    replay_step_id: str | None = None  # back into the script: the step read again
    index: int | None = None


class NetworkPoor(Payload):
    reasons: list[str]
    measures: dict[str, float | int | str]


class NetworkRecovered(Payload):
    measures: dict[str, float | int | str]


class PartyConnected(Payload):
    role: str
    recording: bool


class PartyLost(Payload):
    role: str
    reason: str


class CallNodeLost(Payload):
    reason: str
    parties: list[str]


class RecordingSegment(Payload):
    kind: str
    segment: int
    sha256: str


class SegmentUnreadable(Payload):
    path: str


class TtsStarted(Payload):
    step_id: str
    clip_id: str


class TtsPlayed(Payload):
    step_id: str
    clip_id: str
    played_ms: int
    duration_ms: int
    complete: bool


class AnswerOpened(Payload):
    step_id: str
    index: int
    by: Literal["speech_complete", "agent_voice"]
    clip_id: str | None = None  # by speech_complete
    voiced_ms: int | None = None  # by agent_voice
    needed_ms: int | None = None


class AnswerHeard(Payload):
    step_id: str
    verdict: str
    start_ms: int
    end_ms: int
    # What the recogniser reported (media.asr; absent when it said nothing of it).
    transcript: str | None = None
    confidence: float | None = None
    reason: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    seconds: float | None = None


class AnswerButtonsOffered(Payload):
    step_id: str
    reason: str


class PresenceStarted(Payload):
    attempt: int
    reference: str | None = None  # "liveness_clip" or "live_call"
    live_attempt: int | None = None


class PresenceUnavailable(Payload):
    reason: str
    detail: str | None = None


class PresenceMark(Payload):
    """media.identity.results.PresenceMark, as the presence writer dumps it."""

    type: str
    at_s: float
    message: str
    faces: int
    distance: float | None = None


class PresenceAlert(Payload):
    type: str
    message: str


class PresenceRestored(Payload):
    step_id: str | None


class Sealed(Payload):
    """Empty for a complete session; an ended-early one's seal says how it ended."""

    complete: bool | None = None
    end: str | None = None
    reason: str | None = None


class EvidenceIncomplete(Payload):
    problems: list[dict[str, str]]  # workflow.sealing.FileCheck.as_data


class QaDecided(Payload):
    review_id: int
    task_id: int
    # qa.dismissals.counts, plus the findings the inspector added.
    findings: int
    failing: int
    confirmed: int
    dismissed: int
    dismissed_four_eyes: int
    pending: int
    added: int


class QaAutoPassed(Payload):
    task_id: int
    report_id: int | None
    share: float
    counts: dict[str, int]


E = EventType
PAYLOADS: dict[EventType, type[Payload]] = {
    E.CREATED: Created, E.INVITED: Invited, E.OPENED: Opened,
    E.CUSTOMER_REENTERED: CustomerReentered, E.RESUME_CODE_ISSUED: ResumeCodeIssued,
    E.CONSENTED: ConsentAnswers, E.DECLINED: ConsentAnswers,
    E.IDENTITY_UPLOAD: IdentityUpload, E.IDENTITY_VERIFIED: IdentityOutcome,
    E.IDENTITY_FAILED: IdentityOutcome, E.IDENTITY_ATTEMPT_FAILED: IdentityOutcome,
    E.SPEECH_PREPARED: SpeechPrepared,
    E.CUSTOMER_DEVICE_READY: CustomerDevices, E.CUSTOMER_DEVICE_DENIED: CustomerDevices,
    E.EXPIRED: Reason,
    E.CALL_STARTED: CallStarted,
    E.LIVE_LIVENESS_STARTED: LiveLivenessStarted,
    E.LIVE_LIVENESS_PASSED: LiveLivenessOutcome, E.LIVE_LIVENESS_FAILED: LiveLivenessOutcome,
    E.LIVE_LIVENESS_SPOT_DUE: LiveLivenessSpotDue,
    E.SCRIPT_STARTED: ScriptStarted, E.STEP_STARTED: StepAt,
    E.ACKNOWLEDGED: Answered, E.SCRIPT_PAUSED: Answered,
    E.SCRIPT_RESUMED: ScriptResumed, E.SCRIPT_FINISHED: ScriptFinished,
    E.STEP_REPLAY_REQUESTED: ReplayRequested,
    E.DOCUMENT_PAGE_OPENED: DocumentPageOpened, E.DOCUMENT_PAGE_VIEWED: DocumentPageViewed,
    E.SIGNED: Signed, E.INTERRUPTED: Interrupted, E.CALL_RESUMED: CallResumed,
    E.COMPLETED: Empty, E.ABORTED: Reason,
    E.NETWORK_POOR: NetworkPoor, E.NETWORK_RECOVERED: NetworkRecovered,
    E.PARTY_CONNECTED: PartyConnected, E.PARTY_LOST: PartyLost, E.CALL_NODE_LOST: CallNodeLost,
    E.RECORDING_SEGMENT: RecordingSegment, E.SEGMENT_UNREADABLE: SegmentUnreadable,
    E.TTS_STARTED: TtsStarted, E.TTS_PLAYED: TtsPlayed,
    E.ANSWER_OPENED: AnswerOpened, E.ANSWER_HEARD: AnswerHeard,
    E.ANSWER_BUTTONS_OFFERED: AnswerButtonsOffered,
    E.PRESENCE_STARTED: PresenceStarted, E.PRESENCE_UNAVAILABLE: PresenceUnavailable,
    E.PRESENCE_MARK: PresenceMark, E.PRESENCE_ALERT: PresenceAlert,
    E.PRESENCE_RESTORED: PresenceRestored,
    E.SEALED: Sealed, E.EVIDENCE_INCOMPLETE: EvidenceIncomplete, E.SUBMITTED_TO_QA: Empty,
    E.QA_PASS: QaDecided, E.QA_REJECT: QaDecided, E.QA_AUTO_PASSED: QaAutoPassed,
}


class InvalidEvent(ValueError):
    """Event data that does not fit its type's model: a bug in the writer, never sealed."""


def check(type_: EventType, data: dict[str, Any]) -> None:
    """Raises `InvalidEvent` unless `data` fits the payload model of `type_`."""
    model = PAYLOADS.get(type_)
    if model is None:
        raise InvalidEvent(f"unknown event type {type_!r}")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"{type_} event data does not fit {model.__name__}: {exc}") from exc
