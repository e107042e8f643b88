"""`validate FILE|DIR...`: load and lint scripts; exit 1 if any has an error (R-21, R-22)."""

from __future__ import annotations

import argparse
import json

from scripts_library.canonical import content_hash
from scripts_library.catalogue import script_files
from scripts_library.lint import Severity, lint
from scripts_library.loader import ScriptLoadError, load_script

NAME = "validate"
HELP = "校验话术文件（格式与合规检查），有错误时退出码为 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE", help="话术 YAML 文件或所在目录")
    parser.add_argument("--strict", action="store_true", help="警告也视为错误")
    parser.add_argument("--json", action="store_true", help="以 JSON 输出结果（供工具使用）")


def run(args: argparse.Namespace) -> int:
    failed = False
    report = []
    for path in script_files(args.paths):
        entry: dict[str, object] = {"file": str(path)}
        try:
            document = load_script(path)
        except ScriptLoadError as error:
            failed = True
            entry["load_errors"] = [
                {"line": p.line, "field": p.field, "message": p.message} for p in error.problems
            ]
            report.append(entry)
            if not args.json:
                for problem in error.problems:
                    print(
                        f"{problem.source}:{problem.line or '?'}: error [load] "
                        f"{problem.field + '：' if problem.field else ''}{problem.message}"
                    )
            continue
        findings = lint(document)
        errors = [f for f in findings if f.severity is Severity.ERROR]
        warnings = [f for f in findings if f.severity is Severity.WARNING]
        if errors or (args.strict and warnings):
            failed = True
        entry.update(
            content_hash=content_hash(document),
            findings=[
                {
                    "code": f.code,
                    "severity": f.severity.value,
                    "step_id": f.step_id,
                    "line": f.line,
                    "message": f.message,
                }
                for f in findings
            ],
        )
        report.append(entry)
        if not args.json:
            for finding in findings:
                print(finding)
            verdict = "可以发布" if not errors else "不能发布"
            print(
                f"{path}: {len(errors)} 个错误，{len(warnings)} 个警告 —— {verdict}"
                f"（{content_hash(document)[:19]}）"
            )
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    return 1 if failed else 0
