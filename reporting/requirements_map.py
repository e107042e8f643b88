"""The requirement-to-test map (R-02): which code and which tests name each R-xx, read from the
source itself — docstrings, test names (`..._R24`, `..._R23_R40`) and comments — so the map
can never drift from the code; and how those tests last ran (JUnit XML from pytest)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from reporting.catalogue import REQUIREMENTS

ID_TEXT = re.compile(r"\bR-(\d{2})\b")
ID_NAME = re.compile(r"(?:^|_)R(\d{2})(?=_|$)")
CODE_DIRS = ("app", "api", "security", "workflow", "models", "bot", "h5", "media",
             "scripts_library", "qa", "archive", "reporting")
SKIP_PARTS = {"migrations", "__pycache__", ".venv", "node_modules"}


@dataclass
class TestRef:
    node_id: str  # tests/x/test_y.py::test_z
    how: str  # name | docstring | module
    outcome: str = "not run"  # passed | failed | skipped | not run


@dataclass
class RequirementEntry:
    id: str
    title: str
    title_zh: str
    code: list[str] = field(default_factory=list)  # path:line
    tests: list[TestRef] = field(default_factory=list)

    @property
    def covered(self) -> bool:
        return bool(self.tests)


def _ids(text: str) -> set[str]:
    return {f"R-{m}" for m in ID_TEXT.findall(text)}


def _name_ids(name: str) -> set[str]:
    return {f"R-{m}" for m in ID_NAME.findall(name)}


def scan_code(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for folder in CODE_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".py", ".js", ".html", ".yaml") or \
                    SKIP_PARTS & set(path.parts):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8",
                                                         errors="replace").splitlines(), 1):
                for rid in _ids(line):
                    found[rid].append(f"{path.relative_to(root)}:{number}")
    return found


def scan_tests(root: Path) -> dict[str, list[TestRef]]:
    found: dict[str, list[TestRef]] = defaultdict(list)
    for path in sorted((root / "tests").rglob("test_*.py")):
        if SKIP_PARTS & set(path.parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_ids = _ids(ast.get_docstring(tree) or "")
        relative = path.relative_to(root).as_posix()
        for node in tree.body:
            for func, prefix in _test_functions(node):
                node_id = f"{relative}::{prefix}{func.name}"
                by_name = _name_ids(func.name)
                by_doc = _ids(ast.get_docstring(func) or "") - by_name
                for rid in sorted(by_name):
                    found[rid].append(TestRef(node_id, "name"))
                for rid in sorted(by_doc):
                    found[rid].append(TestRef(node_id, "docstring"))
                for rid in sorted(module_ids - by_name - by_doc):
                    found[rid].append(TestRef(node_id, "module"))
    return found


def _test_functions(node: ast.stmt) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
        return [(node, "")]
    if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
        return [(item, f"{node.name}::") for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                and item.name.startswith("test")]
    return []


@dataclass
class TestRun:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    timestamp: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)  # node id without params -> outcome


def read_junit(path: Path) -> TestRun:
    """pytest's `--junitxml` report; parametrised cases fold into their function (a function
    passes only when every case passed)."""
    root = ET.parse(path).getroot()  # noqa: S314 - our own test run's report
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    run = TestRun()
    rank = {"failed": 3, "skipped": 1, "passed": 0}
    for suite in suites:
        run.tests += int(suite.get("tests", 0))
        run.failures += int(suite.get("failures", 0))
        run.errors += int(suite.get("errors", 0))
        run.skipped += int(suite.get("skipped", 0))
        run.seconds += float(suite.get("time", 0))
        run.timestamp = run.timestamp or suite.get("timestamp", "")
        for case in suite.iter("testcase"):
            classname = case.get("classname", "")
            name = case.get("name", "").split("[", 1)[0]
            parts = classname.split(".")
            # classname "tests.qa.test_x" or "tests.qa.test_x.TestClass"
            module = [p for p in parts if not p.startswith("Test")]
            klass = [p for p in parts if p.startswith("Test")]
            node = "/".join(module) + ".py::" + "".join(f"{k}::" for k in klass) + name
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            elif case.find("skipped") is not None:
                outcome = "skipped"
            else:
                outcome = "passed"
            previous = run.outcomes.get(node)
            if previous is None or rank[outcome] > rank[previous]:
                run.outcomes[node] = outcome
    return run


def build_map(root: Path, run: TestRun | None = None) -> list[RequirementEntry]:
    code = scan_code(root)
    tests = scan_tests(root)
    ids = sorted(set(REQUIREMENTS) | set(code) | set(tests))
    entries = []
    for rid in ids:
        title, title_zh = REQUIREMENTS.get(rid, ("(not in the catalogue)", "（目录外）"))
        refs = tests.get(rid, [])
        if run is not None:
            for ref in refs:
                ref.outcome = run.outcomes.get(ref.node_id, "not run")
        entries.append(RequirementEntry(rid, title, title_zh, code.get(rid, []), refs))
    return entries
