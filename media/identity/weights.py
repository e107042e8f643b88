"""Model files shipped inside installed packages, and the folders engines expect them in.

Nothing here downloads: files come from the ``face_recognition_models`` and ``rapidocr`` wheels
and are copied (once) into the cache directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path

DLIB_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
DLIB_LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"

FASNET_FILES = ("2.7_80x80_MiniFASNetV2.onnx", "4_0_0_80x80_MiniFASNetV1SE.onnx")

_copy_lock = threading.Lock()


class MissingModelError(RuntimeError):
    """A model file that must ship with an installed package is not there."""


def package_dir(distribution_module: str) -> Path:
    """The folder of an installed package, found without importing it.

    Trap: ``import face_recognition_models`` runs ``pkg_resources`` (setuptools < 81 only), so its
    folder is located from the import spec instead.
    """
    spec = importlib.util.find_spec(distribution_module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelError(f"package {distribution_module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def face_recognition_model(file_name: str) -> Path:
    """A dlib model file from the ``face_recognition_models`` package."""
    path = package_dir("face_recognition_models") / "models" / file_name
    if not path.is_file():
        raise MissingModelError(f"{file_name} not found in face_recognition_models ({path})")
    return path


def copy_once(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` unless the same file (size and mtime) is there already.

    The copy keeps the source's mtime, so a replaced source (an operator's new weights) is
    copied again; the rename makes a half-written file impossible to load.
    """
    with _copy_lock:
        src = source.stat()
        if target.is_file():
            dst = target.stat()
            if (dst.st_size, dst.st_mtime_ns) == (src.st_size, src.st_mtime_ns):
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copy2(source, tmp)
        tmp.replace(target)
        return target


def prepare_deepface_home(home: Path, fasnet_dir: Path | None = None) -> Path:
    """Fill ``home/.deepface/weights`` with the dlib files (and MiniFASNet when given).

    deepface looks for weights only in ``$DEEPFACE_HOME/.deepface/weights`` and downloads what is
    missing; with every file in place it never reaches the network.
    """
    weights = home / ".deepface" / "weights"
    for name in (DLIB_RECOGNITION, DLIB_LANDMARKS_5):
        copy_once(face_recognition_model(name), weights / name)
    if fasnet_dir is not None:
        for name in FASNET_FILES:
            copy_once(fasnet_dir / name, weights / name)
    return home


def fasnet_weights_present(fasnet_dir: Path | None) -> bool:
    return fasnet_dir is not None and all((fasnet_dir / n).is_file() for n in FASNET_FILES)
