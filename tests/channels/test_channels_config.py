"""Channel settings per profile (R-54): dev/test secrets generated once outside the repository,
production refusing to start without real ones or with a dev/test value. The channels are a
section of the one configuration (`load_config` resolves them, `Config.channels`);
`load_channel_config` re-resolves it with a section replaced, through the same checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.settings import BankSettings, WeChatSettings, load_channel_config
from infra.config import Config, ConfigurationError, Settings, load_config

AES = "a" * 43
BANK = json.dumps({"b": {"institution": "B", "api_secret": "s" * 40, "webhook_secret": "w" * 40,
                         "webhook_url": "https://bank.example/hooks"}})


@pytest.fixture(autouse=True)
def _no_channel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("SHUANGLU_WECHAT_", "SHUANGLU_BANK_", "SHUANGLU_CHANNELS_")):
            monkeypatch.delenv(key)


OFF = {"shuanglu_wechat_enabled": "false", "shuanglu_bank_enabled": "false"}


def _prod(tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    """The prod profile with the given environment (channels off unless `env` says)."""
    keys = {n: f"{c * 43}" for n, c in (("secret_key", "A"), ("field_encryption_key", "B"),
                                        ("seal_signing_key", "C"))}
    return load_config(Settings(profile="prod", data_dir=tmp_path, database_url="postgres://x/y",
                                **keys),  # type: ignore[arg-type]
                       env=OFF if env is None else env)


def test_dev_channel_secrets_are_generated_once_outside_the_repository_R54(
    tmp_path: Path,
) -> None:
    config = load_config(Settings(profile="dev", data_dir=tmp_path / "dev"))
    first = load_channel_config(config)
    again = load_channel_config(config)
    assert first.app_secret == again.app_secret and first.token == again.token
    assert len(first.encoding_aes_key) == 43 and first.app_id.startswith("wx")
    path = tmp_path / "dev" / "channels-secrets.env"
    assert path.stat().st_mode & 0o777 == 0o600
    other = load_channel_config(load_config(Settings(profile="test", data_dir=tmp_path / "t")))
    assert other.app_secret != first.app_secret


def test_production_refuses_to_start_without_channel_secrets_R54(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SHUANGLU_WECHAT_APP_ID"):
        _prod(tmp_path, {})
    with pytest.raises(ConfigurationError, match="SHUANGLU_BANK"):
        _prod(tmp_path, {"shuanglu_wechat_enabled": "false"})
    config = _prod(tmp_path)
    assert not config.channels.wechat.enabled and not config.channels.bank.enabled
    assert load_channel_config(config) is config.channels
    with pytest.raises(ConfigurationError, match="SHUANGLU_WECHAT_APP_ID"):
        load_channel_config(config, wechat=WeChatSettings())


def test_production_channel_secrets_from_their_environment_variables_R54(
        tmp_path: Path) -> None:
    env = {"shuanglu_wechat_app_id": "wxprod", "shuanglu_wechat_app_secret": "p" * 32,
           "shuanglu_wechat_token": "prodToken1", "shuanglu_wechat_encoding_aes_key": AES,
           "shuanglu_wechat_mp_app_id": "wxmp", "shuanglu_wechat_mp_app_secret": "m" * 32,
           "shuanglu_wechat_message_mode": "compatible", "shuanglu_bank_clients": BANK,
           "shuanglu_bank_deep_link_key": "k" * 40, "shuanglu_channels_outbox_batch": "7",
           "shuanglu_sms_engine": "log", "shuanglu_sms_report_pull_seconds": "12"}
    channels = _prod(tmp_path, env).channels
    assert (channels.app_id, channels.token, channels.mp_app_secret) == (
        "wxprod", "prodToken1", "m" * 32)
    assert channels.wechat.message_mode == "compatible"
    assert channels.bank_clients["b"].webhook_url == "https://bank.example/hooks"
    assert channels.deep_link_key == b"k" * 40 and channels.worker.outbox_batch == 7
    assert channels.sms_engine == "log" and channels.sms.report_pull_seconds == 12
    with pytest.raises(ConfigurationError, match="SHUANGLU_SMS_SECRET_ID"):
        _prod(tmp_path, {**env, "shuanglu_sms_engine": "tencent"})


def test_production_refuses_weak_or_malformed_channel_secrets(tmp_path: Path) -> None:
    config = _prod(tmp_path)
    good = {"app_id": "wxprod", "app_secret": "p" * 32, "token": "prodToken1",
            "encoding_aes_key": AES, "mp_app_id": "wxmp", "mp_app_secret": "m" * 32}
    bank = BankSettings(clients=json.loads(BANK), deep_link_key="k" * 40)
    ok = load_channel_config(config, wechat=WeChatSettings.model_validate(good), bank=bank)
    assert ok.wechat.message_mode == "safe" and ok.bank_clients["b"].institution == "B"
    with pytest.raises(ConfigurationError, match="43 characters"):
        bad_key = WeChatSettings.model_validate({**good, "encoding_aes_key": "x"})
        load_channel_config(config, wechat=bad_key, bank=bank)
    with pytest.raises(ConfigurationError, match="TOKEN"):
        bad_token = WeChatSettings.model_validate({**good, "token": "bad token!"})
        load_channel_config(config, wechat=bad_token, bank=bank)
    weak = BankSettings(clients=json.loads(BANK), deep_link_key="short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_channel_config(config, wechat=WeChatSettings.model_validate(good), bank=weak)
    http = json.loads(BANK)
    http["b"]["webhook_url"] = "http://bank.example/hooks"
    with pytest.raises(ConfigurationError, match="https"):
        load_channel_config(config, wechat=WeChatSettings.model_validate(good),
                            bank=BankSettings(clients=http, deep_link_key="k" * 40))


def test_production_refuses_a_dev_channel_secret(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.secrets

    monkeypatch.setattr(infra.secrets, "PROJECT_ROOT", tmp_path / "repo")
    dev = load_channel_config(load_config(Settings(profile="dev",
                                                   data_dir=tmp_path / "repo/data/dev")))
    good = {"app_id": "wxprod", "app_secret": dev.app_secret, "token": "prodToken1",
            "encoding_aes_key": AES, "mp_app_id": "wxmp", "mp_app_secret": "m" * 32}
    bank = BankSettings(clients=json.loads(BANK), deep_link_key="k" * 40)
    with pytest.raises(ConfigurationError, match="dev/test channel secret app_secret"):
        load_channel_config(_prod(tmp_path / "p"), wechat=WeChatSettings.model_validate(good),
                            bank=bank)
