"""Channel settings per profile (R-54): dev/test secrets generated once outside the repository,
production refusing to start without real ones or with a dev/test value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import Config, ConfigurationError, Settings, load_config
from bot.settings import BankSettings, WeChatSettings, load_channel_config

AES = "a" * 43
BANK = json.dumps({"b": {"institution": "B", "api_secret": "s" * 40, "webhook_secret": "w" * 40,
                         "webhook_url": "https://bank.example/hooks"}})


@pytest.fixture(autouse=True)
def _no_channel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("SHUANGLU_WECHAT_", "SHUANGLU_BANK_", "SHUANGLU_CHANNELS_")):
            monkeypatch.delenv(key)


def _prod(tmp_path: Path) -> Config:
    keys = {n: f"{c * 43}" for n, c in (("secret_key", "A"), ("field_encryption_key", "B"),
                                        ("seal_signing_key", "C"))}
    return load_config(Settings(profile="prod", data_dir=tmp_path, database_url="postgres://x/y",
                                **keys))  # type: ignore[arg-type]


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
    config = _prod(tmp_path)
    with pytest.raises(ConfigurationError, match="SHUANGLU_WECHAT_APP_ID"):
        load_channel_config(config)
    wechat = WeChatSettings(enabled=False)
    with pytest.raises(ConfigurationError, match="SHUANGLU_BANK"):
        load_channel_config(config, wechat=wechat)
    bank = BankSettings(enabled=False)
    assert load_channel_config(config, wechat=wechat, bank=bank)


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
    import bot.settings as settings_module

    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path / "repo")
    dev = load_channel_config(load_config(Settings(profile="dev",
                                                   data_dir=tmp_path / "repo/data/dev")))
    good = {"app_id": "wxprod", "app_secret": dev.app_secret, "token": "prodToken1",
            "encoding_aes_key": AES, "mp_app_id": "wxmp", "mp_app_secret": "m" * 32}
    bank = BankSettings(clients=json.loads(BANK), deep_link_key="k" * 40)
    with pytest.raises(ConfigurationError, match="dev/test channel secret app_secret"):
        load_channel_config(_prod(tmp_path / "p"), wechat=WeChatSettings.model_validate(good),
                            bank=bank)
