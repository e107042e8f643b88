"""The requirement-to-test map (R-02): which code and which tests name each R-xx, read from the
source itself — docstrings, test names (`..._R24`, `..._R23_R40`) and comments — so the map
can never drift from the code; how those tests ran in one JUnit XML report from pytest (only
what that report records); and the Ningbo articles each requirement implements."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from reporting.catalogue import NINGBO_ARTICLES, REQUIREMENTS

ID_TEXT = re.compile(r"\bR-(\d{2})\b")
ID_NAME = re.compile(r"(?:^|_)R(\d{2})(?=_|$)")
CODE_DIRS = ("app", "api", "security", "workflow", "models", "bot", "h5", "media",
             "scripts_library", "qa", "archive", "reporting")
SKIP_PARTS = {"migrations", "__pycache__", ".venv", "node_modules"}


@dataclass
class TestRef:
    node_id: str  # tests/x/test_y.py::test_z
    how: str  # name | docstring | module
    outcome: str = "not run"  # passed | failed | error | skipped | not run


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

    def outcome_counts(self) -> dict[str, int]:
        found = dict.fromkeys((*OUTCOMES, "not run"), 0)
        for ref in self.tests:
            found[ref.outcome] += 1
        return found

    def gaps(self, run: TestRun | None) -> list[str]:
        """Why this requirement is not shown to be met by this pack (English codes)."""
        gaps = []
        if not self.code:
            gaps.append("no code names it")
        if not self.tests:
            gaps.append("no test names it")
        elif run is None:
            gaps.append("no test report")
        else:
            counts = self.outcome_counts()
            if counts["failed"] or counts["error"]:
                gaps.append("a test failed")
            if not counts["passed"]:
                gaps.append("no test passed in the report")
        return gaps


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


OUTCOMES = ("passed", "failed", "error", "skipped")
RANK = {"error": 4, "failed": 3, "skipped": 1, "passed": 0}
COMMIT_SUITE = re.compile(r"^commit-([0-9a-f]{7,40}|unknown)(-dirty)?$")


@dataclass(frozen=True)
class CaseResult:
    """One <testcase> of the report, as recorded."""

    case_id: str  # tests/x/test_y.py::test_z[sqlite]
    node_id: str  # tests/x/test_y.py::test_z (parameters folded)
    outcome: str  # passed | failed | error | skipped
    message: str = ""


@dataclass
class TestRun:
    """What one pytest `--junitxml` report says, and nothing else: every number is read from
    it. `recorded` holds the totals of the <testsuite> attributes, `counts` the outcomes of the
    <testcase> elements (they agree for a normal pytest report)."""

    cases: list[CaseResult] = field(default_factory=list)
    recorded: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    timestamp: str = ""
    suite_names: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # node id without params -> outcome

    @property
    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(OUTCOMES, 0)
        for case in self.cases:
            found[case.outcome] += 1
        return found

    @property
    def tests(self) -> int:
        return len(self.cases)

    @property
    def failures(self) -> int:
        return self.counts["failed"]

    @property
    def errors(self) -> int:
        return self.counts["error"]

    @property
    def skipped(self) -> int:
        return self.counts["skipped"]

    @property
    def commit(self) -> tuple[str | None, bool | None]:
        """The commit bin/test names the suite after (`commit-<sha>[-dirty]`); (None, None)
        when the report does not say (pytest run directly: suite name "pytest")."""
        for name in self.suite_names:
            match = COMMIT_SUITE.match(name)
            if match:
                sha = None if match.group(1) == "unknown" else match.group(1)
                return sha, bool(match.group(2))
        return None, None

    @property
    def totals_agree(self) -> bool:
        return (int(self.recorded.get("tests", -1)) == self.tests
                and int(self.recorded.get("failures", -1)) == self.failures
                and int(self.recorded.get("errors", -1)) == self.errors
                and int(self.recorded.get("skipped", -1)) == self.skipped)


def _case_node(classname: str, name: str) -> tuple[str, str]:
    parts = classname.split(".")
    # classname "tests.qa.test_x" or "tests.qa.test_x.TestClass"
    module = [p for p in parts if not p.startswith("Test")]
    klass = [p for p in parts if p.startswith("Test")]
    prefix = "/".join(module) + ".py::" + "".join(f"{k}::" for k in klass)
    return prefix + name, prefix + name.split("[", 1)[0]


def read_junit(path: Path) -> TestRun:
    """pytest's `--junitxml` report. Parametrised cases fold into their function for the map
    (the worst case wins: error, failed, skipped, passed); `cases` keeps each one."""
    root = ET.parse(path).getroot()  # noqa: S314 - our own test run's report
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    run = TestRun(recorded=dict.fromkeys(("tests", "failures", "errors", "skipped"), 0))
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            run.recorded[key] += int(suite.get(key, 0))
        run.seconds += float(suite.get("time", 0))
        run.timestamp = run.timestamp or suite.get("timestamp", "")
        run.suite_names.append(suite.get("name", ""))
        for case in suite.iter("testcase"):
            case_id, node = _case_node(case.get("classname", ""), case.get("name", ""))
            error, failure = case.find("error"), case.find("failure")
            skipped = case.find("skipped")
            if error is not None:
                outcome, detail = "error", error
            elif failure is not None:
                outcome, detail = "failed", failure
            elif skipped is not None:
                outcome, detail = "skipped", skipped
            else:
                outcome, detail = "passed", None
            message = (detail.get("message", "") if detail is not None else "")[:300]
            run.cases.append(CaseResult(case_id, node, outcome, message))
            previous = run.outcomes.get(node)
            if previous is None or RANK[outcome] > RANK[previous]:
                run.outcomes[node] = outcome
    return run


def source_tests(root: Path) -> dict[str, set[str]]:
    """Every test function in tests/ (node id) with the R-ids it carries (possibly none)."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / "tests").rglob("test_*.py")):
        if SKIP_PARTS & set(path.parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        relative = path.relative_to(root).as_posix()
        for node in tree.body:
            for func, prefix in _test_functions(node):
                found[f"{relative}::{prefix}{func.name}"] = set()
    for rid, refs in scan_tests(root).items():
        for ref in refs:
            found.setdefault(ref.node_id, set()).add(rid)
    return found


def not_run(run: TestRun | None, tests: dict[str, set[str]]) -> list[dict[str, object]]:
    """Tests that did not run in this report: cases it records as skipped, and test functions
    in the source tree it does not mention at all (deselected, not collected, another test
    selection, or written after the run). Without a report, every test."""
    items: list[dict[str, object]] = []
    if run is not None:
        for case in run.cases:
            if case.outcome == "skipped":
                items.append({"test": case.case_id, "reason": "skipped",
                              "message": case.message,
                              "requirements": sorted(tests.get(case.node_id, set()))})
    ran = {case.node_id for case in run.cases} if run is not None else set()
    for node_id, ids in sorted(tests.items()):
        if node_id not in ran:
            items.append({"test": node_id, "reason": "absent from the report" if run else
                          "no report", "message": "", "requirements": sorted(ids)})
    return items


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


def ningbo_map(entries: list[RequirementEntry], run: TestRun | None) -> list[dict[str, object]]:
    """Each Ningbo article → its R-ids → their code and tests and how those ran in the report.
    An article is `not mapped` when no R-id implements it, a `gap` when one of its R-ids has a
    gap, else `evidenced`."""
    by_id = {e.id: e for e in entries}
    rows: list[dict[str, object]] = []
    for article in NINGBO_ARTICLES:
        reqs = []
        for rid in article.requirements:
            entry = by_id.get(rid)
            counts = entry.outcome_counts() if entry else {}
            reqs.append({"id": rid, "code": len(entry.code) if entry else 0,
                         "tests": len(entry.tests) if entry else 0, "outcomes": counts,
                         "gaps": entry.gaps(run) if entry else ["not in the catalogue"]})
        if not article.requirements:
            status = "not mapped"
        elif any(r["gaps"] for r in reqs):
            status = "gap"
        else:
            status = "evidenced"
        rows.append({"article": article.ref, "summary": article.summary_zh,
                     "note": article.note_zh, "requirements": reqs, "status": status})
    return rows
