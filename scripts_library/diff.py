"""A readable difference between two script versions, for the reviewer who approves a version.

Both documents are written out in a stable line-per-fact form (metadata, variables, then each
step with its text split into sentences), and compared with a unified diff, so a one-word change
in a long disclosure shows as one changed sentence, not a whole rewritten paragraph.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from scripts_library.model import Conditions, ScriptDocument, Step

_SENTENCE_END = re.compile(r"(?<=[。！？；])")


@dataclass(frozen=True, slots=True)
class ScriptDiff:
    """What changed from `old` to `new`: a unified diff plus a summary by step id."""

    unified: str
    added_steps: list[str] = field(default_factory=list)
    removed_steps: list[str] = field(default_factory=list)
    changed_steps: list[str] = field(default_factory=list)
    reordered: bool = False
    metadata_changed: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.unified

    def summary(self) -> str:
        """One Chinese line for people: what kind of change this version is."""
        if self.is_empty:
            return "两个版本内容相同"
        parts = []
        if self.metadata_changed:
            parts.append("产品信息或变量有变化")
        if self.added_steps:
            parts.append("新增步骤 " + "、".join(self.added_steps))
        if self.removed_steps:
            parts.append("删除步骤 " + "、".join(self.removed_steps))
        if self.changed_steps:
            parts.append("修改步骤 " + "、".join(self.changed_steps))
        if self.reordered:
            parts.append("步骤顺序有调整")
        return "；".join(parts)


def diff_documents(old: ScriptDocument, new: ScriptDocument, *, context: int = 2) -> ScriptDiff:
    """Compare two versions (usually of the same script) step by step and line by line."""
    old_name = f"{old.script.code} v{old.script.version}"
    new_name = f"{new.script.code} v{new.script.version}"
    unified = "\n".join(
        difflib.unified_diff(
            describe(old), describe(new), fromfile=old_name, tofile=new_name, n=context, lineterm=""
        )
    )
    old_steps = {step.id: step for step in old.steps}
    new_steps = {step.id: step for step in new.steps}
    common_old = [step.id for step in old.steps if step.id in new_steps]
    common_new = [step.id for step in new.steps if step.id in old_steps]
    return ScriptDiff(
        unified=unified,
        added_steps=[step_id for step_id in new_steps if step_id not in old_steps],
        removed_steps=[step_id for step_id in old_steps if step_id not in new_steps],
        changed_steps=[
            step_id
            for step_id in common_new
            if _step_lines(old_steps[step_id]) != _step_lines(new_steps[step_id])
        ],
        reordered=common_old != common_new,
        metadata_changed=_metadata_lines(old) != _metadata_lines(new),
    )


def describe(document: ScriptDocument) -> list[str]:
    """The document as stable, diff-friendly lines."""
    lines = _metadata_lines(document)
    for position, step in enumerate(document.steps, start=1):
        lines.append("")
        lines.append(f"[{position:02d}] 步骤 {step.id}")
        lines.extend(_step_lines(step))
    return lines


def _metadata_lines(document: ScriptDocument) -> list[str]:
    script, product = document.script, document.product
    lines = [
        f"话术编号: {script.code}",
        f"版本: {script.version}",
        f"标题: {script.title}",
        f"说明: {script.notes}",
        f"产品代码: {product.code}",
        f"产品名称: {product.name}",
        f"保险公司: {product.insurer}",
        f"产品类型: {product.type.value}（{product.type.label}）",
        f"保险期间: {product.term_description}",
        f"销售渠道: {product.channel.value}",
        f"产品分级: {product.grade.value}",
        f"犹豫期: {product.cooling_off_days} 日",
        f"客服电话: {product.service_hotline}",
    ]
    for name, decl in sorted(document.variables.items()):
        described = f"（{decl.description}）" if decl.description else ""
        lines.append(f"变量 {name}: {decl.label} [{decl.type.value}]{described}")
    return lines


def _step_lines(step: Step) -> list[str]:
    lines = [
        f"    类型: {step.kind.value}（{step.kind.label}）",
        f"    标题: {step.title}",
        f"    朗读: {step.speaker.value}",
        f"    应答: {step.answer.value}",
        f"    超时: {step.timeout_seconds} 秒",
    ]
    if step.document is not None:
        lines.append(f"    出示文件: {step.document_title}")
        if not isinstance(step.document, str):
            source = step.document.file or step.document.generated
            lines.append(f"    文件: {source}（sha256 {step.document.sha256 or '未登记'}，"
                         f"每页至少 {step.document.min_page_seconds} 秒）")
    if step.max_cer is not None:
        lines.append(f"    抄录容错（字错率上限）: {step.max_cer}")
    if step.copy_text is not None:
        lines.append(f"    抄录内容: {step.copy_text}")
    conditions = _conditions_text(step.conditions)
    if conditions:
        lines.append(f"    条件: {conditions}")
    lines.append("    文本:")
    lines.extend(f"      {sentence}" for sentence in _sentences(step.text))
    return lines


def _conditions_text(conditions: Conditions) -> str:
    parts = []
    if conditions.min_customer_age is not None:
        parts.append(f"客户年龄 ≥ {conditions.min_customer_age}")
    if conditions.max_customer_age is not None:
        parts.append(f"客户年龄 ≤ {conditions.max_customer_age}")
    if conditions.product_types is not None:
        parts.append("产品类型 ∈ " + "、".join(t.value for t in conditions.product_types))
    if conditions.policyholder_is_insured is not None:
        parts.append(
            "投保人即被保险人" if conditions.policyholder_is_insured else "投保人与被保险人不同"
        )
    return "；".join(parts)


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
