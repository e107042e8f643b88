"""The process environment and the `.env` file, read once by `infra.config.load_config` (R-54).

Every section of the configuration is a plain pydantic model; `load_section` fills one from the
variables that start with its prefix (e.g. `SHUANGLU_WECHAT_`), the way pydantic-settings did
when each section read the environment on its own: names are case-insensitive, the process
environment wins over `.env`, and a list, mapping or nested model is given as JSON.
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from dotenv import dotenv_values
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
Environment = Mapping[str, str]


def read_environment(env_file: Path | None = Path(".env"),
                     environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`.env` (when it exists) overlaid by the process environment, names lower-cased."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        for key, value in dotenv_values(env_file, encoding="utf-8").items():
            if value is not None:
                merged[key.lower()] = value
    for key, value in (os.environ if environ is None else environ).items():
        merged[key.lower()] = value
    return merged


def _is_complex(annotation: Any) -> bool:
    """A value pydantic-settings would have decoded as JSON (list, dict, tuple, model)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_complex(a) for a in get_args(annotation) if a is not type(None))
    if origin in (list, dict, tuple, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, (BaseModel, list, dict))


def section_values(model: type[BaseModel], prefix: str, env: Environment) -> dict[str, Any]:
    """The fields of `model` that `env` sets under `prefix` (e.g. SHUANGLU_QA_)."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}".lower()
        if key not in env:
            continue
        raw = env[key]
        if _is_complex(field.annotation):
            try:
                values[name] = json.loads(raw)
            except ValueError as exc:
                raise ValueError(f"{key.upper()} must be JSON") from exc
        else:
            values[name] = raw
    return values


def load_section(model: type[M], prefix: str, env: Environment, **given: Any) -> M:
    """`model` from the variables under `prefix`; `given` values win over the environment."""
    return model.model_validate({**section_values(model, prefix, env), **given})
