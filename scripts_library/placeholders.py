"""Parsing of `{variable}` placeholders in step texts; `{{` and `}}` stand for literal braces."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A `{name}` occurrence; `offset` is its index in the text."""

    name: str
    offset: int


@dataclass(frozen=True, slots=True)
class MalformedPlaceholder:
    """A brace that is not part of a valid `{name}`: a typo a product owner must fix."""

    fragment: str
    offset: int


def scan(text: str) -> tuple[list[Placeholder], list[MalformedPlaceholder]]:
    """All placeholders and all malformed brace fragments of `text`, in order."""
    found: list[Placeholder] = []
    malformed: list[MalformedPlaceholder] = []
    for match in _TOKEN.finditer(text):
        piece = match.group(0)
        if piece in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is not None and _NAME.match(name):
            found.append(Placeholder(name, match.start()))
        else:
            malformed.append(MalformedPlaceholder(piece, match.start()))
    return found, malformed


def names(text: str) -> set[str]:
    """The set of variable names used in `text`."""
    return {placeholder.name for placeholder in scan(text)[0]}


def substitute(text: str, value_of: Callable[[str], str]) -> str:
    """Replace every `{name}` with `value_of(name)` and unescape doubled braces."""

    def replace(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece in ("{{", "}}"):
            return piece[0]
        name = match.group(1)
        if name is None or not _NAME.match(name):
            raise ValueError(f"malformed placeholder {piece!r} at offset {match.start()}")
        return value_of(name)

    return _TOKEN.sub(replace, text)
