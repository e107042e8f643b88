"""Settings of the channels (R-54): the WeChat official account and mini-program
(`SHUANGLU_WECHAT_*`), the bank app (`SHUANGLU_BANK_*`) and the channel worker
(`SHUANGLU_CHANNELS_*`).

In dev and test, missing secrets (app secrets, the callback token, the AES key, bank client and
deep-link secrets) are generated once into the profile's data folder, next to the platform's own
`secrets.env`. In production a channel that is enabled refuses to start without real secrets,
or with a value found in a dev/test secrets file.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config import PROJECT_ROOT, Config, ConfigurationError

SECRETS_FILE = "channels-secrets.env"
MessageMode = Literal["plain", "compatible", "safe"]


class WeChatSettings(BaseSettings):
    """The official account (公众号) and the mini-program (小程序)."""

    model_config = SettingsConfigDict(
        env_prefix="SHUANGLU_WECHAT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    enabled: bool = True
    app_id: str | None = None
    app_secret: str | None = None
    # The callback token (令牌) and EncodingAESKey (消息加解密密钥) set in the MP console.
    token: str | None = None
    encoding_aes_key: str | None = None
    # 明文 / 兼容 / 安全模式: "safe" refuses unencrypted messages.
    message_mode: MessageMode = "safe"
    api_base_url: str = "https://api.weixin.qq.com"
    oauth_base_url: str = "https://open.weixin.qq.com/connect/"
    qrcode_show_url: str = "https://mp.weixin.qq.com/cgi-bin/showqrcode"
    mp_app_id: str | None = None
    mp_app_secret: str | None = None

    invitation_template_id: str = "TPL_INVITATION"
    reminder_template_id: str = "TPL_REMINDER"
    agent_notice_template_id: str = "TPL_AGENT_NOTICE"
    subscribe_template_id: str = "TPL_SUBSCRIBE_INVITATION"
    mp_reminder_template_id: str = "MP_TPL_REMINDER"
    mp_status_template_id: str = "MP_TPL_STATUS"
    mp_invitation_page: str = "pages/session/index"
    sms_signature: str = "【远程双录】"

    reply_deadline_seconds: float = Field(default=4.0, gt=0, le=4.5)
    max_message_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    timestamp_tolerance_seconds: int = Field(default=300, ge=30)
    dedup_ttl_seconds: int = Field(default=600, ge=60)
    api_timeout_seconds: float = Field(default=5.0, gt=0)
    executor_threads: int = Field(default=4, ge=1, le=64)
    openid_messages_per_minute: int = Field(default=30, ge=1)
    ip_requests_per_minute: int = Field(default=3000, ge=1)
    invitations_per_agent_per_hour: int = Field(default=60, ge=1)
    opens_per_ip_per_minute: int = Field(default=30, ge=1)
    bind_attempts_per_openid: int = Field(default=5, ge=1)
    qrcode_max_seconds: int = Field(default=30 * 24 * 3600, ge=60, le=30 * 24 * 3600)
    reminder_lead_seconds: int = Field(default=2 * 3600, ge=60)
    handoff_idle_seconds: int = Field(default=30 * 60, ge=60)
    binding_code_ttl_seconds: int = Field(default=600, ge=60)
    # A customer who opened a WeChat link may come back through it from the same WeChat user.
    allow_reentry: bool = True
    mp_token_ttl_seconds: int = Field(default=15 * 60, ge=60)


class BankClient(BaseModel):
    """One bank-app backend allowed to call the server-to-server API."""

    institution: str = Field(min_length=1, max_length=32)
    api_secret: str = Field(min_length=16)
    webhook_secret: str = Field(min_length=16)
    webhook_url: str | None = None
    deep_link_base: str = "bankapp://shuanglu/open"


class BankSettings(BaseSettings):
    """The bank app: S2S API clients, status webhooks and signed deep links."""

    model_config = SettingsConfigDict(
        env_prefix="SHUANGLU_BANK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    enabled: bool = True
    # JSON: {"client-id": {"institution": "CODE", "api_secret": "...", "webhook_secret": "...",
    #                      "webhook_url": "https://...", "deep_link_base": "app://..."}}
    clients: dict[str, BankClient] | None = None
    deep_link_key: str | None = None
    timestamp_tolerance_seconds: int = Field(default=300, ge=30)
    nonce_ttl_seconds: int = Field(default=900, ge=60)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    requests_per_minute: int = Field(default=600, ge=1)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_base_seconds: float = Field(default=2.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=600.0, gt=0)
    webhook_give_up_after_seconds: int = Field(default=3 * 24 * 3600, ge=60)
    launch_link_ttl_seconds: int = Field(default=600, ge=30)


class ChannelSettings(BaseSettings):
    """The channel worker: outbox delivery, session-event feed and reminders."""

    model_config = SettingsConfigDict(
        env_prefix="SHUANGLU_CHANNELS_", env_file=".env", env_file_encoding="utf-8",
        extra="ignore",
    )

    # Every web process runs the channel worker (claims are safe across processes).
    run_worker: bool = True
    worker_interval_seconds: float = Field(default=2.0, gt=0)
    outbox_lease_seconds: int = Field(default=60, ge=5)
    outbox_batch: int = Field(default=20, ge=1, le=500)
    wechat_send_max_attempts: int = Field(default=5, ge=1)


@dataclass(frozen=True)
class ChannelConfig:
    """Resolved channel settings, with every secret present."""

    wechat: WeChatSettings
    bank: BankSettings
    worker: ChannelSettings
    app_id: str
    app_secret: str
    token: str
    encoding_aes_key: str
    mp_app_id: str
    mp_app_secret: str
    bank_clients: dict[str, BankClient]
    deep_link_key: bytes
    public_url: str


def _random_aes_key() -> str:
    # EncodingAESKey: 43 characters, base64 of 32 bytes without the trailing "=".
    return base64.b64encode(secrets.token_bytes(32)).decode()[:43]


def _generated_defaults() -> dict[str, str]:
    return {
        "wechat_app_id": "wx" + secrets.token_hex(8),
        "wechat_app_secret": secrets.token_hex(16),
        "wechat_token": secrets.token_hex(16),
        "wechat_encoding_aes_key": _random_aes_key(),
        "wechat_mp_app_id": "wx" + secrets.token_hex(8),
        "wechat_mp_app_secret": secrets.token_hex(16),
        "bank_api_secret": secrets.token_urlsafe(32),
        "bank_webhook_secret": secrets.token_urlsafe(32),
        "bank_deep_link_key": secrets.token_urlsafe(32),
    }


def _load_or_create(data_dir: Path) -> dict[str, str]:
    """Dev/test channel secrets, created on first use (mode 0600), never in the repository."""
    path = data_dir / SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    defaults = _generated_defaults()
    missing = [k for k in defaults if k not in values]
    if missing:
        for key in missing:
            values[key] = defaults[key]
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
        path.chmod(0o600)
    return values


def _dev_values() -> set[str]:
    found: set[str] = set()
    for path in (PROJECT_ROOT / "data").glob(f"*/{SECRETS_FILE}"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line:
                found.add(line.split("=", 1)[1].strip())
    return found


def _check_aes_key(value: str) -> None:
    if len(value) != 43:
        raise ConfigurationError("SHUANGLU_WECHAT_ENCODING_AES_KEY must be 43 characters")
    try:
        raw = base64.b64decode(value + "=")
    except ValueError as exc:
        raise ConfigurationError("SHUANGLU_WECHAT_ENCODING_AES_KEY must be base64") from exc
    if len(raw) != 32:
        raise ConfigurationError("SHUANGLU_WECHAT_ENCODING_AES_KEY must decode to 32 bytes")


_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{3,32}$")


def load_channel_config(
    config: Config, wechat: WeChatSettings | None = None, bank: BankSettings | None = None,
    worker: ChannelSettings | None = None,
) -> ChannelConfig:
    """Resolve the channel settings for the platform's profile; production refuses defaults."""
    wechat = wechat or WeChatSettings()
    bank = bank or BankSettings()
    worker = worker or ChannelSettings()
    prod = config.profile == "prod"
    generated = {} if prod else _load_or_create(config.data_dir)

    def pick(value: str | None, key: str, env: str, needed: bool) -> str:
        if value:
            return value
        if prod and needed:
            raise ConfigurationError(f"production refuses to start without {env}")
        return generated.get(key, "")

    wx = wechat.enabled
    resolved = {
        "app_id": pick(wechat.app_id, "wechat_app_id", "SHUANGLU_WECHAT_APP_ID", wx),
        "app_secret": pick(wechat.app_secret, "wechat_app_secret", "SHUANGLU_WECHAT_APP_SECRET",
                           wx),
        "token": pick(wechat.token, "wechat_token", "SHUANGLU_WECHAT_TOKEN", wx),
        "encoding_aes_key": pick(wechat.encoding_aes_key, "wechat_encoding_aes_key",
                                 "SHUANGLU_WECHAT_ENCODING_AES_KEY", wx),
        "mp_app_id": pick(wechat.mp_app_id, "wechat_mp_app_id", "SHUANGLU_WECHAT_MP_APP_ID", wx),
        "mp_app_secret": pick(wechat.mp_app_secret, "wechat_mp_app_secret",
                              "SHUANGLU_WECHAT_MP_APP_SECRET", wx),
    }
    deep_link_key = pick(bank.deep_link_key, "bank_deep_link_key", "SHUANGLU_BANK_DEEP_LINK_KEY",
                         bank.enabled)
    clients = bank.clients
    if clients is None:
        if prod and bank.enabled:
            raise ConfigurationError("production refuses to start without SHUANGLU_BANK_CLIENTS")
        clients = {"demo-bank": BankClient(
            institution="DEMO-BANK", api_secret=generated.get("bank_api_secret", "x" * 32),
            webhook_secret=generated.get("bank_webhook_secret", "y" * 32),
        )}

    if wx:
        if not _TOKEN_RE.match(resolved["token"]):
            raise ConfigurationError("SHUANGLU_WECHAT_TOKEN must be 3-32 letters or digits")
        _check_aes_key(resolved["encoding_aes_key"])
    if prod:
        dev = _dev_values()
        checked = {**resolved, "deep_link_key": deep_link_key}
        for client_id, client in clients.items():
            checked[f"{client_id}.api_secret"] = client.api_secret
            checked[f"{client_id}.webhook_secret"] = client.webhook_secret
            if client.webhook_url and urlsplit(client.webhook_url).scheme != "https":
                raise ConfigurationError(f"bank client {client_id}: webhook_url must be https")
        for name, value in checked.items():
            if value and value in dev:
                raise ConfigurationError(f"production refuses the dev/test channel secret {name}")
        if bank.enabled:
            weak = [cid for cid, c in clients.items()
                    if len(c.api_secret) < 32 or len(c.webhook_secret) < 32]
            if weak or len(deep_link_key) < 32:
                raise ConfigurationError("bank secrets must be at least 32 characters each")
    return ChannelConfig(
        wechat=wechat, bank=bank, worker=worker, bank_clients=dict(clients),
        deep_link_key=deep_link_key.encode(), public_url=config.public_url, **resolved,
    )


def describe(config: ChannelConfig) -> str:
    """A log line that names what is configured without revealing a secret."""
    return json.dumps({
        "wechat_app_id": config.app_id, "message_mode": config.wechat.message_mode,
        "mp_app_id": config.mp_app_id, "bank_clients": sorted(config.bank_clients),
    })
