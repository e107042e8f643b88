"""Compliance lint of a script version: publishing is refused on any error (R-21, R-22, R-24, R-25).

Every rule has a stable English code (for tools and tests) and a precise Chinese message for the
product owner, with the step id and the YAML line where the problem is. Mandatory steps are
checked once per representative session (customer ages around every age threshold, policyholder
insured or not), so a disclosure hidden behind a condition is caught as well as a missing one.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from scripts_library import documents, placeholders
from scripts_library.model import (
    BUILTIN_VARIABLES,
    AnswerRequirement,
    DocumentRef,
    ScriptDocument,
    Step,
    StepKind,
    TermYears,
)
from scripts_library.render import SessionFacts, applicable_steps, applies
from scripts_library.rules import MandatorySteps, forbidden_phrasing, mandatory_steps

ADULT_AGE = 18
MIN_COOLING_OFF_DAYS = 15


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One problem in a script; `message` is Chinese and names what to change."""

    code: str
    severity: Severity
    message: str
    step_id: str | None = None
    line: int | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = self.source or "<script>"
        if self.line is not None:
            where += f":{self.line}"
        step = f"步骤 {self.step_id}：" if self.step_id else ""
        return f"{where}: {self.severity.value} [{self.code}] {step}{self.message}"


class LintFailed(Exception):
    """Publishing refused: the script has lint errors (R-21, R-22)."""

    def __init__(self, findings: list[LintFinding]) -> None:
        self.findings = findings
        errors = [finding for finding in findings if finding.severity is Severity.ERROR]
        super().__init__(
            f"话术存在 {len(errors)} 个错误，不能发布：\n" + "\n".join(map(str, errors))
        )


def lint(document: ScriptDocument) -> list[LintFinding]:
    """All findings for `document`, errors and warnings, ordered by line."""
    linter = _Linter(document, mandatory_steps())
    linter.run()
    unique = list(dict.fromkeys(linter.findings))
    return sorted(unique, key=lambda f: (f.line or 0, f.severity is not Severity.ERROR, f.code))


def has_errors(findings: Iterable[LintFinding]) -> bool:
    return any(finding.severity is Severity.ERROR for finding in findings)


def ensure_publishable(document: ScriptDocument) -> list[LintFinding]:
    """Lint `document`; raise `LintFailed` on any error, else return the warnings."""
    findings = lint(document)
    if has_errors(findings):
        raise LintFailed(findings)
    return findings


class _Linter:
    def __init__(self, document: ScriptDocument, rules: MandatorySteps) -> None:
        self.document = document
        self.rules = rules
        self.findings: list[LintFinding] = []

    def run(self) -> None:
        self._product()
        self._step_ids()
        self._variables()
        self._forbidden_phrasing()
        self._mandatory_and_order()
        self._answers()
        self._documents()
        self._risk_sentence()
        self._conditions()
        self._content_mentions()

    # -- helpers -----------------------------------------------------------------------------

    def _add(
        self,
        code: str,
        message: str,
        *,
        step: Step | None = None,
        field: str = "",
        line: int | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None:
        if line is None:
            line = step.line_of(field) if step is not None else self.document.line_of(field)
        self.findings.append(
            LintFinding(
                code=code,
                severity=severity,
                message=message,
                step_id=step.id if step is not None else None,
                line=line,
                source=self.document.source_name,
            )
        )

    def _facts(self) -> list[SessionFacts]:
        """Representative sessions: each age where a condition changes, insured or not."""
        ages = {ADULT_AGE}
        bounds = [
            (step.conditions.min_customer_age, step.conditions.max_customer_age)
            for step in self.document.steps
        ]
        bounds += [
            (rule.when.min_customer_age, rule.when.max_customer_age)
            for rule in self.rules.conditional
        ]
        for low, high in bounds:
            if low is not None:
                ages.update({low - 1, low})
            if high is not None:
                ages.update({high, high + 1})
        product_type = self.document.product.type
        return [
            SessionFacts(age, product_type, insured)
            for age in sorted(a for a in ages if ADULT_AGE <= a <= 130)
            for insured in (True, False)
        ]

    def _required_kinds(self, facts: SessionFacts) -> dict[StepKind, str]:
        """Kinds mandatory in a session with `facts`, each with why (empty: always mandatory)."""
        required = dict.fromkeys(self.rules.kinds_for(facts.product_type), "")
        for rule in self.rules.conditional:
            if applies(rule.when, facts):
                for kind in rule.kinds:
                    required.setdefault(kind, rule.why)
        return required

    # -- rules -------------------------------------------------------------------------------

    def _product(self) -> None:
        product = self.document.product
        if isinstance(product.term, TermYears) and product.term.years <= 1:
            self._add(
                "term-out-of-scope",
                "保险期间不超过一年的产品不适用远程双录（R-01），请确认产品期限",
                field="product.term",
            )
        if product.cooling_off_days < MIN_COOLING_OFF_DAYS:
            self._add(
                "cooling-off-short",
                f"犹豫期设置为 {product.cooling_off_days} 天，少于 {MIN_COOLING_OFF_DAYS} 天，"
                "请与合规部门确认",
                field="product.cooling_off_days",
                severity=Severity.WARNING,
            )

    def _step_ids(self) -> None:
        seen: dict[str, Step] = {}
        for step in self.document.steps:
            if step.id in seen:
                self._add(
                    "duplicate-step-id",
                    f"步骤编号「{step.id}」重复（第 {seen[step.id].line_of()} 行已使用），"
                    "客户应答记录将无法对应到唯一步骤",
                    step=step,
                    field="id",
                )
            else:
                seen[step.id] = step

    def _variables(self) -> None:
        declared = self.document.variables
        for name, decl in declared.items():
            if name in BUILTIN_VARIABLES:
                self._add(
                    "builtin-variable-redeclared",
                    f"变量 {name} 由产品信息自动提供，不能再次声明",
                    line=decl.line_of(),
                )
        used: set[str] = set()
        for step in self.document.steps:
            for field in ("text", "copy_text"):
                text = getattr(step, field)
                if text is None:
                    continue
                found, malformed = placeholders.scan(text)
                for bad in malformed:
                    self._add(
                        "malformed-placeholder",
                        f"{field} 中的「{bad.fragment}」不是合法变量写法；变量写作 {{变量名}}"
                        "（小写字母、数字、下划线），原样输出花括号请写 {{ 或 }}",
                        step=step,
                        field=field,
                    )
                for placeholder in found:
                    used.add(placeholder.name)
                    if (
                        placeholder.name not in declared
                        and placeholder.name not in BUILTIN_VARIABLES
                    ):
                        builtins = "、".join(sorted(BUILTIN_VARIABLES))
                        self._add(
                            "undefined-variable",
                            f"{field} 使用了未声明的变量 {{{placeholder.name}}}；"
                            f"请在 variables 中声明，或改用内置变量（{builtins}）",
                            step=step,
                            field=field,
                        )
        for name, decl in declared.items():
            if name not in used and name not in BUILTIN_VARIABLES:
                self._add(
                    "unused-variable",
                    f"变量 {name}（{decl.label}）已声明但未被任何步骤使用",
                    line=decl.line_of(),
                    severity=Severity.WARNING,
                )

    def _forbidden_phrasing(self) -> None:
        phrasing = forbidden_phrasing()
        targets: list[tuple[Step | None, str, str]] = [
            (None, "script.title", self.document.script.title),
            (None, "product.name", self.document.product.name),
        ]
        for step in self.document.steps:
            targets += [(step, "title", step.title), (step, "text", step.text)]
            if step.copy_text is not None:
                targets.append((step, "copy_text", step.copy_text))
        for target, field, text in targets:
            for entry, match in phrasing.find(text):
                self._add(
                    "forbidden-phrasing",
                    f"{field} 中的表述「{match.group(0)}」违反禁用表述规则 {entry.id}："
                    f"{entry.rationale}",
                    step=target,
                    field=field,
                )

    def _mandatory_and_order(self) -> None:
        all_facts = self._facts()
        missing_in: dict[StepKind, list[SessionFacts]] = {}
        required_in: dict[StepKind, list[SessionFacts]] = {}
        why_of: dict[StepKind, str] = {}
        for facts in all_facts:
            steps = applicable_steps(self.document, facts)
            present = {step.kind for step in steps}
            for kind, why in self._required_kinds(facts).items():
                required_in.setdefault(kind, []).append(facts)
                why_of.setdefault(kind, why)
                if kind not in present:
                    missing_in.setdefault(kind, []).append(facts)
            self._order(steps)

        type_label = self.document.product.type.label
        for kind, missing in missing_in.items():
            why = why_of[kind]
            if len(missing) == len(required_in[kind]):
                reason = why or f"{type_label}产品的话术必须包含该环节（R-21）"
                self._add(
                    "missing-mandatory-step",
                    f"缺少必备环节「{kind.label}」（kind: {kind.value}）：{reason}",
                    field="steps",
                )
                continue
            conditional = [step for step in self.document.steps if step.kind is kind]
            example = self._describe(missing[0], all_facts, missing)
            self._add(
                "mandatory-step-conditional",
                f"必备环节「{kind.label}」（kind: {kind.value}）在部分会话中不会播放，"
                f"例如{example}；请检查该环节的 conditions",
                step=conditional[0] if conditional else None,
                field="conditions" if conditional else "steps",
            )

    def _describe(
        self, facts: SessionFacts, all_facts: list[SessionFacts], missing: list[SessionFacts]
    ) -> str:
        text = f"客户 {facts.customer_age} 岁"
        same_age = [f for f in all_facts if f.customer_age == facts.customer_age]
        if not all(f in missing for f in same_age):
            text += (
                "、投保人即被保险人"
                if facts.policyholder_is_insured
                else "、投保人与被保险人不是同一人"
            )
        return text + "时"

    def _order(self, steps: list[Step]) -> None:
        latest: Step | None = None
        latest_rank = -1
        for step in steps:
            rank = self.rules.rank(step.kind)
            if rank is None:
                continue
            if latest is not None and rank < latest_rank:
                self._add(
                    "step-out-of-order",
                    f"环节「{step.kind.label}」（{step.kind.value}）应排在步骤 {latest.id}"
                    f"「{latest.kind.label}」（{latest.kind.value}）之前（R-21 规定的顺序）",
                    step=step,
                    field="kind",
                )
            elif rank >= latest_rank:
                latest, latest_rank = step, rank

    def _answers(self) -> None:
        key_kinds = set(self.rules.mandatory.get("all", []))
        key_kinds.update(self.rules.mandatory.get(self.document.product.type, []))
        for rule in self.rules.conditional:
            key_kinds.update(rule.kinds)
        for step in self.document.steps:
            if step.kind in key_kinds and step.answer is AnswerRequirement.NONE:
                self._add(
                    "answer-required",
                    f"关键环节「{step.kind.label}」须由客户作出明确肯定答复（R-24），"
                    "answer 不能为 none",
                    step=step,
                    field="answer",
                )
            if step.kind is StepKind.SIGNATURE and step.answer is not AnswerRequirement.SIGNATURE:
                self._add(
                    "signature-answer",
                    "签名确认环节的 answer 必须为 signature（R-25：首次签名须客户本人手写）",
                    step=step,
                    field="answer",
                )
            if (
                step.kind is StepKind.DOCUMENT_DISPLAY
                and step.answer is not AnswerRequirement.SHOW_DOCUMENT
            ):
                self._add(
                    "document-display-answer",
                    "出示文件环节的 answer 必须为 show_document，"
                    "并在 document 中写明文件名称（R-25）",
                    step=step,
                    field="answer",
                )

    def _documents(self) -> None:
        """R-25: a shown document is real pages, not a name read out over a blank screen."""
        for step in self.document.steps:
            if step.answer is not AnswerRequirement.SHOW_DOCUMENT:
                continue
            ref = step.document
            if not isinstance(ref, DocumentRef):
                self._add(
                    "document-without-pages",
                    f"出示文件「{ref}」只有名称，客户看不到文件内容；请改为 document: "
                    "{title: 名称, file: 文件库中的 PDF/图片/TXT 文件, min_page_seconds: 每页最短"
                    "展示秒数}，销售人员执业证写 generated: agent_licence_card（R-25）",
                    step=step,
                    field="document",
                )
                continue
            if ref.file is None:
                continue
            suffix = Path(ref.file).suffix.lower()
            if suffix not in documents.SUPPORTED_SUFFIXES:
                self._add("document-file-type",
                          f"文件 {ref.file} 的类型不支持（可用 PDF、PNG、JPG 或 TXT）",
                          step=step, field="document.file")
                continue
            try:
                path = documents.resolve(ref.file)
            except documents.DocumentError as exc:
                self._add("document-file-missing", exc.message, step=step, field="document.file")
                continue
            if not path.is_file():
                self._add("document-file-missing",
                          f"文件库中找不到文件 {ref.file}，客户将无法看到「{ref.title}」",
                          step=step, field="document.file")
            elif ref.sha256 is None:
                self._add("document-not-pinned",
                          f"文件 {ref.file} 没有登记 sha256：发布后若文件被替换，客户看到的将不是"
                          "审核过的版本", step=step, field="document", severity=Severity.WARNING)
            elif hashlib.sha256(path.read_bytes()).hexdigest() != ref.sha256:
                self._add("document-sha256-mismatch",
                          f"文件 {ref.file} 的内容与登记的 sha256 不一致，请核对文件版本",
                          step=step, field="document.sha256")

    def _risk_sentence(self) -> None:
        sentence = self.rules.regulatory_risk_sentence
        risk_steps = [step for step in self.document.steps if step.kind is StepKind.RISK_SENTENCE]
        for step in risk_steps:
            text = _compact(step.text)
            if sentence not in text:
                self._add(
                    "risk-sentence-mismatch",
                    "风险提示语必须与监管原文完全一致："
                    f"「{sentence}」；{_difference(sentence, text)}",
                    step=step,
                    field="text",
                )
            if step.copy_text is not None:
                copy = _compact(step.copy_text).rstrip("。.")
                if copy != sentence:
                    self._add(
                        "risk-sentence-mismatch",
                        "抄录内容（copy_text）必须与监管原文完全一致："
                        f"「{sentence}」；{_difference(sentence, copy)}",
                        step=step,
                        field="copy_text",
                    )
        if self.document.product.type.has_uncertain_returns and risk_steps:
            copied = any(step.answer is AnswerRequirement.HANDWRITTEN_COPY for step in risk_steps)
            if not copied:
                self._add(
                    "risk-sentence-not-copied",
                    "风险提示语没有要求客户手写抄录（answer: handwritten_copy）；"
                    "仅在监管允许点击确认的情形下可省略（R-25）",
                    step=risk_steps[0],
                    field="answer",
                    severity=Severity.WARNING,
                )

    def _conditions(self) -> None:
        product_type = self.document.product.type
        for step in self.document.steps:
            conditions = step.conditions
            if (
                conditions.product_types is not None
                and product_type not in conditions.product_types
            ):
                labels = "、".join(t.label for t in conditions.product_types)
                self._add(
                    "step-never-applies",
                    f"该步骤仅适用于{labels}产品，而本产品为{product_type.label}，永远不会播放",
                    step=step,
                    field="conditions.product_types",
                    severity=Severity.WARNING,
                )
            if step.kind is StepKind.ELDERLY_NOTICE and conditions.min_customer_age is None:
                self._add(
                    "elderly-notice-unconditional",
                    "60 周岁以上客户特别提示没有设置 min_customer_age，将对所有客户播放",
                    step=step,
                    field="conditions",
                    severity=Severity.WARNING,
                )

    def _content_mentions(self) -> None:
        """Disclosures that must carry specific facts, not just exist (R-21)."""
        product = self.document.product
        for step in self.document.steps:
            used = placeholders.names(step.text)
            if step.kind is StepKind.AGENT_IDENTITY:
                wanted = {
                    "agent_name": "姓名",
                    "institution_full_name": "所属机构全称",
                    "agent_licence_no": "执业证编号",
                }
                absent = [label for name, label in wanted.items() if name not in used]
                if absent:
                    self._add(
                        "agent-identity-incomplete",
                        "销售人员须说明本人"
                        + "、".join(absent)
                        + "（R-21），请使用变量 {agent_name}、{institution_full_name}、"
                        "{agent_licence_no}",
                        step=step,
                        field="text",
                    )
            if step.kind is StepKind.INSURER_NAME and not (
                "insurer_name" in used or product.insurer in _compact(step.text)
            ):
                self._add(
                    "insurer-name-not-stated",
                    f"保险公司名称环节未说明承保公司全称「{product.insurer}」，"
                    "请使用 {insurer_name}",
                    step=step,
                    field="text",
                )
            if step.kind is StepKind.PRODUCT_NAME and not (
                "product_name" in used or product.name in _compact(step.text)
            ):
                self._add(
                    "product-name-not-stated",
                    f"产品名称环节未说明产品全称「{product.name}」，请使用 {{product_name}}",
                    step=step,
                    field="text",
                )
            if step.kind is StepKind.COOLING_OFF:
                days = product.cooling_off_days
                text = _compact(step.text)
                if not (
                    "cooling_off_days" in used or str(days) in text or _chinese_number(days) in text
                ):
                    self._add(
                        "cooling-off-days-not-stated",
                        f"犹豫期环节未说明犹豫期天数（产品设置为 {days} 天），"
                        "请使用 {cooling_off_days}",
                        step=step,
                        field="text",
                        severity=Severity.WARNING,
                    )


def _compact(text: str) -> str:
    # YAML folded and literal blocks put line breaks and spaces inside Chinese sentences.
    return "".join(text.split())


def _difference(expected: str, actual: str) -> str:
    """Where `actual` departs from `expected`, said for a person."""
    window = _closest_window(expected, actual)
    matcher = difflib.SequenceMatcher(None, expected, window, autojunk=False)
    if matcher.ratio() < 0.5:
        return "话术中未找到该句"
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        wanted, found = expected[i1:i2] or "（无）", window[j1:j2] or "（无）"
        return f"自原文第 {i1 + 1} 个字起不一致：原文为「{wanted}」，话术为「{found}」"
    return "话术中未找到该句"


def _closest_window(expected: str, actual: str) -> str:
    size = len(expected)
    if len(actual) <= size + 4:
        return actual
    best, best_ratio = actual, -1.0
    for start in range(len(actual) - size // 2):
        for length in (size - 4, size, size + 4):
            window = actual[start : start + length]
            ratio = difflib.SequenceMatcher(None, expected, window, autojunk=False).ratio()
            if ratio > best_ratio:
                best, best_ratio = window, ratio
    return best


_DIGITS = "零一二三四五六七八九"


def _chinese_number(number: int) -> str:
    """Chinese numerals for 0-99, enough for day counts such as 十五 or 二十."""
    if number < 10:
        return _DIGITS[number]
    tens, ones = divmod(number, 10)
    head = "" if tens == 1 else _DIGITS[tens]
    return head + "十" + (_DIGITS[ones] if ones else "")


__all__ = [
    "LintFailed",
    "LintFinding",
    "Severity",
    "ensure_publishable",
    "has_errors",
    "lint",
]
