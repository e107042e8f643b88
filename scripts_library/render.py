"""Turn a script version into the concrete steps of one session (R-21, R-23, R-24).

Given the session's facts (customer age, product type, whether the policyholder is the insured)
and the order's values, `render` selects the steps whose conditions hold and fills every
`{variable}`. A missing value is an error that lists every missing name before the call starts:
the customer must never hear a blank where their premium should be.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict

from scripts_library import documents, placeholders
from scripts_library.canonical import content_hash
from scripts_library.model import (
    BUILTIN_VARIABLES,
    AnswerRequirement,
    Conditions,
    DocumentGenerator,
    DocumentRef,
    ProductType,
    ScriptDocument,
    Speaker,
    Step,
    StepKind,
    VariableType,
)

# The order values the licence card is drawn from (R-21's agent identity variables).
LICENCE_CARD_VALUES = ("agent_name", "agent_licence_no", "institution_full_name")


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What decides which steps apply in a session."""

    customer_age: int
    product_type: ProductType
    policyholder_is_insured: bool = True


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Input of `render`: the session's facts and the order's values.

    `product_type` defaults to the script's own; giving a different one is an error, since it
    means the order and the script belong to different products.
    """

    customer_age: int
    values: Mapping[str, object] = field(default_factory=dict)
    product_type: ProductType | None = None
    policyholder_is_insured: bool = True


class RenderedStep(BaseModel):
    """One concrete step of a session: every variable filled, ready to be spoken or shown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: StepKind
    title: str
    text: str
    speaker: Speaker
    answer: AnswerRequirement
    timeout_seconds: int
    copy_text: str | None = None
    # The document's title (for display and speech) and, when it has real pages, what the
    # session pins: {"title", "source", "source_sha256", "min_page_seconds",
    # "page_count", "pages": [{"sha256", "width", "height"}]}.
    document: str | None = None
    document_pages: dict[str, Any] | None = None
    max_cer: float | None = None


class StepAudio(BaseModel):
    """The prepared speech of a TTS step, as the session's speech job records it
    (workflow/script_speech.py `audio_facts`): what will be played, by content hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    opus_sha256: str | None = None
    engine: str
    voice: str
    cache_key: str
    duration_ms: int


class SessionStep(RenderedStep):
    """One step as a session stores it (`RecordingSession.steps`, issue 18): the rendered step
    plus the facts of its prepared speech. Keys unknown to this model are ignored on reading,
    so a step stored by an older version still reads; nothing is written back from it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    audio: StepAudio | None = None


class RenderedScript(BaseModel):
    """The steps of one session and the exact script version they came from (R-23)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    script_code: str
    script_version: int
    content_hash: str
    product_code: str
    customer_age: int
    steps: list[RenderedStep]


class RenderError(Exception):
    """The script cannot be rendered for this session; `message` is Chinese, for people."""

    code = "render_error"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class MissingValuesError(RenderError):
    """Values the applicable steps need are absent or blank; `missing` lists every name."""

    code = "missing_values"

    def __init__(self, missing: list[str], labels: Mapping[str, str]) -> None:
        self.missing = missing
        listed = "、".join(
            f"{name}（{labels[name]}）" if name in labels else name for name in missing
        )
        super().__init__(f"缺少以下变量的取值，无法生成话术：{listed}")


class InvalidValueError(RenderError):
    """A value cannot be formatted as its declared type (e.g. a premium that is not a number)."""

    code = "invalid_value"


def applies(conditions: Conditions, facts: SessionFacts) -> bool:
    """Whether a step with `conditions` is part of a session with `facts` (all must hold)."""
    if conditions.min_customer_age is not None and facts.customer_age < conditions.min_customer_age:
        return False
    if conditions.max_customer_age is not None and facts.customer_age > conditions.max_customer_age:
        return False
    if conditions.product_types is not None and facts.product_type not in conditions.product_types:
        return False
    return (
        conditions.policyholder_is_insured is None
        or facts.policyholder_is_insured == conditions.policyholder_is_insured
    )


def applicable_steps(document: ScriptDocument, facts: SessionFacts) -> list[Step]:
    """The document's steps that apply in a session with `facts`, in script order."""
    return [step for step in document.steps if applies(step.conditions, facts)]


def render(document: ScriptDocument, context: RenderContext) -> RenderedScript:
    """The concrete ordered steps of one session with every variable filled.

    Raises `MissingValuesError` listing all missing names at once, `InvalidValueError` for a value
    that does not fit its declared type, and `RenderError` for a session the script is not for.
    """
    product_type = context.product_type or document.product.type
    if product_type is not document.product.type:
        raise RenderError(
            f"订单产品类型为{product_type.label}，与话术「{document.script.title}」"
            f"的产品类型{document.product.type.label}不一致"
        )
    if not 0 <= context.customer_age <= 130:
        raise RenderError(f"客户年龄 {context.customer_age} 不合理")
    facts = SessionFacts(context.customer_age, product_type, context.policyholder_is_insured)
    steps = applicable_steps(document, facts)

    needed: list[str] = []
    for step in steps:
        for text in (step.text, step.copy_text or ""):
            needed.extend(p.name for p in placeholders.scan(text)[0])
        if isinstance(step.document, DocumentRef) and step.document.generated is not None:
            needed.extend(LICENCE_CARD_VALUES)
    values = _formatted_values(document, context.values, dict.fromkeys(needed))

    missing = sorted({name for name in needed if name not in values})
    if missing:
        labels = {name: decl.label for name, decl in document.variables.items()}
        raise MissingValuesError(missing, labels)

    rendered = [
        RenderedStep(
            id=step.id,
            kind=step.kind,
            title=step.display_title,
            text=placeholders.substitute(step.text, values.__getitem__),
            speaker=step.speaker,
            answer=step.answer,
            timeout_seconds=step.timeout_seconds,
            copy_text=(
                placeholders.substitute(step.copy_text, values.__getitem__)
                if step.copy_text is not None
                else None
            ),
            document=step.document_title,
            document_pages=_document_pages(step, values),
            max_cer=step.max_cer,
        )
        for step in steps
    ]
    return RenderedScript(
        script_code=document.script.code,
        script_version=document.script.version,
        content_hash=content_hash(document),
        product_code=document.product.code,
        customer_age=context.customer_age,
        steps=rendered,
    )


def static_speech_steps(document: ScriptDocument) -> list[RenderedStep]:
    """TTS steps whose text needs no order value: their audio can be pre-rendered on publish.

    Steps that mention the customer, the agent or the premium can only be spoken once an order
    exists; the session's own pre-render job renders those (and finds the static ones cached).
    All condition branches are included, since any of them may be played in some session.
    """
    builtins = document.builtin_values()
    result = []
    for step in document.steps:
        if (
            step.speaker is not Speaker.TTS
            or not placeholders.names(step.text) <= BUILTIN_VARIABLES
        ):
            continue
        result.append(
            RenderedStep(
                id=step.id,
                kind=step.kind,
                title=step.display_title,
                text=placeholders.substitute(step.text, builtins.__getitem__),
                speaker=step.speaker,
                answer=step.answer,
                timeout_seconds=step.timeout_seconds,
                copy_text=step.copy_text,
                document=step.document_title,
                max_cer=step.max_cer,
            )
        )
    return result


def _document_pages(step: Step, values: Mapping[str, str]) -> dict[str, Any] | None:
    """The pages the session pins for a show_document step with a real document (R-25)."""
    ref = step.document
    if not isinstance(ref, DocumentRef):
        return None
    try:
        if ref.generated is DocumentGenerator.AGENT_LICENCE_CARD:
            missing = [n for n in LICENCE_CARD_VALUES if not values.get(n)]
            if missing:
                raise RenderError("无法生成销售人员执业证：缺少 " + "、".join(missing))
            name_, licence_no, institution = (values[n] for n in LICENCE_CARD_VALUES)
            source, pages = documents.licence_pages(name_, licence_no, institution)
            name = ref.generated.value
        else:
            assert ref.file is not None
            source, pages = documents.file_pages(ref.file, ref.sha256)
            name = ref.file
    except documents.DocumentError as exc:
        raise RenderError(f"步骤 {step.id} 的文件「{ref.title}」无法显示：{exc.message}") from exc
    return {"title": ref.title, "source": name, "source_sha256": source,
            "min_page_seconds": ref.min_page_seconds, "page_count": len(pages), "pages": pages}


def _formatted_values(
    document: ScriptDocument, raw: Mapping[str, object], needed: Mapping[str, None]
) -> dict[str, str]:
    values = dict(document.builtin_values())
    for name in needed:
        if name in values or name not in raw:
            continue
        value = raw[name]
        if value is None:
            continue
        decl = document.variables.get(name)
        kind = decl.type if decl is not None else VariableType.TEXT
        text = _format(name, kind, value)
        if text.strip():
            values[name] = text
    return values


def _format(name: str, kind: VariableType, value: object) -> str:
    if kind is VariableType.MONEY:
        return _format_money(name, value)
    if kind is VariableType.INTEGER:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidValueError(f"变量 {name} 应为整数，实际为「{value}」")
        try:
            return str(int(value))
        except ValueError:
            raise InvalidValueError(f"变量 {name} 应为整数，实际为「{value}」") from None
    if kind is VariableType.DATE:
        if isinstance(value, str):
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                raise InvalidValueError(
                    f"变量 {name} 应为日期（YYYY-MM-DD），实际为「{value}」"
                ) from None
        if isinstance(value, dt.datetime):
            value = value.date()
        if not isinstance(value, dt.date):
            raise InvalidValueError(f"变量 {name} 应为日期，实际为「{value}」")
        return f"{value.year}年{value.month}月{value.day}日"
    return str(value).strip()


def _format_money(name: str, value: object) -> str:
    if isinstance(value, bool):
        raise InvalidValueError(f"变量 {name} 应为金额，实际为「{value}」")
    try:
        amount = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation:
        raise InvalidValueError(f"变量 {name} 应为金额，实际为「{value}」") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidValueError(f"变量 {name} 应为非负金额，实际为「{value}」")
    amount = amount.quantize(Decimal("0.01"))
    text = f"{amount:,.2f}"
    return text[:-3] if text.endswith(".00") else text
