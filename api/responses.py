"""Response bodies of the JSON API, as pydantic models: the OpenAPI document's response schemas.

The handlers build their JSON as before (api/views.py and the route modules); these models say
what that JSON is. In the test profile every response is validated against its model (strict,
no member left undeclared: api/registry.py), so the document cannot drift from the code
unnoticed. Members that carry a domain document of their own (a script step, a manifest, an
event's data) are declared as objects.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Json = dict[str, Any]


class Resp(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- small and shared --------------------------------------------------------------------------


class Ok(Resp):
    """Done."""

    ok: bool


class Health(Resp):
    """The service is up."""

    status: Literal["ok"]


class Created(Resp):
    """Created: its id."""

    id: int


class Step(Resp):
    """A script step as pinned in a session (its text rendered, its speech when rendered)."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str | None = None
    speaker: str | None = None
    answer: str | None = None
    text: str | None = None


class Spoken(Resp):
    attempts: int
    heard: str
    verdict: str
    buttons: bool


# -- people ------------------------------------------------------------------------------------


class UserView(Resp):
    """A staff user."""

    id: int
    username: str
    display_name: str
    role: str
    branch_id: int | None
    active: bool
    permissions: list[str]


class UserList(Resp):
    """Users of the caller's institution."""

    items: list[UserView]


class LoginUser(Resp):
    id: int
    username: str
    display_name: str
    role: str
    permissions: list[str]


class LoginResult(Resp):
    """A staff bearer token."""

    token: str
    expires_in: int
    user: LoginUser


class Me(Resp):
    """The logged-in user."""

    id: int
    username: str
    display_name: str
    role: str
    institution_id: int
    branch_id: int | None
    agent_id: int | None
    permissions: list[str]


# -- audit -------------------------------------------------------------------------------------


class AuditEntryView(Resp):
    id: int
    at: datetime
    actor_kind: str
    actor_id: str
    actor: str
    action: str
    object_type: str
    object_id: str
    outcome: str
    ip: str
    details: Json
    hash: str


class AuditPage(Resp):
    """Audit entries matching the filters, oldest first."""

    total: int
    items: list[AuditEntryView]


class ChainView(Resp):
    chain: str
    ok: bool
    checked: int
    first_broken_id: int | None
    reason: str
    details: Json


class AuditVerification(Resp):
    """The audit log's hash chains verified (R-51)."""

    ok: bool
    checked: int
    first_broken_id: int | None
    reason: str
    details: Json
    chains: list[ChainView]


# -- products, orders, sessions ----------------------------------------------------------------


class ExtraValue(Resp):
    name: str
    label: str
    description: str


class ProductView(Resp):
    id: int
    code: str
    name: str
    type: str
    term_years: int | None
    grade: int
    channel: str
    cooling_off_days: int
    script_version: int | None
    needs_sum_insured: bool
    extra_values: list[ExtraValue]


class ProductList(Resp):
    """Active products."""

    items: list[ProductView]


class CustomerView(Resp):
    name: str
    id_number: str
    phone: str | None
    masked: bool = Field(description="true when personal data is masked for the caller's role")


class ProductRef(Resp):
    code: str
    name: str
    type: str
    term_years: int | None


class OrderView(Resp):
    """An order (application) with its customer, masked unless the role may see it (R-52)."""

    id: int
    application_no: str
    product: ProductRef
    premium: str = Field(pattern=r"^[0-9]+\.[0-9]{2}$")
    payment_years: int
    payment_mode: str
    sum_insured: str | None
    customer: CustomerView
    created_at: datetime | None


class SessionSummary(Resp):
    """A recording session: its state, its current step and the call's progress."""

    id: str
    state: str
    state_label: str
    paused: bool
    pause_reason: str | None
    current_step: Json | None
    step_count: int
    steps_done: int
    identity_attempts: int
    order_id: int
    script_hash: str | None
    customer_age: int | None
    created_at: datetime | None
    consented_at: datetime | None
    recording_started_at: datetime | None
    completed_at: datetime | None
    sealed_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    answer_open: bool
    spoken: Spoken | None
    call_parties: Json
    speaking: bool


class SessionView(SessionSummary):
    """A recording session with its order, its pinned steps and (once sealed) its manifest."""

    order: OrderView
    steps: list[Json]
    manifest: Json | None


class SessionPage(Resp):
    """Sessions visible to the caller, newest first."""

    total: int
    items: list[SessionSummary]


class EventView(Resp):
    seq: int
    type: str
    from_state: str | None
    to_state: str | None
    actor_kind: str
    at: datetime
    data: Json


class AckView(Resp):
    step_id: str
    step_index: int
    answer: str
    answer_kind: str
    text: str
    at: datetime
    offset_ms: int


class IdentityCheckView(Resp):
    attempt: int
    passed: bool
    reasons: list[str]
    at: datetime
    engines: dict[str, str]


class Timeline(Resp):
    """The session's timeline, acknowledgements and identity checks."""

    events: list[EventView]
    acknowledgements: list[AckView]
    identity_checks: list[IdentityCheckView]


class InvitationIssued(Resp):
    """A single-use invitation link."""

    token: str
    url: str
    expires_at: datetime
    channel: str


class PremisesView(Resp):
    id: int
    name: str
    address: str


class Failure(Resp):
    code: str
    message: str


class PrecheckResult(Resp):
    """Whether the agent may record here and now (R-03), and why not."""

    passed: bool
    ip: str
    failures: list[Failure]
    premises: PremisesView | None
    licence_expires: date
    training_expires: date


# -- customer ----------------------------------------------------------------------------------


class CustomerSessionView(Resp):
    """What the customer's page sees of its own session."""

    id: str
    state: str
    state_label: str
    paused: bool
    liveness_check: bool  # a spot check of liveness holds the script (issue 15)
    signed: bool
    speaking: bool
    answer_open: bool
    spoken: Spoken | None
    current_step: Json | None
    step_count: int
    steps_done: int


class CustomerToken(Resp):
    """A customer bearer token for the invited session."""

    customer_token: str
    expires_in: int
    session: CustomerSessionView


class ChannelCustomerToken(CustomerToken):
    """A customer bearer token; `reentry` when this person opened the link before."""

    reentry: bool


class ConsentText(Resp):
    kind: str
    version: str
    title: str
    text: str
    sha256: str


class ConsentTexts(Resp):
    """The consent texts the customer agrees to, with the hashes an answer names."""

    texts: list[ConsentText]
    opening_prompt: str
    risk_sentence: str


class AckRecord(Resp):
    id: int
    step_id: str
    answer: str
    at: datetime
    offset_ms: int


class AckResult(Resp):
    """The stored answer (`duplicate` when this client event was stored before: 200)."""

    acknowledgement: AckRecord
    duplicate: bool
    session: CustomerSessionView


class SignatureView(Resp):
    """What the server read from the customer's writing."""

    id: int
    image_sha256: str
    strokes_sha256: str
    recognised_text: str
    cer: float | None
    at: datetime


class PageShown(Resp):
    page: int
    shown_ms: int
    enough: bool


class DocumentProgress(Resp):
    """How long each page of the current document was shown, by the server's clock (R-25)."""

    pages: list[PageShown]
    min_page_ms: int | None = None
    complete: bool


class ChallengeView(Resp):
    code: str
    prompt: str


class LastCheck(Resp):
    attempt: int
    passed: bool
    reasons: list[str]


class IdentityPlan(Resp):
    """The coming identity attempt (R-12)."""

    attempt: int
    attempts_left: int
    uploads: list[str]
    challenges: list[ChallengeView]
    time_limit_s: float
    pending: bool
    last_check: LastCheck | None


class UploadView(Resp):
    """The stored upload."""

    kind: str
    attempt: int
    size_bytes: int


class SubmitView(Resp):
    """The attempt is being checked."""

    attempt: int
    status: Literal["processing"]


class SdpAnswer(Resp):
    """The server's WebRTC answer."""

    sdp: str
    type: Literal["answer"]


# -- engines and recordings --------------------------------------------------------------------


class IdentityOutcome(Resp):
    """The identity attempt as recorded, and the session's state after it."""

    attempt: int
    passed: bool
    state: str
    attempts_left: int


class RecordingView(Resp):
    id: int
    kind: str
    segment: int
    sha256: str
    size_bytes: int
    duration_ms: int
    started_at: datetime
    ended_at: datetime | None


class RecordingList(Resp):
    """The recorded segments."""

    items: list[RecordingView]


class Verification(Resp):
    """The sealed manifest checked against the stored evidence (R-31)."""

    ok: bool
    problems: list[str]
    status: Literal["intact", "incomplete", "altered", "not_sealed"]
    state: str
    sealed: bool
    complete: bool | None
    altered: list[str]
    incomplete: list[str]
    notes: list[str]


# -- archive, insurer --------------------------------------------------------------------------


class DisputeView(Resp):
    id: int
    reference: str
    opened_on: date
    closed_on: date | None
    note: str


class PolicyView(Resp):
    state: str
    policy_no: str
    effective_on: date | None
    ended_on: date | None


class RetentionView(Resp):
    """When a session may be deleted, and why (R-42)."""

    session_id: str
    retain_until: datetime | date | None
    on_hold: bool
    purged_at: datetime | None
    basis: Json
    policy: PolicyView | None
    disputes: list[DisputeView]


class DisputeOpened(Resp):
    """The dispute: its sessions are on legal hold."""

    id: int
    reference: str


class DisputeClosed(Resp):
    """The dispute is closed."""

    id: int
    closed_on: date


class TombstoneView(Resp):
    session_id: str
    application_no: str
    deleted_at: datetime
    files: Any
    rows: Any
    retention: Any
    audit_hash: str
    manifest_chain: str | None
    files_pending: Any


class TombstoneList(Resp):
    """Deleted sessions and the hashes kept."""

    items: list[TombstoneView]


class InstitutionRef(Resp):
    code: str
    name: str


class SealKeyView(Resp):
    key_id: str
    algorithm: str
    public_key: str
    status: str
    created_at: datetime
    retired_at: datetime | None


class Keyring(Resp):
    """The institution's public seal keys (R-31)."""

    institution: InstitutionRef
    algorithm: str
    keys: list[SealKeyView]


class ApplicationSession(Resp):
    session_id: str
    state: str
    state_label: str
    created_at: datetime | None
    completed_at: datetime | None
    sealed_at: datetime | None
    manifest_chain: str | None
    rectified_by: str | None


class ApplicationStatus(Resp):
    """Recording and QA status of an application (R-43)."""

    application_no: str
    recording_complete: bool
    qa_complete: bool
    qa_result: Literal["pass", "reject"] | None
    qa_pass_basis: str | None
    qa_pass_unrecognised: bool
    underwriting_may_proceed: bool
    rectification: str | None
    state: str | None
    state_label: str
    policy_state: str | None
    sessions: list[ApplicationSession]


class PolicyStatusResult(Resp):
    """The policy status as recorded."""

    application_no: str
    state: str


class InsurerDisputeOpened(Resp):
    """The dispute: its sessions are on legal hold."""

    reference: str
    opened_on: date


class InsurerDisputeClosed(Resp):
    """The dispute is closed."""

    reference: str
    closed_on: date


# -- statistics --------------------------------------------------------------------------------


class Figures(Resp):
    sessions: int
    outcomes: dict[str, int]
    identity_pass_rate: float | None
    identity_attempt_pass_rate: float | None
    qa_pass_rate: float | None
    median_call_ms: float | None
    median_session_ms: float | None


class StatsRow(Figures):
    key: str
    label: str


class Stats(Resp):
    """Counts and rates per group (R-55)."""

    model_config = ConfigDict(populate_by_name=True)

    group_by: str
    period: str
    from_: date | None = Field(alias="from")
    to: date | None
    items: list[StatsRow]
    total: Figures
    scope: Literal["branch", "institution"]


# -- scripts -----------------------------------------------------------------------------------


class ScriptVersionView(Resp):
    """A script version."""

    id: int
    product_id: int
    version: int
    status: str
    content_hash: str
    title: str
    created_by: int | None
    submitted_by: int | None
    approved_by: int | None
    created_at: datetime
    published_at: datetime | None
    lint: Any
    prerender_status: str | None


class ScriptVersionFull(ScriptVersionView):
    """A script version with its YAML and its rendered speech."""

    yaml: str
    audio: Any


class ScriptList(Resp):
    """Script versions."""

    items: list[ScriptVersionView]


class LintFindingView(Resp):
    code: str
    severity: str
    message: str
    step_id: str | None
    line: int | None


class LintResult(Resp):
    """The lint's findings (R-21, R-22)."""

    publishable: bool
    findings: list[LintFindingView]


class PrerenderView(Resp):
    """Progress of the speech pre-rendering job."""

    status: str
    progress: Json
    error: str | None


class ScriptDiff(Resp):
    """What changed between two versions."""

    old: int
    new: int
    summary: str
    added_steps: list[str]
    removed_steps: list[str]
    changed_steps: list[Any]
    reordered: bool
    metadata_changed: bool
    unified: str


# -- QA ----------------------------------------------------------------------------------------


class TaskView(Resp):
    session: SessionSummary
    task_id: int
    status: str
    sampled: bool
    sample_share: float | None
    sample_reasons: list[str]
    assignee_id: int | None
    deadline: datetime
    hours_left: float
    alert_level: str | int | None
    verdict: str | None
    decided_at: datetime | None


class TaskList(Resp):
    """The QA queue by deadline (R-40)."""

    items: list[TaskView]


class Assigned(Resp):
    """The task and its inspector."""

    task_id: int
    assignee_id: int
    status: str


class DismissalView(Resp):
    """A dismissal of a finding (R-40)."""

    id: int
    finding_id: int
    status: str
    reason_code: str
    reason: str
    note: str
    duplicate_of: int | None
    four_eyes: bool
    proposed_by_id: int | None
    proposed_at: datetime
    reviewed_by_id: int | None
    reviewed_at: datetime | None
    review_note: str


class SessionDismissal(DismissalView):
    session_id: str


class DismissalList(Resp):
    """Dismissals of the institution's findings."""

    items: list[SessionDismissal]


class FindingView(Resp):
    id: int
    code: str
    severity: str
    requirement: str
    at_ms: int | None
    step_id: str | None
    message: str
    details: Json
    source: str
    decision: str | None
    decision_note: str
    dismissal_reason: str
    standing: str
    standing_label: str
    dismissals: list[DismissalView]


class ReportHead(Resp):
    id: int
    passed: bool
    counts: Json
    recorded_ms: int
    elapsed_ms: int
    engines: Json
    finished_at: datetime | None


class ReportTask(Resp):
    status: str
    sampled: bool
    sample_reasons: list[str]
    deadline: datetime
    assignee_id: int | None
    alert_level: str | int | None


class QaReport(Resp):
    """The automated checks' report with its findings (R-40)."""

    report: ReportHead
    findings: list[FindingView]
    task: ReportTask | None


class RectificationView(Resp):
    id: int
    order_id: int
    status: str
    original_session_id: str
    new_session_id: str | None
    reasons: list[Any]
    deadline: datetime
    created_at: datetime


class RectificationList(Resp):
    """Rectifications."""

    items: list[RectificationView]


class VerdictResult(Resp):
    """The verdict as recorded (a rejection opens a rectification)."""

    verdict: str
    review_id: int
    counts: Json
    rectification: RectificationView | None


class ReasonView(Resp):
    code: str
    label: str
    note_hint: str
    finding_codes: list[str]


class ReasonList(Resp):
    """The reasons a finding may be dismissed for."""

    items: list[ReasonView]


class FindingKind(Resp):
    code: str
    severity: str
    requirement: str
    title: str
    dismissal_reasons: list[str]


class FindingKindList(Resp):
    """The catalogue of automated findings."""

    items: list[FindingKind]


class ReplayView(Resp):
    """The replay page's data: steps, marks, segments (with ticket URLs), findings, chat and
    the playback copy (R-41)."""

    session: Json
    steps: list[Json]
    marks: list[Json]
    recordings: dict[str, list[Json]]
    findings: list[Json]
    conversation: list[Json]
    playback: Json | None


class TranscriptLine(Resp):
    party: str
    party_label: str
    start_ms: int
    end_ms: int
    clock: str
    text: str


class TranscriptView(Resp):
    """The after-call transcript (R-41), or why there is none (yet)."""

    status: str
    label: str
    engine: str = ""
    engine_version: str = ""
    made_at: str | None = None
    lines: list[TranscriptLine]


# -- channels (bot/) ---------------------------------------------------------------------------


class Accepted(Resp):
    """The accepted subscribe-message templates."""

    accepted: list[str]


class OutboxView(Resp):
    """An outbound message and its delivery."""

    id: int
    kind: str
    status: str
    attempts: int
    last_error: str
    created_at: datetime
    sent_at: datetime | None


class ChannelInvitationView(Resp):
    """The invitation sent through a channel, its delivery and the fallback texts to copy."""

    model_config = ConfigDict(extra="allow")

    id: int
    channel: str
    mode: str | None
    delivery_status: str
    expires_at: datetime
    expired: bool
    revoked: bool
    bound: bool


class InvitationChannel(Resp):
    channel: str
    label: str
    available: bool
    reason: str


class InvitationChannels(Resp):
    """What the console offers in 发送邀请: each channel, whether it can reach the customer."""

    channels: list[InvitationChannel]
    phone_masked: str | None


class MessageView(Resp):
    id: int
    at: datetime
    direction: str
    via: str
    type: str
    text: str
    intent: str
    data: Json
    user: str


class InboxMessage(MessageView):
    session_id: str


class Inbox(Resp):
    """Customers' messages to the agent."""

    items: list[InboxMessage]


class Conversation(Resp):
    """The customer's chat about a session."""

    session_id: str
    messages: list[MessageView]


class QrCode(Resp):
    url: str


class BindingCode(Resp):
    """A one-time code that binds the agent's WeChat."""

    code: str
    expires_in: int
    qrcode: QrCode | None
    instructions: str


class Unbound(Resp):
    """How many bindings were removed."""

    unbound: int


class Url(Resp):
    """A URL to open."""

    url: str


class BankInvitation(Resp):
    """The bank app's signed deep link for the order's customer."""

    model_config = ConfigDict(extra="allow")

    application_no: str
    session_id: str
    invitation_id: int
    deep_link: str
    h5_url: str
    expires_at: datetime


class DeepLink(Resp):
    """A signed single-use deep link for the bank app."""

    deep_link: str
    h5_url: str
    expires_at: datetime


class BankStatus(Resp):
    """The recording status of an application for the bank app."""

    application_no: str
    session_id: str | None
    state: str | None = None
    state_label: str | None = None
    recording_complete: bool
    qa_complete: bool
    qa_passed: bool | None = None
    end_reason: str | None = None
    updated_at: datetime | None = None


# Messages of the /live WebSocket (documented under the operation's x-websocket).


class LiveHello(Resp):
    """The first message the client sends: tokens never go into URLs."""

    role: Literal["customer", "staff"]
    token: str
    session_id: str | None = Field(default=None, description="staff only")


class LiveMessage(Resp):
    """What the server sends: a snapshot, an event followed by a snapshot, or an error (then
    the socket closes with code 4401)."""

    type: Literal["snapshot", "event", "error"]
    session: Json | None = None
    event: Json | None = None
    detail: str | None = None
