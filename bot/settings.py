"""The channels' settings (R-54). Their sections (`SHUANGLU_WECHAT_*`, `SHUANGLU_BANK_*`,
`SHUANGLU_CHANNELS_*`, `SHUANGLU_SMS_*`) are read and resolved once, with the platform's, by
`infra.config.load_config` (`Config.channels`, models in `infra.sections.channels`); the channel
components receive that `ChannelConfig`."""

from __future__ import annotations

import json

from infra.config import Config
from infra.sections.channels import (
    BankClient,
    BankSettings,
    ChannelConfig,
    ChannelSettings,
    MessageMode,
    SmsEngine,
    SmsSettings,
    WeChatSettings,
    resolve_channels,
)

__all__ = ["BankClient", "BankSettings", "ChannelConfig", "ChannelSettings", "MessageMode",
           "SmsEngine", "SmsSettings", "WeChatSettings", "describe", "load_channel_config"]


def load_channel_config(
    config: Config, wechat: WeChatSettings | None = None, bank: BankSettings | None = None,
    worker: ChannelSettings | None = None, sms: SmsSettings | None = None,
) -> ChannelConfig:
    """The configuration's channels; with a section given, resolved again with it in place of
    the loaded one (the same production checks)."""
    channels = config.channels
    if wechat is None and bank is None and worker is None and sms is None:
        return channels
    return resolve_channels(
        prod=config.profile == "prod", data_dir=config.data_dir, public_url=config.public_url,
        wechat=wechat or channels.wechat, bank=bank or channels.bank,
        worker=worker or channels.worker, sms=sms or channels.sms)


def describe(config: ChannelConfig) -> str:
    """A log line that names what is configured without revealing a secret."""
    return json.dumps({
        "wechat_app_id": config.app_id, "message_mode": config.wechat.message_mode,
        "mp_app_id": config.mp_app_id, "bank_clients": sorted(config.bank_clients),
        "sms_engine": config.sms_engine,
    })
