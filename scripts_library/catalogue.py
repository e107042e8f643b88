"""The sample script library (`library/`) shipped with the package, and finding script files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from scripts_library.loader import load_script
from scripts_library.model import ScriptDocument

LIBRARY_DIR = Path(__file__).parent / "library"


def script_files(roots: Iterable[str | Path] = (LIBRARY_DIR,)) -> list[Path]:
    """Every `*.yaml` / `*.yml` script file under `roots` (files are returned as given), sorted."""
    found: list[Path] = []
    for root in map(Path, roots):
        if root.is_dir():
            found.extend(
                p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
            )
        else:
            found.append(root)
    return sorted(found)


def load_library(root: str | Path = LIBRARY_DIR) -> dict[Path, ScriptDocument]:
    """Load every script under `root`; raises `ScriptLoadError` on the first invalid file."""
    return {path: load_script(path) for path in script_files([root])}
