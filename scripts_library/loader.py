"""Load a script version from YAML into a `ScriptDocument`, with errors that name file, line, field.

PyYAML's plain `safe_load` forgets where values came from, so the loader composes the node tree,
builds plain Python data from it while recording each path's line, validates the data with the
pydantic models, and maps every validation error back to its line. Duplicate keys, which YAML
silently resolves by keeping the last one, are refused: in a script they are always a mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from scripts_library.model import ScriptDocument, attach_lines

PathKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """One reason a file could not be loaded."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        field = f" [{self.field}]" if self.field else ""
        return f"{where}:{field} {self.message}"


class ScriptLoadError(Exception):
    """The file is not a valid script; `problems` lists every reason found, in file order."""

    def __init__(self, problems: Sequence[LoadProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def load_script(path: str | Path) -> ScriptDocument:
    """Load and validate the script version in `path` (UTF-8 YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ScriptLoadError(
            [LoadProblem(str(path), None, "", f"文件不是 UTF-8 编码：{error.reason}")]
        ) from error
    except OSError as error:
        raise ScriptLoadError(
            [LoadProblem(str(path), None, "", f"无法读取文件：{error.strerror}")]
        ) from error
    return load_script_text(text, str(path))


def load_script_text(text: str, source_name: str) -> ScriptDocument:
    """Load and validate a script version given as YAML text; `source_name` names it in errors."""
    data, lines = _compose(text, source_name)
    if not isinstance(data, dict):
        raise ScriptLoadError(
            [LoadProblem(source_name, lines.get((), 1), "", "文件顶层应为映射（键: 值）")]
        )
    try:
        document = ScriptDocument.model_validate(data)
    except ValidationError as error:
        problems = [_problem(source_name, data, lines, detail) for detail in error.errors()]
        raise ScriptLoadError(_dedupe_sorted(problems)) from None
    attach_lines(document, lines, ())
    document._source_name = source_name
    return document


def _compose(text: str, source_name: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        # The reader checks the characters when it is made: a control character is refused here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as error:
        raise ScriptLoadError([LoadProblem(source_name, None, "", f"YAML 错误：{error}")]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise ScriptLoadError([LoadProblem(source_name, 1, "", "文件为空")])
        lines: dict[PathKey, int] = {(): root.start_mark.line + 1}
        problems: list[LoadProblem] = []
        data = _build(loader, root, (), lines, problems, source_name)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = error.problem or str(error)
        raise ScriptLoadError(
            [LoadProblem(source_name, line, "", f"YAML 语法错误：{detail}")]
        ) from None
    except yaml.YAMLError as error:
        raise ScriptLoadError([LoadProblem(source_name, None, "", f"YAML 错误：{error}")]) from None
    finally:
        loader.dispose()
    if problems:
        raise ScriptLoadError(problems)
    return data, lines


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: PathKey,
    lines: dict[PathKey, int],
    problems: list[LoadProblem],
    source_name: str,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<` merge keys the way safe_load would
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int)):
                problems.append(
                    LoadProblem(source_name, key_line, _dotted((*path, "?")), "键必须是文本")
                )
                continue
            child = (*path, key)
            if key in result:
                problems.append(
                    LoadProblem(
                        source_name,
                        key_line,
                        _dotted(child),
                        f"键「{key}」重复（第 {lines[child]} 行已出现）；YAML 会静默丢弃前一个值",
                    )
                )
                continue
            # A field is reported at the line of its key, where the product owner reads its name.
            lines[child] = key_line
            result[key] = _build(loader, value_node, child, lines, problems, source_name)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            child = (*path, index)
            lines[child] = item_node.start_mark.line + 1
            items.append(_build(loader, item_node, child, lines, problems, source_name))
        return items
    return loader.construct_object(node, deep=True)


def _dotted(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _data_path(data: Any, loc: Sequence[Any]) -> PathKey:
    """The part of a pydantic `loc` that addresses the input data (drops union tags etc.)."""
    path: list[Any] = []
    current = data
    for position, part in enumerate(loc):
        is_last = position == len(loc) - 1
        if _has_child(current, part):
            path.append(part)
            current = current[part]
        elif part == "[key]":
            continue
        elif is_last:
            path.append(part)  # a missing or unknown field: name it although it has no value
        # else: a union tag or model name that pydantic adds to the loc, not part of the data
    return tuple(path)


def _has_child(container: Any, part: Any) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


def _problem(
    source_name: str, data: Any, lines: dict[PathKey, int], detail: ErrorDetails
) -> LoadProblem:
    path = _data_path(data, detail["loc"])
    probe = path
    while probe not in lines and probe:
        probe = probe[:-1]
    field = _dotted(path)
    step_id = _step_id(data, path)
    if step_id:
        field = f"{field}（步骤 {step_id}）"
    return LoadProblem(source_name, lines.get(probe), field, _message(detail))


def _step_id(data: Any, path: PathKey) -> str | None:
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps")
        if isinstance(steps, list) and path[1] < len(steps) and isinstance(steps[path[1]], dict):
            step_id = steps[path[1]].get("id")
            return str(step_id) if step_id is not None else None
    return None


_MESSAGES: dict[str, str] = {
    "missing": "缺少必填字段",
    "extra_forbidden": "未知字段（是否拼写错误？）",
    "string_type": "应为文本（数字或日期样式的值请加引号）",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "int_from_float": "应为整数",
    "bool_type": "应为 true 或 false",
    "bool_parsing": "应为 true 或 false",
    "list_type": "应为列表",
    "dict_type": "应为映射（键: 值）",
    "model_type": "应为映射（键: 值）",
    "model_attributes_type": "应为映射（键: 值）",
    "string_too_short": "不能为空",
    "too_short": "至少需要 {min_length} 项",
}


def _message(detail: ErrorDetails) -> str:
    kind = detail["type"]
    context = detail.get("ctx") or {}
    if kind in ("enum", "literal_error"):
        expected = str(context.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"取值「{detail['input']}」无效，可选值：{expected}"
    if kind == "string_pattern_mismatch":
        return f"取值「{detail['input']}」格式不符（应匹配 {context.get('pattern', '')}）"
    if kind == "string_too_long":
        return f"过长（最多 {context.get('max_length')} 个字符）"
    if kind in ("greater_than_equal", "greater_than"):
        bound = context.get("ge", context.get("gt"))
        return f"取值 {detail['input']} 过小（应不小于 {bound}）"
    if kind in ("less_than_equal", "less_than"):
        bound = context.get("le", context.get("lt"))
        return f"取值 {detail['input']} 过大（应不大于 {bound}）"
    if kind == "value_error":
        return str(context.get("error", detail["msg"]))
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**context)
    return detail["msg"]


def _dedupe_sorted(problems: list[LoadProblem]) -> list[LoadProblem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda problem: (problem.line or 0, problem.field))
