"""The archive and insurer sections of the configuration, from `SHUANGLU_ARCHIVE_*` and
`SHUANGLU_INSURER_*` environment variables (or `.env`), read by `infra.config.load_config`: the
storage backend, the retention periods (R-42) and the insurers' API clients and webhooks (R-43)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field


class ArchiveSettings(BaseModel):
    """`SHUANGLU_ARCHIVE_<FIELD>` (ENV_PREFIX); constructed alone it holds the defaults."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_ARCHIVE_"

    # Where sealed evidence is archived. Default: in place, in the evidence store itself
    # (SHUANGLU_STORAGE_URL: the archive pass only verifies every object against its sealed
    # hash). A second, separate copy: SHUANGLU_ARCHIVE_STORAGE_URL (same URL syntax as
    # SHUANGLU_STORAGE_URL, storage/config.py), or the older backend="s3" with the s3_* fields.
    storage_url: str | None = None
    backend: Literal["local", "s3"] = "local"
    local_root: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = "shuanglu-archive"
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_prefix: str = ""
    # Create the bucket when it does not exist (development and tests).
    s3_create_bucket: bool = False
    # years kept after the contract ends: policies over one year / others, and after a
    # dispute ends.
    retention_years_long_term: int = Field(default=10, ge=10)
    retention_years_short_term: int = Field(default=5, ge=5)
    dispute_extra_years: int = Field(default=2, ge=2)
    purge_batch: int = Field(default=100, ge=1, le=10_000)


class InsurerClient(BaseModel):
    """One insurer core system allowed to call the status API and to receive webhooks."""

    institution: str = Field(min_length=1, max_length=32)
    api_secret: str = Field(min_length=16)
    webhook_secret: str = Field(min_length=16)
    webhook_url: str | None = None


class InsurerSettings(BaseModel):
    """`SHUANGLU_INSURER_<FIELD>` (ENV_PREFIX); constructed alone it holds the defaults."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_INSURER_"

    # JSON: {"client-id": {"institution": "CODE", "api_secret": "...", "webhook_secret": "...",
    #                      "webhook_url": "https://core.example/shuanglu"}}
    clients: dict[str, InsurerClient] = Field(default_factory=dict)
    timestamp_tolerance_seconds: int = Field(default=300, ge=30)
    nonce_ttl_seconds: int = Field(default=900, ge=60)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_base_seconds: float = Field(default=2.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=900.0, gt=0)
    webhook_max_attempts: int = Field(default=15, ge=1)
