"""Rendering a script for one session: conditions applied, every variable filled (R-21, R-24)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from scripts_library import (
    InvalidValueError,
    MissingValuesError,
    ProductType,
    RenderContext,
    RenderError,
    ScriptDocument,
    Speaker,
    StepKind,
    content_hash,
    render,
    static_speech_steps,
)

PRODUCTS = ["YA-ZSS-001", "YA-NJF-002", "YA-TL-003"]
PLACEHOLDER = re.compile(r"[{}]")


@pytest.mark.parametrize("product_code", PRODUCTS)
@pytest.mark.parametrize(("age", "insured_differs"), [(35, False), (60, True), (75, False)])
def test_r21_rendering_fills_every_variable(
    product_code: str,
    age: int,
    insured_differs: bool,
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    document = sample(product_code)
    values = order_values(product_code)
    rendered = render(
        document,
        RenderContext(customer_age=age, values=values, policyholder_is_insured=not insured_differs),
    )
    for step in rendered.steps:
        assert not PLACEHOLDER.search(step.text), (step.id, step.text)
        assert not PLACEHOLDER.search(step.copy_text or ""), step.id
    spoken = "".join(step.text for step in rendered.steps)
    assert str(values["customer_name"]) in spoken
    assert str(values["agent_licence_no"]) in spoken
    assert document.product.insurer in spoken
    assert rendered.content_hash == content_hash(document)
    assert (rendered.script_code, rendered.script_version) == (
        document.script.code,
        document.script.version,
    )


def test_r21_elderly_steps_are_played_from_age_60(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    document = sample("YA-ZSS-001")
    values = order_values("YA-ZSS-001")

    def kinds(age: int) -> list[StepKind]:
        steps = render(document, RenderContext(customer_age=age, values=values)).steps
        return [step.kind for step in steps]

    assert StepKind.ELDERLY_NOTICE not in kinds(59)
    assert kinds(60).count(StepKind.ELDERLY_NOTICE) == 2
    assert len(kinds(60)) == len(kinds(59)) + 2
    ids_60 = [s.id for s in render(document, RenderContext(customer_age=60, values=values)).steps]
    # Order is the script's: the elderly opening comes right after the opening prompt.
    assert ids_60[:3] == ["opening", "elderly-intro", "agent-identity"]


def test_insured_confirmation_only_when_the_insured_is_someone_else(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    document = sample("YA-NJF-002")
    values = order_values("YA-NJF-002")
    same = render(document, RenderContext(customer_age=40, values=values))
    other = render(
        document, RenderContext(customer_age=40, values=values, policyholder_is_insured=False)
    )
    assert "insured-consent" not in [s.id for s in same.steps]
    consent = next(s for s in other.steps if s.id == "insured-consent")
    assert "王小明您好，投保人王建国为您投保了甬安鑫享年金保险（分红型）" in consent.text


def test_product_type_condition_selects_steps(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    document = sample("YA-TL-003")
    steps = list(document.steps)
    extra = steps[2].model_copy(
        update={
            "id": "linked-only",
            "kind": StepKind.OTHER,
            "conditions": steps[2].conditions.model_copy(
                update={"product_types": [ProductType.INVESTMENT_LINKED]}
            ),
        }
    )
    never = extra.model_copy(
        update={
            "id": "traditional-only",
            "conditions": extra.conditions.model_copy(
                update={"product_types": [ProductType.TRADITIONAL]}
            ),
        }
    )
    edited = document.model_copy(update={"steps": [*steps, extra, never]})
    ids = [s.id for s in render(edited, RenderContext(40, order_values("YA-TL-003"))).steps]
    assert "linked-only" in ids
    assert "traditional-only" not in ids


def test_missing_values_are_all_listed_never_left_blank(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    document = sample("YA-ZSS-001")
    values = order_values("YA-ZSS-001")
    del values["premium"]
    del values["agent_licence_no"]
    values["institution_full_name"] = "   "  # blank is missing
    with pytest.raises(MissingValuesError) as caught:
        render(document, RenderContext(customer_age=45, values=values))
    assert caught.value.missing == ["agent_licence_no", "institution_full_name", "premium"]
    assert caught.value.message == (
        "缺少以下变量的取值，无法生成话术：agent_licence_no（销售人员执业证编号）、"
        "institution_full_name（销售人员所属机构全称）、premium（每期保险费）"
    )


def test_values_needed_only_by_inapplicable_steps_are_not_required(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    values = order_values("YA-ZSS-001")
    del values["insured_name"]  # only the insured-consent step uses it
    render(sample("YA-ZSS-001"), RenderContext(customer_age=45, values=values))
    with pytest.raises(MissingValuesError, match="insured_name"):
        render(
            sample("YA-ZSS-001"),
            RenderContext(customer_age=45, values=values, policyholder_is_insured=False),
        )


def test_values_are_formatted_by_their_declared_type(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    values = order_values("YA-ZSS-001")
    values["premium"] = "12,000.50"
    rendered = render(sample("YA-ZSS-001"), RenderContext(customer_age=45, values=values))
    premium_step = next(s for s in rendered.steps if s.id == "premium-term")
    assert "每期保险费为人民币12,000.50元，基本保险金额为人民币200,000元" in premium_step.text
    assert "保险期间为终身" in premium_step.text

    values["premium"] = "一万二"
    with pytest.raises(InvalidValueError, match="premium"):
        render(sample("YA-ZSS-001"), RenderContext(customer_age=45, values=values))


def test_built_in_variables_come_from_the_product_metadata(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    rendered = render(sample("YA-NJF-002"), RenderContext(40, order_values("YA-NJF-002")))
    by_id = {step.id: step for step in rendered.steps}
    assert "本产品的犹豫期为15日" in by_id["cooling-off"].text
    assert "保险期间为至被保险人85周岁" in by_id["product"].text
    assert "客户服务电话400-000-5678" in by_id["complaints"].text


def test_an_order_for_another_product_type_is_refused(
    sample: Callable[[str], ScriptDocument],
    order_values: Callable[[str], dict[str, object]],
) -> None:
    context = RenderContext(
        customer_age=40,
        values=order_values("YA-ZSS-001"),
        product_type=ProductType.INVESTMENT_LINKED,
    )
    with pytest.raises(RenderError, match="不一致"):
        render(sample("YA-ZSS-001"), context)


def test_publish_time_speech_has_only_order_independent_tts_steps(
    sample: Callable[[str], ScriptDocument],
) -> None:
    document = sample("YA-TL-003")
    static = static_speech_steps(document)
    assert static
    assert all(step.speaker is Speaker.TTS for step in static)
    assert all(not PLACEHOLDER.search(step.text) for step in static)
    ids = {step.id for step in static}
    assert "cooling-off" in ids  # uses only the built-in {cooling_off_days}
    assert "opening" not in ids  # needs the customer's name
    assert "agent-identity" not in ids  # spoken by the agent
