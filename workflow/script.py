"""Pinning the steps of a published script version to a session (R-23).

The session keeps the concrete steps it will play (conditions applied, variables filled), so that
what was played is known even if the library changes later.
"""

from __future__ import annotations

import string
from typing import Any

from workflow.errors import InvalidInput


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)


def _applies(step: dict[str, Any], context: dict[str, Any]) -> bool:
    conditions = step.get("conditions") or {}
    min_age = conditions.get("min_customer_age")
    if min_age is not None and (context.get("customer_age") or 0) < int(min_age):
        return False
    types = conditions.get("product_types")
    return not (types and context.get("product_type") not in types)


def pin_steps(document: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    """The ordered steps for this customer; a missing variable is an error, never a blank."""
    steps: list[dict[str, Any]] = []
    missing: set[str] = set()
    values = _Strict({k: v for k, v in context.items() if v is not None})
    for step in document.get("steps", []):
        if not _applies(step, context):
            continue
        text = str(step.get("text", ""))
        for _, name, _, _ in string.Formatter().parse(text):
            if name and name not in values:
                missing.add(name)
        if missing:
            continue
        answer = step.get("answer", "affirmative_button")
        steps.append({
            "id": step["id"],
            "kind": step.get("kind", ""),
            "speaker": step.get("speaker", "tts"),
            "answer": answer,
            "text": text.format_map(values),
        })
    if missing:
        raise InvalidInput(
            "script_values_missing",
            "话术缺少以下信息，无法开始录制：" + "、".join(sorted(missing)),
            missing=sorted(missing),
        )
    return steps
