"""Command line of the script library: `python -m scripts_library COMMAND ...`.

Each command is a module in this package with `NAME`, `HELP`, `add_arguments(parser)` and
`run(args) -> int`; adding a command (e.g. `publish`, wired to the database) means adding a
module and listing it in `COMMANDS`. Output is for product owners, so it is in Chinese.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Protocol, cast

from scripts_library.cli import diff, hash_command, publish, render, validate
from scripts_library.documents import Folders, use_folders


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: list[ModuleType] = [validate, diff, render, hash_command, publish]


def build_parser(commands: Sequence[ModuleType] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser with one subcommand per entry of `commands`."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts_library", description="产品话术库：校验、比较、渲染话术版本"
    )
    parser.add_argument("--documents-dir", type=Path, default=None, metavar="DIR",
                        help="话术所引用文件的目录（默认：话术库目录）")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands:
        command = cast(Command, module)
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    # Product owners' terminals on Windows may not default to UTF-8; Chinese must not crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    args = build_parser().parse_args(argv)
    if args.documents_dir is not None:
        use_folders(Folders(documents=args.documents_dir))
    handler = cast(Callable[[argparse.Namespace], int], args.handler)
    return handler(args)
