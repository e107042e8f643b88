"""`diff OLD NEW`: the readable difference between two script versions."""

from __future__ import annotations

import argparse

from scripts_library.diff import diff_documents
from scripts_library.loader import ScriptLoadError, load_script

NAME = "diff"
HELP = "比较两个话术版本的差异"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="OLD", help="旧版本文件")
    parser.add_argument("new", metavar="NEW", help="新版本文件")
    parser.add_argument("--context", type=int, default=2, help="差异上下文行数（默认 2）")


def run(args: argparse.Namespace) -> int:
    try:
        old, new = load_script(args.old), load_script(args.new)
    except ScriptLoadError as error:
        print(error)
        return 2
    result = diff_documents(old, new, context=args.context)
    if result.unified:
        print(result.unified)
    print(result.summary())
    return 0
