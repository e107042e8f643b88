"""The compliance rule data the lint applies (R-21, R-22), read from the files in `data/`.

The rules are data so that compliance can review and extend them without touching code: the
mandatory steps and their order per product type, and the list of forbidden phrasing with the
rationale for each pattern.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from scripts_library.model import Conditions, ProductType, StepKind


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConditionalRequirement(_Frozen):
    """Kinds mandatory only in sessions that meet `when` (e.g. customers aged 60+)."""

    when: Conditions
    kinds: list[StepKind]
    why: str


class MandatorySteps(_Frozen):
    """Which step kinds a script must contain, and in what order (R-21)."""

    regulatory_risk_sentence: str
    order: list[list[StepKind]]
    mandatory: dict[Literal["all"] | ProductType, list[StepKind]]
    conditional: list[ConditionalRequirement]

    def kinds_for(self, product_type: ProductType) -> list[StepKind]:
        """Kinds mandatory in every session of a product of this type, in rank order."""
        kinds = [*self.mandatory.get("all", []), *self.mandatory.get(product_type, [])]
        return sorted(dict.fromkeys(kinds), key=lambda kind: self.rank(kind) or 0)

    def rank(self, kind: StepKind) -> int | None:
        """The position of `kind` in the required order, None when it may appear anywhere."""
        for position, group in enumerate(self.order):
            if kind in group:
                return position
        return None


class ForbiddenPattern(_Frozen):
    """One forbidden phrasing pattern with the reason it is forbidden (R-22)."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    category: Literal["comparison", "promise", "misrepresentation"]
    pattern: str
    negatable: bool
    rationale: str
    examples: Annotated[list[str], Field(min_length=1)]
    allowed: list[str] = Field(default_factory=list)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)


class ForbiddenPhrasing(_Frozen):
    """The maintained list of forbidden phrasing."""

    negation_words: list[str]
    negation_window: Annotated[int, Field(ge=0, le=10)]
    patterns: list[ForbiddenPattern]

    def find(self, text: str) -> list[tuple[ForbiddenPattern, re.Match[str]]]:
        """Every forbidden phrase in `text`, skipping negated matches of negatable patterns."""
        hits: list[tuple[ForbiddenPattern, re.Match[str]]] = []
        for entry in self.patterns:
            for match in entry.regex.finditer(text):
                if entry.negatable and self._negated(text, match.start()):
                    continue
                hits.append((entry, match))
        return sorted(hits, key=lambda hit: hit[1].start())

    def _negated(self, text: str, start: int) -> bool:
        before = text[max(0, start - self.negation_window) : start]
        return any(word in before for word in self.negation_words)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _read(name: str) -> object:
    data_file = resources.files("scripts_library").joinpath("data").joinpath(name)
    return yaml.safe_load(data_file.read_text(encoding="utf-8"))


@cache
def mandatory_steps() -> MandatorySteps:
    """The mandatory-step rules shipped in `data/mandatory_steps.yaml`."""
    return MandatorySteps.model_validate(_read("mandatory_steps.yaml"))


@cache
def forbidden_phrasing() -> ForbiddenPhrasing:
    """The forbidden-phrasing list shipped in `data/forbidden_phrasing.yaml`."""
    return ForbiddenPhrasing.model_validate(_read("forbidden_phrasing.yaml"))
