"""`hash FILE...`: the content hash that identifies each script version (R-23)."""

from __future__ import annotations

import argparse

from scripts_library.canonical import content_hash
from scripts_library.loader import ScriptLoadError, load_script

NAME = "hash"
HELP = "显示话术版本的内容哈希（发布后用于锁定版本）"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE", help="话术 YAML 文件")


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.paths:
        try:
            document = load_script(path)
        except ScriptLoadError as error:
            print(error)
            status = 2
            continue
        print(
            f"{content_hash(document)}  {document.script.code} v{document.script.version}  {path}"
        )
    return status
