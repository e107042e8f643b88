"""Compliance lint: mandatory steps and order (R-21), forbidden phrasing (R-22), answers (R-24)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts_library import (
    LintFailed,
    ScriptDocument,
    Severity,
    StepKind,
    ensure_publishable,
    lint,
    load_script,
)
from scripts_library.catalogue import LIBRARY_DIR
from scripts_library.lint import LintFinding
from scripts_library.rules import forbidden_phrasing, mandatory_steps

RISK_SENTENCE = "本人已阅读保险条款、产品说明书和投保提示书，了解本产品的特点和保单利益的不确定性"
PRODUCTS = ["YA-ZSS-001", "YA-NJF-002", "YA-TL-003"]


def _errors(document: ScriptDocument) -> list[LintFinding]:
    return [f for f in lint(document) if f.severity is Severity.ERROR]


def _codes(document: ScriptDocument) -> set[str]:
    return {finding.code for finding in _errors(document)}


def _step(data: dict[str, Any], step_id: str) -> dict[str, Any]:
    step: dict[str, Any] = next(s for s in data["steps"] if s["id"] == step_id)
    return step


def test_r21_r22_every_sample_script_lints_clean(sample_file: Path) -> None:
    findings = lint(load_script(sample_file))
    assert findings == [], "\n".join(map(str, findings))


def test_the_regulatory_risk_sentence_is_the_exact_text() -> None:
    assert mandatory_steps().regulatory_risk_sentence == RISK_SENTENCE


def _mandatory_cases() -> list[tuple[str, StepKind]]:
    rules = mandatory_steps()
    cases: list[tuple[str, StepKind]] = []
    for code in PRODUCTS:
        document = load_script(LIBRARY_DIR / code / "v1.yaml")
        cases.extend((code, kind) for kind in rules.kinds_for(document.product.type))
        for rule in rules.conditional:
            cases.extend((code, kind) for kind in rule.kinds)
    return cases


@pytest.mark.parametrize(("product_code", "kind"), _mandatory_cases())
def test_r21_removing_a_mandatory_step_refuses_publishing(
    product_code: str,
    kind: StepKind,
    sample: Callable[[str], ScriptDocument],
) -> None:
    document = sample(product_code)
    remaining = [step for step in document.steps if step.kind is not kind]
    assert len(remaining) < len(document.steps), f"sample lacks {kind}"
    without = document.model_copy(update={"steps": remaining})

    with pytest.raises(LintFailed) as caught:
        ensure_publishable(without)
    missing = [f for f in caught.value.findings if f.code == "missing-mandatory-step"]
    assert len(missing) == 1, caught.value.findings
    assert f"缺少必备环节「{kind.label}」（kind: {kind.value}）" in missing[0].message
    assert missing[0].line == document.line_of("steps")
    assert missing[0].source == document.source_name


def test_r21_a_new_type_product_needs_the_uncertainty_steps_a_traditional_does_not(
    sample: Callable[[str], ScriptDocument],
) -> None:
    traditional = mandatory_steps().kinds_for(sample("YA-ZSS-001").product.type)
    linked = mandatory_steps().kinds_for(sample("YA-TL-003").product.type)
    extra = {StepKind.RETURN_UNCERTAINTY, StepKind.FEES, StepKind.BROCHURE, StepKind.RISK_SENTENCE}
    assert extra.isdisjoint(traditional)
    assert extra <= set(linked)


def test_r21_steps_out_of_order_are_refused(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-NJF-002")
    steps = data["steps"]
    coverage = next(i for i, s in enumerate(steps) if s["id"] == "coverage")
    steps[coverage], steps[coverage + 1] = steps[coverage + 1], steps[coverage]
    document = from_data(data, "order.yaml")
    (finding,) = [f for f in lint(document) if f.code == "step-out-of-order"]
    assert finding.step_id == "coverage"
    assert finding.line == document.step_by_id("coverage").line_of("kind")
    assert "「保险责任」（coverage）应排在步骤 exclusions「责任免除」（exclusions）之前" in (
        finding.message
    )


def test_r21_elderly_notice_missing_for_some_ages_is_caught(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-TL-003")
    data["steps"] = [s for s in data["steps"] if s["id"] != "elderly-confirm"]
    _step(data, "elderly-intro")["conditions"] = {"min_customer_age": 65}
    document = from_data(data, "elderly.yaml")
    (finding,) = _errors(document)
    assert finding.code == "mandatory-step-conditional"
    assert finding.step_id == "elderly-intro"
    assert "例如客户 60 岁时" in finding.message


def test_r21_a_mandatory_step_hidden_behind_a_condition_is_caught(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "cooling-off")["conditions"] = {"max_customer_age": 59}
    (finding,) = _errors(from_data(data, "hidden.yaml"))
    assert finding.code == "mandatory-step-conditional"
    assert "「犹豫期」" in finding.message
    assert "客户 60 岁" in finding.message


@pytest.mark.parametrize("entry_id", [entry.id for entry in forbidden_phrasing().patterns])
def test_r22_forbidden_phrasing_examples_are_caught_and_allowed_texts_are_not(
    entry_id: str,
) -> None:
    phrasing = forbidden_phrasing()
    entry = next(e for e in phrasing.patterns if e.id == entry_id)
    for example in entry.examples:
        assert entry_id in {hit.id for hit, _ in phrasing.find(example)}, example
    for allowed in entry.allowed:
        assert phrasing.find(allowed) == [], allowed


@pytest.mark.parametrize(
    ("phrase", "rule"),
    [
        ("本产品收益比银行存款高。", "compare-better-than-deposit"),
        ("与国债相比，本产品更灵活。", "compare-with-deposit"),
        ("本产品保本保息。", "principal-guarantee"),
        ("这款产品稳赚不赔。", "no-risk"),
        ("年化收益率高达百分之五。", "high-return-claim"),
        ("我们确保收益。", "guaranteed-return"),
    ],
)
def test_r22_forbidden_phrasing_in_a_step_refuses_publishing(
    phrase: str,
    rule: str,
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-NJF-002")
    _step(data, "fees")["text"] += phrase
    document = from_data(data, "phrasing.yaml")
    (finding,) = _errors(document)
    assert finding.code == "forbidden-phrasing"
    assert finding.step_id == "fees"
    assert finding.line == document.step_by_id("fees").line_of("text")
    assert f"违反禁用表述规则 {rule}" in finding.message
    assert "R-22" in finding.message


def test_r22_correct_negative_disclosures_are_not_flagged(
    sample: Callable[[str], ScriptDocument],
) -> None:
    # The investment-linked sample says 不保本, 不保证投资收益, 不是银行存款: all required warnings.
    document = sample("YA-TL-003")
    assert "不保本" in document.step_by_id("investment-risk").text
    assert _errors(document) == []


@pytest.mark.parametrize("field", ["text", "copy_text"])
def test_r21_risk_sentence_must_be_the_exact_regulatory_text(
    field: str,
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-TL-003")
    risk = _step(data, "risk-sentence")
    risk[field] = risk[field].replace("保单利益的不确定性", "保单收益的不确定性")
    document = from_data(data, "risk.yaml")
    (finding,) = _errors(document)
    assert finding.code == "risk-sentence-mismatch"
    assert finding.step_id == "risk-sentence"
    assert finding.line == document.step_by_id("risk-sentence").line_of(field)
    assert f"「{RISK_SENTENCE}」" in finding.message
    assert "原文为「利」，话术为「收」" in finding.message


def test_undefined_and_malformed_variables_name_the_step_and_line(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "premium-term")["text"] += "首期保险费{first_premium}元。"
    _step(data, "cash-value")["text"] += "详见{cash value table}。"
    document = from_data(data, "vars.yaml")
    by_code = {f.code: f for f in _errors(document)}
    undefined = by_code["undefined-variable"]
    assert undefined.step_id == "premium-term"
    assert undefined.line == document.step_by_id("premium-term").line_of("text")
    assert "{first_premium}" in undefined.message
    assert by_code["malformed-placeholder"].step_id == "cash-value"


def test_unused_variable_is_only_a_warning(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    data["variables"]["branch_code"] = {"label": "网点代码"}
    (finding,) = lint(from_data(data, "unused.yaml"))
    assert (finding.code, finding.severity) == ("unused-variable", Severity.WARNING)
    ensure_publishable(from_data(data, "unused.yaml"))  # warnings do not block


def test_r24_key_steps_need_an_affirmative_answer(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "exclusions")["answer"] = "none"
    _step(data, "signature")["answer"] = "affirmative_button"
    codes = {(f.code, f.step_id) for f in _errors(from_data(data, "answers.yaml"))}
    assert codes == {("answer-required", "exclusions"), ("signature-answer", "signature")}


def test_r21_agent_must_state_name_institution_and_licence_number(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "agent-identity")["text"] = "{customer_name}您好，我是{agent_name}。"
    data["variables"].pop("agent_licence_no")
    (finding,) = [
        f for f in _errors(from_data(data, "agent.yaml")) if f.step_id == "agent-identity"
    ]
    assert finding.code == "agent-identity-incomplete"
    assert "所属机构全称、执业证编号" in finding.message


def test_findings_print_as_file_line_code_step_message(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "complaints")["text"] += "本产品零风险。"
    document = from_data(data, "print.yaml")
    (finding,) = _errors(document)
    expected = f"print.yaml:{finding.line}: error [forbidden-phrasing] 步骤 complaints："
    assert str(finding).startswith(expected + "text 中的表述「零风险」")


def test_duplicate_step_ids_and_shadowed_built_ins_are_refused(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    _step(data, "closing")["id"] = "cooling-off"
    data["variables"]["product_name"] = {"label": "产品名称"}
    document = from_data(data, "dupes.yaml")
    by_code = {f.code: f for f in _errors(document)}
    assert set(by_code) == {"duplicate-step-id", "builtin-variable-redeclared"}
    first_line = document.step_by_id("cooling-off").line_of()
    assert f"第 {first_line} 行已使用" in by_code["duplicate-step-id"].message


def test_cooling_off_step_must_state_the_days(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-ZSS-001")
    cooling = _step(data, "cooling-off")
    cooling["text"] = cooling["text"].replace("{cooling_off_days}日", "十五日")
    assert lint(from_data(data, "days-in-words.yaml")) == []  # 十五 matches 15 days
    cooling["text"] = cooling["text"].replace("十五日", "规定期限")
    (finding,) = lint(from_data(data, "no-days.yaml"))
    assert (finding.code, finding.severity) == ("cooling-off-days-not-stated", Severity.WARNING)
