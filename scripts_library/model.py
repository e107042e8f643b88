"""The YAML format of one product script version (话术), as pydantic v2 models (R-01, R-21, R-24).

A script file is human-written and reviewed in git; these models are its schema. Rules that need
the whole document (mandatory steps, order, phrasing) live in `lint.py`, not here: the models only
refuse what can never be meaningful (unknown fields, wrong types, impossible numbers).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

IDENTIFIER_PATTERN = r"^[a-z][a-z0-9_]*$"
STEP_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
SCHEMA_VERSION = 1


class ProductType(StrEnum):
    """Product type (R-01); all but traditional are 'new-type' products with uncertain benefits."""

    TRADITIONAL = "traditional"
    PARTICIPATING = "participating"
    UNIVERSAL = "universal"
    INVESTMENT_LINKED = "investment_linked"

    @property
    def label(self) -> str:
        return PRODUCT_TYPE_LABELS[self]

    @property
    def has_uncertain_returns(self) -> bool:
        """Products whose benefits are uncertain: they need the risk sentence (R-21)."""
        return self is not ProductType.TRADITIONAL


PRODUCT_TYPE_LABELS: dict[ProductType, str] = {
    ProductType.TRADITIONAL: "传统型",
    ProductType.PARTICIPATING: "分红型",
    ProductType.UNIVERSAL: "万能型",
    ProductType.INVESTMENT_LINKED: "投资连结型",
}


class Channel(StrEnum):
    """Sales channel of the product (R-01, R-03: bank-channel sales are bound to bank premises)."""

    BANK = "bank"
    AGENCY = "agency"
    BROKER = "broker"
    DIRECT = "direct"


CHANNEL_LABELS: dict[Channel, str] = {
    Channel.BANK: "银行代理",
    Channel.AGENCY: "个人代理",
    Channel.BROKER: "专业中介",
    Channel.DIRECT: "公司直销",
}


class ProductGrade(StrEnum):
    """Product grade matched against the agent's grade before a session starts (R-03)."""

    BASIC = "basic"
    INTERMEDIATE = "intermediate"
    ADVANCED = "advanced"

    @property
    def rank(self) -> int:
        return list(ProductGrade).index(self)


class StepKind(StrEnum):
    """What a step discloses; the R-21 categories plus the steps around them."""

    OPENING_PROMPT = "opening_prompt"
    AGENT_IDENTITY = "agent_identity"
    IS_INSURANCE = "is_insurance"
    INSURER_NAME = "insurer_name"
    PRODUCT_NAME = "product_name"
    COVERAGE = "coverage"
    EXCLUSIONS = "exclusions"
    PREMIUM_AND_TERM = "premium_and_term"
    COOLING_OFF = "cooling_off"
    SURRENDER_LOSS = "surrender_loss"
    CASH_VALUE = "cash_value"
    WAITING_GRACE = "waiting_grace"
    DUTY_TO_DISCLOSE = "duty_to_disclose"
    COMPLAINTS = "complaints"
    RETURN_UNCERTAINTY = "return_uncertainty"
    FEES = "fees"
    BROCHURE = "brochure"
    DOCUMENT_DISPLAY = "document_display"
    RISK_SENTENCE = "risk_sentence"
    SIGNATURE = "signature"
    ELDERLY_NOTICE = "elderly_notice"
    INSURED_CONFIRMATION = "insured_confirmation"
    SUITABILITY = "suitability"
    CLOSING = "closing"
    OTHER = "other"

    @property
    def label(self) -> str:
        return STEP_KIND_LABELS[self]


STEP_KIND_LABELS: dict[StepKind, str] = {
    StepKind.OPENING_PROMPT: "开场提示",
    StepKind.AGENT_IDENTITY: "销售人员身份及执业证展示",
    StepKind.IS_INSURANCE: "明示保险产品属性",
    StepKind.INSURER_NAME: "保险公司名称",
    StepKind.PRODUCT_NAME: "产品名称",
    StepKind.COVERAGE: "保险责任",
    StepKind.EXCLUSIONS: "责任免除",
    StepKind.PREMIUM_AND_TERM: "保费、交费方式、交费期间及保险期间",
    StepKind.COOLING_OFF: "犹豫期",
    StepKind.SURRENDER_LOSS: "犹豫期后退保损失",
    StepKind.CASH_VALUE: "现金价值",
    StepKind.WAITING_GRACE: "等待期与宽限期",
    StepKind.DUTY_TO_DISCLOSE: "如实告知义务",
    StepKind.COMPLAINTS: "投诉渠道",
    StepKind.RETURN_UNCERTAINTY: "保单利益不确定性",
    StepKind.FEES: "费用扣除",
    StepKind.BROCHURE: "产品说明书",
    StepKind.DOCUMENT_DISPLAY: "出示投保提示书、条款及免责条款",
    StepKind.RISK_SENTENCE: "风险提示语",
    StepKind.SIGNATURE: "签名确认",
    StepKind.ELDERLY_NOTICE: "60 周岁以上客户特别提示",
    StepKind.INSURED_CONFIRMATION: "被保险人确认",
    StepKind.SUITABILITY: "适当性提示",
    StepKind.CLOSING: "结束语",
    StepKind.OTHER: "其他",
}


class Speaker(StrEnum):
    """Who speaks a step: the text-to-speech voice (R-23) or the agent in person."""

    TTS = "tts"
    AGENT = "agent"


class AnswerRequirement(StrEnum):
    """What the customer must do before the step advances (R-24, R-25)."""

    AFFIRMATIVE_BUTTON = "affirmative_button"
    SPOKEN_ANSWER = "spoken_answer"
    HANDWRITTEN_COPY = "handwritten_copy"
    SIGNATURE = "signature"
    SHOW_DOCUMENT = "show_document"
    NONE = "none"


class _Located(BaseModel):
    """A model that remembers the YAML lines it was loaded from, for precise messages.

    `_lines` maps a dotted field path relative to this model ("" for the model itself,
    "text", "conditions.min_customer_age") to a 1-based line number. Documents built in
    code have no lines; every consumer must accept `None`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    def line_of(self, field: str = "") -> int | None:
        """The line of `field` (or of the nearest enclosing node that has one)."""
        probe = field
        while True:
            if probe in self._lines:
                return self._lines[probe]
            if not probe:
                return None
            probe = probe.rpartition(".")[0]


class TermWholeLife(StrEnum):
    WHOLE_LIFE = "whole_life"


class TermYears(_Located):
    """A fixed insurance term in years."""

    years: Annotated[int, Field(ge=1, le=120)]


class TermToAge(_Located):
    """Cover until the insured reaches an age (common for annuities: 至 85 周岁)."""

    to_age: Annotated[int, Field(ge=18, le=120)]


def _term_tag(value: Any) -> str | None:
    # An explicit tag keeps errors about `term` to one precise message instead of one per variant.
    if isinstance(value, (str, TermWholeLife)):
        return "whole_life"
    if isinstance(value, TermYears) or (isinstance(value, dict) and "years" in value):
        return "years"
    if isinstance(value, TermToAge) or (isinstance(value, dict) and "to_age" in value):
        return "to_age"
    return None


Term = Annotated[
    Annotated[TermWholeLife, Tag("whole_life")]
    | Annotated[TermYears, Tag("years")]
    | Annotated[TermToAge, Tag("to_age")],
    Discriminator(
        _term_tag,
        custom_error_type="term_format",
        custom_error_message="保险期间应写作 whole_life、{years: 年数} 或 {to_age: 年龄}",
    ),
]


class Product(_Located):
    """Product metadata (R-01): what is sold, by whom, how long, through which channel."""

    code: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    ]
    name: Annotated[str, Field(min_length=2, max_length=80)]
    insurer: Annotated[str, Field(min_length=4, max_length=80)]
    type: ProductType
    term: Term
    channel: Channel
    grade: ProductGrade
    cooling_off_days: Annotated[int, Field(ge=1, le=60)]
    service_hotline: Annotated[str, Field(min_length=3, max_length=32)]

    @property
    def term_years(self) -> int | None:
        """Term in whole years when fixed; None for whole-life and to-age terms."""
        return self.term.years if isinstance(self.term, TermYears) else None

    @property
    def term_description(self) -> str:
        """The term as a product owner says it: 终身 / 20 年 / 至被保险人 85 周岁."""
        if isinstance(self.term, TermYears):
            return f"{self.term.years}年"
        if isinstance(self.term, TermToAge):
            return f"至被保险人{self.term.to_age}周岁"
        return "终身"


class VariableType(StrEnum):
    """How a variable's value is formatted in the rendered text (and read by TTS)."""

    TEXT = "text"
    MONEY = "money"
    INTEGER = "integer"
    DATE = "date"
    DIGITS = "digits"


class VariableDecl(_Located):
    """A value the order or the session supplies when the script is rendered (R-21)."""

    label: Annotated[str, Field(min_length=1, max_length=40)]
    type: VariableType = VariableType.TEXT
    description: str = ""


class Conditions(_Located):
    """When a step applies; every given condition must hold (logical AND)."""

    min_customer_age: Annotated[int | None, Field(ge=0, le=130)] = None
    max_customer_age: Annotated[int | None, Field(ge=0, le=130)] = None
    product_types: Annotated[list[ProductType] | None, Field(min_length=1)] = None
    policyholder_is_insured: bool | None = None

    @model_validator(mode="after")
    def _age_range_not_empty(self) -> Conditions:
        low, high = self.min_customer_age, self.max_customer_age
        if low is not None and high is not None and low > high:
            raise ValueError("min_customer_age 不能大于 max_customer_age")
        return self

    @property
    def is_unconditional(self) -> bool:
        return (
            self.min_customer_age is None
            and self.max_customer_age is None
            and self.product_types is None
            and self.policyholder_is_insured is None
        )


class DocumentGenerator(StrEnum):
    """Documents drawn per session instead of read from a file."""

    AGENT_LICENCE_CARD = "agent_licence_card"


class DocumentRef(_Located):
    """A document shown page by page in a show_document step (R-25): a file under the
    documents root (PDF, PNG/JPG or a TXT source typeset into pages; scripts_library.documents)
    or one drawn for the session (the agent's licence card). Every page must be shown at least
    `min_page_seconds` before the customer can confirm."""

    title: Annotated[str, Field(min_length=1, max_length=80)]
    file: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    generated: DocumentGenerator | None = None
    # SHA-256 of the file: a published version then always shows the same pages.
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    min_page_seconds: Annotated[int, Field(ge=1, le=600)] = 5

    @model_validator(mode="after")
    def _one_source(self) -> DocumentRef:
        if (self.file is None) == (self.generated is None):
            raise ValueError("document 须且只能写 file（文件库中的文件）或 generated 之一")
        if self.generated is not None and self.sha256 is not None:
            raise ValueError("generated 文件按会话生成，不能登记 sha256")
        return self


class Step(_Located):
    """One step of the script: a disclosure, who says it and what the customer must answer."""

    id: Annotated[str, Field(min_length=1, max_length=40, pattern=STEP_ID_PATTERN)]
    kind: StepKind
    title: Annotated[str, Field(max_length=40)] = ""
    text: Annotated[str, Field(min_length=1, max_length=2000)]
    speaker: Speaker = Speaker.TTS
    answer: AnswerRequirement = AnswerRequirement.AFFIRMATIVE_BUTTON
    timeout_seconds: Annotated[int, Field(ge=5, le=1800)] = 60
    copy_text: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    # A DocumentRef with real pages; a bare name still loads (old versions) but the lint
    # refuses to publish it.
    document: DocumentRef | Annotated[str, Field(min_length=1, max_length=80)] | None = None
    # Hand-copy: the highest character error rate of the recognised handwriting.
    # None: the default, 0.2 (media.handwriting.reading.DEFAULT_MAX_CER).
    max_cer: Annotated[float | None, Field(ge=0.0, le=0.5)] = None
    conditions: Conditions = Field(default_factory=Conditions)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("文本不能为空白")
        return value

    @model_validator(mode="after")
    def _answer_details(self) -> Step:
        # The customer cannot copy or be shown something the script never names.
        if self.answer is AnswerRequirement.HANDWRITTEN_COPY and self.copy_text is None:
            raise ValueError("answer 为 handwritten_copy 时必须提供 copy_text（客户需抄录的原文）")
        if self.answer is AnswerRequirement.SHOW_DOCUMENT and self.document is None:
            raise ValueError("answer 为 show_document 时必须提供 document（出示的文件名称）")
        return self

    @property
    def display_title(self) -> str:
        return self.title or self.kind.label

    @property
    def document_title(self) -> str | None:
        if isinstance(self.document, DocumentRef):
            return self.document.title
        return self.document


class ScriptInfo(_Located):
    """Identity of this script version; its workflow status lives in the database, not here."""

    code: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    ]
    version: Annotated[int, Field(ge=1)]
    title: Annotated[str, Field(min_length=1, max_length=80)]
    notes: str = ""


class ScriptDocument(_Located):
    """One product script version as written in its YAML file."""

    schema_version: Literal[1]
    script: ScriptInfo
    product: Product
    variables: dict[Annotated[str, Field(pattern=IDENTIFIER_PATTERN)], VariableDecl] = Field(
        default_factory=dict
    )
    steps: Annotated[list[Step], Field(min_length=1)]

    _source_name: str | None = PrivateAttr(default=None)

    @property
    def source_name(self) -> str | None:
        """The file (or other source) this document was loaded from, if any."""
        return self._source_name

    def builtin_values(self) -> dict[str, str]:
        """Variables every script may use without declaring them: they come from the metadata."""
        product = self.product
        return {
            "product_name": product.name,
            "product_code": product.code,
            "insurer_name": product.insurer,
            "cooling_off_days": str(product.cooling_off_days),
            "insurance_term": product.term_description,
            "service_hotline": product.service_hotline,
        }

    def step_by_id(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


BUILTIN_VARIABLES: frozenset[str] = frozenset(
    {
        "product_name",
        "product_code",
        "insurer_name",
        "cooling_off_days",
        "insurance_term",
        "service_hotline",
    }
)


def attach_lines(
    model: BaseModel, lines: dict[tuple[Any, ...], int], prefix: tuple[Any, ...]
) -> None:
    """Give every located sub-model the YAML lines under its own path (called by the loader)."""
    if isinstance(model, _Located):
        own: dict[str, int] = {}
        for path, line in lines.items():
            if path[: len(prefix)] == prefix:
                own[".".join(str(part) for part in path[len(prefix) :])] = line
        model._lines = own
    for name in type(model).model_fields:
        value = getattr(model, name)
        _attach_value(value, lines, (*prefix, name))


def _attach_value(value: object, lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> None:
    if isinstance(value, BaseModel):
        attach_lines(value, lines, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _attach_value(item, lines, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            _attach_value(item, lines, (*path, key))
