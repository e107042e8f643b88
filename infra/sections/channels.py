"""The channels' sections of the configuration (R-54): the WeChat official account and
mini-program (`SHUANGLU_WECHAT_*`), the bank app (`SHUANGLU_BANK_*`), the channel worker
(`SHUANGLU_CHANNELS_*`) and SMS (`SHUANGLU_SMS_*`), read by `infra.config.load_config` and
resolved here into `ChannelConfig` (`Config.channels`).

In dev and test, missing secrets (app secrets, the callback token, the AES key, bank client and
deep-link secrets) are generated once into the profile's data folder (infra/secrets.py, the file
`channels-secrets.env` next to the platform's `secrets.env`). In production a channel that is
enabled refuses to start without real secrets, or with a value found in a dev/test secrets file.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from infra.secrets import CHANNEL_SECRETS, ConfigurationError, dev_secrets, refuse_dev_secrets

MessageMode = Literal["plain", "compatible", "safe"]


class WeChatSettings(BaseModel):
    """The official account (公众号) and the mini-program (小程序)."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_WECHAT_"

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
    # The mini-program card (customer-service message, msgtype miniprogrampage): its title and
    # the thumbnail uploaded once as permanent material (media_id).
    mp_card_title: str = "保险远程双录邀请"
    mp_card_thumb_media_id: str = "MP_CARD_THUMB_MEDIA_ID"

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


class BankSettings(BaseModel):
    """The bank app: S2S API clients, status webhooks and signed deep links."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_BANK_"

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


class ChannelSettings(BaseModel):
    """The channel worker: outbox delivery, session-event feed and reminders."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_CHANNELS_"

    # False: no process runs the channel worker.
    run_worker: bool = True
    # Which processes run it (claims are safe across processes): "web", every web process
    # (the default); "worker", only where the platform's background worker runs: the `worker`
    # command, or a server with SHUANGLU_RUN_WORKER_IN_PROCESS=true (the single-process
    # embedded mode, which so runs it either way). A process without it tells the others
    # through Redis when it queued something for them (issue 14).
    worker_processes: Literal["web", "worker"] = "web"
    # The periodic pass (reminders, retries, anything a lost notification missed), and the
    # least time between two passes however often the worker is woken.
    worker_interval_seconds: float = Field(default=2.0, gt=0)
    worker_min_interval_seconds: float = Field(default=0.5, ge=0)
    outbox_lease_seconds: int = Field(default=60, ge=5)
    outbox_batch: int = Field(default=20, ge=1, le=500)
    wechat_send_max_attempts: int = Field(default=5, ge=1)


SmsEngine = Literal["off", "log", "tencent", "aliyun"]


class SmsSettings(BaseModel):
    """SMS invitations (bot/sms.py): Tencent Cloud SMS or Aliyun SMS (bot/sms_aliyun.py) in
    production, a local log in dev/test. For Aliyun, `secret_id`/`secret_key` are the AccessKey
    ID and secret and `invitation_template_id` the TemplateCode (SMS_...)."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_SMS_"

    # None: "log" in dev/test, "off" in production (SMS is then not offered).
    engine: SmsEngine | None = None
    endpoint: str = "https://sms.tencentcloudapi.com"
    region: str = "ap-guangzhou"
    secret_id: str | None = None
    secret_key: str | None = None
    sdk_app_id: str | None = None
    sign_name: str = "远程双录"
    # The approved template (Tencent): 您好，您的保险远程双录邀请已生成，请于{1}前打开链接完成：
    # <public URL>/h5/invite/{2} 链接仅限本人使用，请勿转发。 {1} the deadline, {2} the token: the
    # link's fixed start is the template's (a URL may not be a variable).
    invitation_template_id: str = "1000001"
    # How often the worker pulls delivery reports (PullSmsSendStatus) while a text awaits one.
    report_pull_seconds: float = Field(default=30.0, gt=0)
    aliyun_endpoint: str = "https://dysmsapi.aliyuncs.com"
    aliyun_region: str = "cn-hangzhou"
    # Aliyun templates name their variables: the names, comma-separated, in the order of the
    # invitation's parameters (the expiry, the link). The approved template writes the link's
    # fixed start, <public URL>/h5/invite/, before ${token}: a whole link may not be a variable.
    template_param_names: str = "until,token"


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
    sms: SmsSettings = field(default_factory=SmsSettings)
    sms_engine: SmsEngine = "off"
    data_dir: Path = Path("data")


def _random_aes_key() -> str:
    # EncodingAESKey: 43 characters, base64 of 32 bytes without the trailing "=".
    return base64.b64encode(secrets.token_bytes(32)).decode()[:43]


# How each dev/test channel secret is generated (infra/secrets.py keeps them).
GENERATORS: dict[str, Callable[[], str]] = {
    "wechat_app_id": lambda: "wx" + secrets.token_hex(8),
    "wechat_app_secret": lambda: secrets.token_hex(16),
    "wechat_token": lambda: secrets.token_hex(16),
    "wechat_encoding_aes_key": _random_aes_key,
    "wechat_mp_app_id": lambda: "wx" + secrets.token_hex(8),
    "wechat_mp_app_secret": lambda: secrets.token_hex(16),
    "bank_api_secret": lambda: secrets.token_urlsafe(32),
    "bank_webhook_secret": lambda: secrets.token_urlsafe(32),
    "bank_deep_link_key": lambda: secrets.token_urlsafe(32),
}


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


def resolve_channels(
    *, prod: bool, data_dir: Path, public_url: str, wechat: WeChatSettings, bank: BankSettings,
    worker: ChannelSettings, sms: SmsSettings,
) -> ChannelConfig:
    """The channels' sections resolved for the profile; production refuses defaults."""
    generated = {} if prod else dev_secrets(data_dir, CHANNEL_SECRETS, GENERATORS)

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
        checked = {**resolved, "deep_link_key": deep_link_key}
        for client_id, client in clients.items():
            checked[f"{client_id}.api_secret"] = client.api_secret
            checked[f"{client_id}.webhook_secret"] = client.webhook_secret
            if client.webhook_url and urlsplit(client.webhook_url).scheme != "https":
                raise ConfigurationError(f"bank client {client_id}: webhook_url must be https")
        refuse_dev_secrets(checked, CHANNEL_SECRETS, "channel secret")
        if bank.enabled:
            weak = [cid for cid, c in clients.items()
                    if len(c.api_secret) < 32 or len(c.webhook_secret) < 32]
            if weak or len(deep_link_key) < 32:
                raise ConfigurationError("bank secrets must be at least 32 characters each")
    sms_engine: SmsEngine = sms.engine or ("off" if prod else "log")
    if sms_engine in ("tencent", "aliyun"):
        needed = ("secret_id", "secret_key") + (("sdk_app_id",) if sms_engine == "tencent"
                                                 else ())
        missing = [name for name in needed if not getattr(sms, name)]
        if missing:
            raise ConfigurationError(f"SHUANGLU_SMS_ENGINE={sms_engine} needs "
                                     + ", ".join(f"SHUANGLU_SMS_{m.upper()}" for m in missing))
        endpoint, variable = ((sms.endpoint, "ENDPOINT") if sms_engine == "tencent"
                              else (sms.aliyun_endpoint, "ALIYUN_ENDPOINT"))
        if prod and urlsplit(endpoint).scheme != "https":
            raise ConfigurationError(f"SHUANGLU_SMS_{variable} must be https")
    return ChannelConfig(
        wechat=wechat, bank=bank, worker=worker, bank_clients=dict(clients),
        deep_link_key=deep_link_key.encode(), public_url=public_url, sms=sms,
        sms_engine=sms_engine, data_dir=data_dir, **resolved,
    )


