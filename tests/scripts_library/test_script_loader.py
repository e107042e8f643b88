"""Loading script files: the format, errors that name file, line and field, the content hash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from scripts_library import (
    ProductType,
    ScriptDocument,
    ScriptLoadError,
    content_hash,
    load_script,
    load_script_text,
)


def _error(text: str, name: str = "product.yaml") -> ScriptLoadError:
    with pytest.raises(ScriptLoadError) as caught:
        load_script_text(text, name)
    return caught.value


def test_every_sample_script_loads(sample_file: Path) -> None:
    document = load_script(sample_file)
    assert document.source_name == str(sample_file)
    assert document.product.code == sample_file.parent.name
    assert document.script.version == 1
    assert len({step.id for step in document.steps}) == len(document.steps)


def test_samples_cover_the_three_required_product_kinds(
    sample: Callable[[str], ScriptDocument],
) -> None:
    whole_life = sample("YA-ZSS-001")
    annuity = sample("YA-NJF-002")
    linked = sample("YA-TL-003")
    assert (whole_life.product.type, whole_life.product.channel.value) == (
        ProductType.TRADITIONAL,
        "bank",
    )
    assert whole_life.product.term_description == "终身"
    assert annuity.product.type is ProductType.PARTICIPATING
    assert annuity.product.term_description == "至被保险人85周岁"
    assert linked.product.type is ProductType.INVESTMENT_LINKED
    assert linked.product.term_years == 30


def test_load_error_names_file_line_and_field(
    sample_data: Callable[[str], dict[str, Any]], tmp_path: Path
) -> None:
    data = sample_data("YA-ZSS-001")
    data["steps"][3]["answer"] = "nod"  # step is-insurance
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    expected_line = next(
        number
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip() == "answer: nod"
    )
    with pytest.raises(ScriptLoadError) as caught:
        load_script(path)
    (problem,) = caught.value.problems
    assert problem.source == str(path)
    assert problem.line == expected_line
    assert problem.field == "steps[3].answer（步骤 is-insurance）"
    assert "nod" in problem.message
    assert "affirmative_button" in problem.message
    assert f"{path}:{expected_line}:" in str(caught.value)


def test_every_problem_in_a_file_is_reported_with_its_line() -> None:
    text = """\
schema_version: 1
script: {code: X-1, version: 1, title: 测试}
product:
  code: X-1
  name: 测试产品
  insurer: 甬安人寿保险股份有限公司
  type: dividend
  term: {years: 20}
  channel: bank
  grade: basic
  cooling_off_days: 15
  service_hotline: "12378"
steps:
  - id: s1
    kind: coverage
    txet: 错字段
  - id: s2
    kind: exclusions
    text: 责任免除
    timeout_seconds: 2
"""
    problems = {(p.line, p.field): p.message for p in _error(text).problems}
    assert "取值「dividend」无效" in problems[(7, "product.type")]
    assert problems[(14, "steps[0].text（步骤 s1）")] == "缺少必填字段"
    assert "未知字段" in problems[(16, "steps[0].txet（步骤 s1）")]
    assert "不小于 5" in problems[(20, "steps[1].timeout_seconds（步骤 s2）")]


def test_duplicate_keys_are_refused_not_silently_overwritten() -> None:
    text = "schema_version: 1\nscript:\n  code: A\n  code: B\n"
    (problem,) = _error(text).problems
    assert problem.line == 4
    assert problem.field == "script.code"
    assert "重复" in problem.message
    assert "第 3 行" in problem.message


def test_yaml_syntax_error_names_its_line() -> None:
    text = "schema_version: 1\nsteps:\n  - id: a\n    text: {customer_name}您好\n"
    (problem,) = _error(text, "syntax.yaml").problems
    assert problem.source == "syntax.yaml"
    assert problem.line == 4
    assert "YAML 语法错误" in problem.message


def test_unquoted_number_where_text_is_expected_is_explained() -> None:
    text = "schema_version: 1\nscript: {code: A, version: 1, title: 9}\n"
    problems = _error(text).problems
    title = next(p for p in problems if p.field == "script.title")
    assert title.line == 2
    assert "加引号" in title.message


def test_handwritten_copy_needs_the_text_to_copy(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    data = sample_data("YA-NJF-002")
    risk = next(step for step in data["steps"] if step["id"] == "risk-sentence")
    del risk["copy_text"]
    with pytest.raises(ScriptLoadError) as caught:
        from_data(data, "copy.yaml")
    assert "copy_text" in caught.value.problems[0].message


def test_lines_are_remembered_for_steps_and_fields(sample: Callable[[str], ScriptDocument]) -> None:
    document = sample("YA-ZSS-001")
    lines = Path(document.source_name or "").read_text(encoding="utf-8").splitlines()
    step = document.step_by_id("cooling-off")
    assert lines[(step.line_of() or 0) - 1].strip() == "- id: cooling-off"
    assert lines[(step.line_of("text") or 0) - 1].strip().startswith("text:")
    assert lines[(document.product.line_of("type") or 0) - 1].strip() == "type: traditional"


def test_content_hash_ignores_formatting_but_not_meaning(
    sample: Callable[[str], ScriptDocument],
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
) -> None:
    original = sample("YA-TL-003")
    data = sample_data("YA-TL-003")
    reformatted = from_data(data, "reformatted.yaml")  # comments gone, keys re-emitted
    assert content_hash(reformatted) == content_hash(original)
    assert content_hash(original).startswith("sha256:")
    assert len(content_hash(original)) == len("sha256:") + 64

    data["steps"][0]["answer"] = "affirmative_button"  # the default, now written out
    assert content_hash(from_data(data, "explicit-default.yaml")) == content_hash(original)

    data["steps"][5]["text"] += "。"
    assert content_hash(from_data(data, "changed.yaml")) != content_hash(original)


def test_a_loaded_version_cannot_be_changed_in_memory(
    sample: Callable[[str], ScriptDocument],
) -> None:
    document = sample("YA-ZSS-001")
    with pytest.raises(pydantic.ValidationError):
        document.steps[0].text = "篡改"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        document.product.cooling_off_days = 10  # type: ignore[misc]
