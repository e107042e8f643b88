"""Request bodies of the JSON API (pydantic): wrong types and missing fields become 422s."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from models.people import Role
from models.sessions import AnswerValue, ConsentKind, Verdict

# Database ids are 32-bit (Tortoise's IntField); a larger one names nothing.
DbId = Annotated[int, Field(ge=1, le=2**31 - 1)]
# BigIntField columns (sizes, offsets): PostgreSQL's bigint.
BigInt = Annotated[int, Field(ge=0, le=2**63 - 1)]


def _nul_at(value: Any) -> str | None:
    """The path of the first string holding a NUL (PostgreSQL stores none), walked without
    recursion (the parser allows 200 levels of nesting)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, BaseModel):
            item = dict(item)
        if isinstance(item, str):
            if "\x00" in item:
                return path or "(body)"
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{path}.{key!r}".lstrip(".")
                stack.append((f"{path}.{key}".lstrip("."), sub))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}".lstrip("."), sub) for i, sub in enumerate(item))
    return None


class Body(BaseModel):
    """A request body. Parsed by `api.http.parse_json` in strict JSON mode: types as the
    OpenAPI document states them (no boolean for a number, no number for a date)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _no_nul(self) -> Body:
        # After validation: a "before" validator would turn strict JSON mode into Python mode
        # (where a date must be a date object, not its ISO string).
        where = _nul_at(self)
        if where is not None:
            raise ValueError(f"text must not contain NUL characters ({where})")
        return self


class LoginBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class CustomerBody(Body):
    name: str = Field(min_length=1, max_length=50)
    id_number: str = Field(pattern=r"^[0-9]{17}[0-9Xx]$")
    phone: str | None = Field(default=None, pattern=r"^1[3-9][0-9]{9}$")


class OrderBody(Body):
    application_no: str = Field(pattern=r"^[A-Za-z0-9\-]{4,64}$")
    product_code: str = Field(min_length=1, max_length=32)
    customer: CustomerBody
    premium: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    payment_years: int = Field(ge=1, le=100)
    payment_mode: Literal["年交", "半年交", "季交", "月交", "趸交"] = "年交"
    sum_insured: Decimal | None = Field(default=None, gt=0, max_digits=14, decimal_places=2)
    insured_name: str | None = Field(default=None, min_length=1, max_length=50,
                                     description="only when the insured is not the policyholder")
    extra_values: dict[str, str | int | Decimal] = Field(
        default_factory=dict, max_length=30,
        description="product-specific script variables, e.g. annuity_start_age")


class LocationBody(Body):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    accuracy_m: float = Field(default=0, ge=0, le=100_000)


class CreateSessionBody(Body):
    order_id: DbId
    location: LocationBody | None = None


class LocationOnlyBody(Body):
    location: LocationBody | None = None


class InvitationBody(Body):
    channel: Literal["link", "wechat", "sms", "bank_app"] = "link"


class OpenInvitationBody(Body):
    token: str = Field(min_length=1, max_length=200)


class ConsentAnswerBody(Body):
    kind: ConsentKind
    text_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    agreed: StrictBool


class ConsentBody(Body):
    answers: list[ConsentAnswerBody] = Field(min_length=1, max_length=4)


class ComponentBody(Body):
    passed: StrictBool
    engine: str = Field(default="", max_length=100)
    score: float | None = None
    reason: str = Field(default="", max_length=200)
    details: dict[str, Any] = Field(default_factory=dict)


class IdentityBody(Body):
    ocr: ComponentBody
    face: ComponentBody
    liveness: ComponentBody


class AckBody(Body):
    step_id: str = Field(min_length=1, max_length=64)
    answer: AnswerValue
    answer_kind: Literal["button", "speech", "handwriting", "document"] = "button"
    text: str = Field(default="", max_length=500)
    client_event_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{8,64}$")


class StepBody(Body):
    step_id: str = Field(min_length=1, max_length=64)


class NoteBody(Body):
    note: str = Field(min_length=1, max_length=500)


class ReasonBody(Body):
    reason: str = Field(min_length=1, max_length=200)


class DocumentViewBody(Body):
    """R-25: the page of the current step's document now on screen (0: none any more)."""

    step_id: str = Field(min_length=1, max_length=64)
    page: int = Field(ge=0, le=200)


class SignBody(Body):
    """R-25: what the customer wrote, as strokes (the grid of the hand-copy and/or the
    signature pad; shape checked in media.handwriting.ink) and the image the page drew. Never
    the text: the server reads the handwriting itself."""

    copy_strokes: dict[str, Any] | None = None
    signature_strokes: dict[str, Any] | None = None
    image_base64: str = Field(min_length=8, max_length=700_000)


class FindingBody(Body):
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(min_length=1, max_length=500)


class ReviewBody(Body):
    verdict: Verdict
    comments: str = Field(default="", max_length=2000)
    findings: list[FindingBody] = Field(default_factory=list, max_length=100)


class RecordingBody(Body):
    kind: Literal["customer_av", "agent_av", "tts", "screen"]
    segment: int = Field(ge=1, le=10_000)
    path: str = Field(pattern=r"^[A-Za-z0-9_\-./]{1,300}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: BigInt
    duration_ms: BigInt
    started_at: datetime
    ended_at: datetime | None = None


class AgentProfileBody(Body):
    licence_no: str = Field(min_length=1, max_length=64)
    licence_expires: date
    training_expires: date
    grade: int = Field(default=1, ge=1, le=9)


class CreateUserBody(Body):
    username: str = Field(pattern=r"^[a-z0-9_.\-]{3,64}$")
    password: str = Field(min_length=10, max_length=200)
    display_name: str = Field(min_length=1, max_length=100)
    role: Role
    branch_id: DbId | None = None
    agent: AgentProfileBody | None = None
