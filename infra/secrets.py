"""The one secrets mechanism of every section (R-54): in dev and test, a missing secret is
generated once into a file of the profile's data folder (mode 0600, never in the repository);
in production it must be given, and a value found in any dev/test secrets file is refused."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The platform's keys and the channels' secrets keep their own files (existing data folders).
PLATFORM_SECRETS = "secrets.env"
CHANNEL_SECRETS = "channels-secrets.env"


class ConfigurationError(RuntimeError):
    """The configuration is unusable; the message says what to change."""


def random_key() -> str:
    """32 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _read(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


def dev_secrets(data_dir: Path, filename: str,
                generators: Mapping[str, Callable[[], str]]) -> dict[str, str]:
    """Dev/test secrets of one file, each generated on first use and kept from then on."""
    path = data_dir / filename
    values = _read(path)
    missing = [name for name in generators if name not in values]
    if missing:
        for name in missing:
            values[name] = generators[name]()
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
        path.chmod(0o600)
    return values


def dev_secret_files(filename: str) -> list[Path]:
    """The dev/test secrets files of this checkout (data/<profile>/<filename>)."""
    return sorted((PROJECT_ROOT / "data").glob(f"*/{filename}"))


def refuse_dev_secrets(given: Mapping[str, str], filename: str, what: str) -> None:
    """Production: none of `given` may be a value of a dev/test secrets file."""
    for path in dev_secret_files(filename):
        found = set(_read(path).values())
        for name, value in given.items():
            if value and value in found:
                raise ConfigurationError(f"production refuses the dev/test {what} {name} "
                                         f"from {path}")


def decode_key(name: str, value: str) -> bytes:
    """A platform key: URL-safe base64 of at least 32 bytes (the first 32 are used)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{name} must be URL-safe base64") from exc
    if len(raw) < 32:
        raise ConfigurationError(f"{name} must decode to at least 32 bytes")
    return raw[:32]
