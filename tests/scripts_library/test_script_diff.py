"""Differences between two script versions, as a reviewer reads them before approving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scripts_library import ScriptDocument, diff_documents


def test_identical_versions_have_no_difference(sample: Callable[[str], ScriptDocument]) -> None:
    result = diff_documents(sample("YA-ZSS-001"), sample("YA-ZSS-001"))
    assert result.is_empty
    assert result.summary() == "两个版本内容相同"


def test_a_changed_sentence_shows_as_one_changed_line(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
    sample: Callable[[str], ScriptDocument],
) -> None:
    old = sample("YA-ZSS-001")
    data = sample_data("YA-ZSS-001")
    data["script"]["version"] = 2
    waiting = next(step for step in data["steps"] if step["id"] == "waiting-grace")
    waiting["text"] = waiting["text"].replace("九十日的等待期", "一百八十日的等待期")
    waiting["text"] = waiting["text"].replace("九十日内", "一百八十日内")
    new = from_data(data, "v2.yaml")

    result = diff_documents(old, new)
    lines = result.unified.splitlines()
    assert lines[0] == "--- YA-ZSS-001-BANK v1"
    assert lines[1] == "+++ YA-ZSS-001-BANK v2"
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert len(removed) == 2
    assert removed[0] == "-版本: 1"
    assert removed[1].startswith("-      本产品设有九十日的等待期：")
    assert len(added) == 2
    assert "一百八十日" in added[1]
    assert result.changed_steps == ["waiting-grace"]
    assert result.metadata_changed
    assert "修改步骤 waiting-grace" in result.summary()


def test_added_removed_and_reordered_steps_are_summarised(
    sample_data: Callable[[str], dict[str, Any]],
    from_data: Callable[[dict[str, Any], str], ScriptDocument],
    sample: Callable[[str], ScriptDocument],
) -> None:
    old = sample("YA-TL-003")
    data = sample_data("YA-TL-003")
    steps = data["steps"]
    steps.remove(next(s for s in steps if s["id"] == "suitability"))
    steps.insert(1, {"id": "privacy", "kind": "other", "text": "我们将依法保护您的个人信息。"})
    steps[3], steps[4] = steps[4], steps[3]
    result = diff_documents(old, from_data(data, "v2.yaml"))
    assert result.added_steps == ["privacy"]
    assert result.removed_steps == ["suitability"]
    assert result.reordered
    assert "+      我们将依法保护您的个人信息。" in result.unified.splitlines()
