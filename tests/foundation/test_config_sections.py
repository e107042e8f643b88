"""One configuration (issue 18 item 1, R-54): `load_config` reads the environment and `.env`
once and holds every section (platform, channels, QA, archive, insurers, identity) under the
environment variable names they always had; production refuses what it must in that one place."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from infra.config import ConfigurationError, Settings, load_config
from infra.environment import read_environment
from media.identity.results import Challenge

INSURERS = json.dumps({"core": {"institution": "INS", "api_secret": "i" * 32,
                                "webhook_secret": "j" * 32}})
SAMPLING = json.dumps({"default_share": 0.25, "rules": []})
CHANNELS_OFF = {"shuanglu_wechat_enabled": "false", "shuanglu_bank_enabled": "false"}


def _key(fill: int) -> str:
    return base64.urlsafe_b64encode(bytes([fill]) * 32).decode().rstrip("=")


def _prod(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"shuanglu_profile": "prod", "shuanglu_data_dir": str(tmp_path / "prod"),
            "database_url": "postgres://x@127.0.0.1/x", "shuanglu_secret_key": _key(1),
            "shuanglu_field_encryption_key": _key(2), "shuanglu_seal_signing_key": _key(3),
            **CHANNELS_OFF, **more}


def test_every_section_loads_from_its_environment_variables_R54(tmp_path: Path) -> None:
    env = {
        "shuanglu_profile": "test", "shuanglu_data_dir": str(tmp_path / "data"),
        "shuanglu_port": "8099", "redis_url": "redis://127.0.0.1:6399/0",
        "database_url": "sqlite:///tmp/x.sqlite3",
        "shuanglu_wechat_message_mode": "compatible", "shuanglu_wechat_app_id": "wxgiven",
        "shuanglu_bank_requests_per_minute": "77", "shuanglu_bank_clients": json.dumps(
            {"b": {"institution": "B", "api_secret": "s" * 32, "webhook_secret": "w" * 32}}),
        "shuanglu_channels_run_worker": "false", "shuanglu_channels_outbox_batch": "9",
        "shuanglu_sms_engine": "off",
        "shuanglu_qa_min_width": "800", "shuanglu_qa_sampling": SAMPLING,
        "shuanglu_qa_alert_hours_before_deadline": "[48]",
        "shuanglu_archive_retention_years_long_term": "12",
        "shuanglu_archive_storage_url": "s3://bucket/prefix",
        "shuanglu_insurer_clients": INSURERS, "shuanglu_insurer_webhook_max_attempts": "4",
        "shuanglu_liveness_challenges": "blink,turn_left",
        "shuanglu_live_liveness_required": "true",
        "shuanglu_anti_spoof_weights_dir": str(tmp_path / "fasnet"),
        "shuanglu_cache_dir": str(tmp_path / "cache"),
        "shuanglu_call_include_loopback": "false",
    }
    config = load_config(env=env)
    assert config.profile == "test" and config.settings.port == 8099
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.redis_url == "redis://127.0.0.1:6399/0"
    assert config.database_url == "sqlite:///tmp/x.sqlite3"
    channels = config.channels
    assert channels.wechat.message_mode == "compatible" and channels.app_id == "wxgiven"
    assert channels.bank.requests_per_minute == 77 and set(channels.bank_clients) == {"b"}
    assert not channels.worker.run_worker and channels.worker.outbox_batch == 9
    assert channels.sms_engine == "off"
    assert config.qa.min_width == 800 and config.qa.alert_hours_before_deadline == [48]
    assert config.qa.sampling_config().default_share == 0.25
    assert config.archive.retention_years_long_term == 12
    assert config.archive.storage_url == "s3://bucket/prefix"
    assert config.insurer.clients["core"].institution == "INS"
    assert config.insurer.webhook_max_attempts == 4
    assert config.identity.liveness.challenges == (Challenge.BLINK, Challenge.TURN_LEFT)
    assert config.live_liveness_required is True
    assert config.live_liveness_spot_checks == 2  # issue 15: required, unset -> two
    assert config.identity.anti_spoof.weights_dir == tmp_path / "fasnet"
    assert config.identity.cache_dir == tmp_path / "cache"
    assert config.settings.call_include_loopback is False


def test_env_file_is_read_and_the_process_environment_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "SHUANGLU_QA_MIN_WIDTH=1024\nSHUANGLU_WECHAT_MESSAGE_MODE=plain\n"
        f"SHUANGLU_DATA_DIR={tmp_path / 'data'}\nSHUANGLU_PROFILE=test\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for key in ("SHUANGLU_PROFILE", "SHUANGLU_DATA_DIR", "SHUANGLU_QA_MIN_WIDTH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SHUANGLU_WECHAT_MESSAGE_MODE", "safe")
    assert read_environment()["shuanglu_qa_min_width"] == "1024"
    config = load_config()
    assert config.profile == "test" and config.data_dir == (tmp_path / "data").resolve()
    assert config.qa.min_width == 1024  # from .env
    assert config.channels.wechat.message_mode == "safe"  # the process environment wins


def test_production_refuses_what_it_must_in_load_config_R54(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(env=_prod(tmp_path)).profile == "prod"
    cases = [
        ({"shuanglu_secret_key": ""}, "SHUANGLU_SECRET_KEY"),
        ({"database_url": ""}, "DATABASE_URL"),
        ({"shuanglu_field_encryption_key": _key(1)}, "different"),
        ({"shuanglu_seal_signing_key": "c2hvcnQ"}, "at least 32 bytes"),
        ({"shuanglu_liveness_challenges": "blink"}, "blink alone"),
        ({"shuanglu_anti_spoof_weights_dir": str(tmp_path / "none")},
         "SHUANGLU_ANTI_SPOOF_WEIGHTS_DIR"),
        ({"shuanglu_wechat_enabled": "true"}, "SHUANGLU_WECHAT_APP_ID"),
        ({"shuanglu_bank_enabled": "true"}, "SHUANGLU_BANK"),
        ({"shuanglu_sms_engine": "tencent"}, "SHUANGLU_SMS_SECRET_ID"),
    ]
    for change, refusal in cases:
        with pytest.raises(ConfigurationError, match=refusal):
            load_config(env=_prod(tmp_path, **change))
    # A secret of a dev/test data folder (one secrets mechanism for every section).
    import infra.secrets

    monkeypatch.setattr(infra.secrets, "PROJECT_ROOT", tmp_path / "repo")
    dev = load_config(Settings(profile="dev", data_dir=tmp_path / "repo/data/dev"), env={})
    leaked = (tmp_path / "repo/data/dev/secrets.env").read_text(encoding="utf-8")
    dev_key = dict(line.split("=", 1) for line in leaked.split())["secret_key"]
    assert dev.secret_key and (tmp_path / "repo/data/dev/channels-secrets.env").exists()
    with pytest.raises(ConfigurationError, match="dev/test secret secret_key"):
        load_config(env=_prod(tmp_path, shuanglu_secret_key=dev_key))


def test_loopback_candidates_only_outside_production_unless_set(tmp_path: Path) -> None:
    """Issue 18: SHUANGLU_CALL_INCLUDE_LOOPBACK unset offers 127.0.0.1 in dev and test only."""
    assert load_config(env=_prod(tmp_path)).settings.call_include_loopback is False
    given = load_config(env=_prod(tmp_path, shuanglu_call_include_loopback="true"))
    assert given.settings.call_include_loopback is True
    test = load_config(Settings(profile="test", data_dir=tmp_path / "t"), env={})
    assert test.settings.call_include_loopback is True


async def test_the_after_call_runtime_is_built_once_and_handed_to_the_jobs(
        tmp_path: Path) -> None:
    """Issue 18: the composition root builds the after-call runtime once from the sections
    (app.factory.after_call) and the jobs run on that object, not on one of their own."""
    from types import SimpleNamespace
    from typing import Any

    from app.factory import after_call, register_jobs

    class Lock:
        async def acquire(self) -> bool:
            return False  # another process sweeps: nothing else runs

    class Redis:
        def __init__(self) -> None:
            self.locks: list[str] = []

        def lock(self, name: str, **_: Any) -> Lock:
            self.locks.append(name)
            return Lock()

    class Jobs:
        def __init__(self) -> None:
            self.handlers: dict[str, Any] = {}

        def register(self, name: str, handler: Any) -> None:
            self.handlers[name] = handler

        def on_receive(self, name: str, load: Any) -> None:
            pass  # the identity engines' warm-up (tests/foundation/test_warm_engines.py)

    config = load_config(Settings(profile="test", data_dir=tmp_path / "t"),
                         env={"shuanglu_qa_min_width": "720"})
    redis, jobs = Redis(), Jobs()
    runtime = after_call(config, redis, None)  # type: ignore[arg-type]
    assert runtime.qa is config.qa and runtime.qa.min_width == 720
    assert runtime.archive is config.archive and runtime.insurer is config.insurer
    register_jobs(jobs, SimpleNamespace(storage=None), config, redis,  # type: ignore[arg-type]
                  lambda: None, runtime)  # type: ignore[arg-type,return-value]
    swapped = Redis()  # the job reads the runtime it was given, at run time
    runtime.redis = swapped  # type: ignore[assignment]
    await jobs.handlers["after_call_sweep"]()
    assert swapped.locks == ["after-call:sweep-lock"] and redis.locks == []


def test_the_cache_and_documents_folders_come_from_the_config_R54(tmp_path: Path) -> None:
    """Issue 18 item 5: SHUANGLU_CACHE_DIR and SHUANGLU_DOCUMENTS_DIR are read by load_config
    only; the composition root hands the folders to the document pages (app.factory)."""
    from app.factory import document_folders
    from qa.transcripts import host_plan

    base = {"shuanglu_profile": "test", "shuanglu_data_dir": str(tmp_path / "data")}
    config = load_config(env={**base, "shuanglu_cache_dir": str(tmp_path / "cache"),
                              "shuanglu_documents_dir": str(tmp_path / "docs")})
    assert config.cache_dir == config.identity.cache_dir == tmp_path / "cache"
    assert config.documents_dir == tmp_path / "docs"
    folders = document_folders(config)
    assert (folders.documents, folders.cache) == (tmp_path / "docs", tmp_path / "cache")
    # The after-call transcription's engine gets it in its plan (the child reads no env).
    assert config.qa.model_cache_dir == tmp_path / "cache"
    assert host_plan([], config.qa)["asr"]["cache_dir"] == str(tmp_path / "cache")
    # Unset: the XDG cache, and the library's own documents.
    config = load_config(env={**base, "xdg_cache_home": str(tmp_path / "xdg")})
    assert config.cache_dir == config.identity.cache_dir == tmp_path / "xdg" / "shuanglu"
    assert config.documents_dir is None
