"""The QA section of the configuration (R-40, R-32, R-13): the automated checks' thresholds and
the sampling rules of the QA queue, from `SHUANGLU_QA_*` environment variables (or `.env`), read
by `infra.config.load_config` and handed to the QA components (`Config.qa`).

The sampling rules are JSON in `SHUANGLU_QA_SAMPLING` or a YAML/JSON file named by
`SHUANGLU_QA_SAMPLING_FILE`; the default reviews every remote session (100%), as the bank
notice requires for remote recording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.sales import ProductType


class SamplingRule(BaseModel):
    """Sessions matching every condition given here are reviewed with at least `share`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=48, pattern=r"^[a-z0-9_]+$")
    share: float = Field(ge=0.0, le=1.0)
    product_types: list[ProductType] | None = None
    min_customer_age: int | None = Field(default=None, ge=0, le=150)
    max_customer_age: int | None = Field(default=None, ge=0, le=150)
    # Agent history over the last `agent_history_days`: rejected sessions, or few sessions.
    agent_rejections_at_least: int | None = Field(default=None, ge=1)
    agent_sessions_at_most: int | None = Field(default=None, ge=0)
    agent_history_days: int = Field(default=180, ge=1, le=3650)

    @model_validator(mode="after")
    def _has_condition(self) -> SamplingRule:
        conditions = (self.product_types, self.min_customer_age, self.max_customer_age,
                      self.agent_rejections_at_least, self.agent_sessions_at_most)
        if all(c is None for c in conditions):
            raise ValueError(f"sampling rule {self.name} has no condition")
        return self


class SamplingConfig(BaseModel):
    """The share of sessions an inspector reviews: the highest share among the matching
    rules, `default_share` when none matches; a session with a critical or major automated
    finding is always reviewed when `findings_force_review`."""

    model_config = ConfigDict(extra="forbid")

    default_share: float = Field(default=1.0, ge=0.0, le=1.0)
    rules: list[SamplingRule] = Field(default_factory=lambda: [
        SamplingRule(name="customer_age_60_plus", share=1.0, min_customer_age=60),
        SamplingRule(name="investment_linked", share=1.0,
                     product_types=[ProductType.INVESTMENT_LINKED]),
        SamplingRule(name="agent_recent_rejections", share=1.0, agent_rejections_at_least=1),
    ])
    findings_force_review: bool = True
    # Part of the deterministic draw: changing it re-draws every session.
    salt: str = "shuanglu-qa"


class QaSettings(BaseModel):
    """`SHUANGLU_QA_<FIELD>` (ENV_PREFIX); constructed alone it holds the defaults."""

    ENV_PREFIX: ClassVar[str] = "SHUANGLU_QA_"

    # Sampling: inline JSON, or a file; the built-in default otherwise.
    sampling: SamplingConfig | None = None
    sampling_file: Path | None = None
    # Alerts before the deadline (end of the cooling-off period), in hours.
    alert_hours_before_deadline: list[int] = Field(default_factory=lambda: [72, 24])
    # Voice activity detector: "silero" (ONNX shipped in the silero-vad wheel) or "energy".
    vad_engine: str = "silero"
    # R-32 quality thresholds.
    min_width: int = 640
    min_height: int = 480
    min_frame_rate: float = 15.0
    # A few frames fewer than nominal are normal for a live camera.
    frame_rate_tolerance: float = 1.0
    max_silence_seconds: float = 5.0
    silence_dbfs: float = -45.0
    # segments of one track may meet with this much slack.
    max_segment_gap_ms: int = 1500
    # share of the call the customer's face must be in view.
    min_presence_share: float = 0.8
    # speech expected from the customer between the end of a step and this long after
    # the answer was logged; at least `min_answer_speech_ms` of it.
    answer_window_before_s: float = 12.0
    answer_window_after_s: float = 2.0
    min_answer_speech_ms: int = 250
    # Steps whose answer is spoken aloud: their voice answers (answer_kind "voice", with the
    # span the live recogniser heard) must have the customer's voice in the recording there. A
    # button answer is never checked for speech (issue 12 item 4).
    speech_answers: list[str] = Field(default_factory=lambda: ["spoken_answer"])
    # The after-call transcript (qa/transcripts.py, docs/qa.md): the checks wait for it at most
    # this long after sealing, then run and say it is missing (transcript_unavailable).
    transcript_enabled: bool = True
    transcript_wait_minutes: float = 60.0
    transcript_nice: int = Field(default=10, ge=0, le=19)
    transcript_threads: int = Field(default=1, ge=1, le=8)
    transcript_timeout_seconds: float = 1800.0
    # Utterances up to this long are heard alone (short window); longer ones are batched.
    transcript_short_seconds: float = 4.0
    transcript_batch_seconds: float = 25.0
    transcript_catch_up_days: int = 30
    # A CTranslate2 Whisper folder for the transcript; None: the engine's default (Whisper base
    # from its wheels, media/voice/asr/config.py).
    transcript_model_dir: Path | None = None
    # Where the engine's model folder is assembled: Config.cache_dir (SHUANGLU_CACHE_DIR), set
    # by load_config; None: the engine's default.
    model_cache_dir: Path | None = None
    # an agent-read step counts as read when the agent's transcript during it holds
    # at least this share of the step's characters, in order (character recall).
    step_read_min_coverage: float = Field(default=0.5, ge=0.0, le=1.0)
    # a spoken "no" that contradicts a stored "yes" is critical only when recognised with
    # at least this confidence (mean token log-probability; Whisper base gave -0.4 to -0.6 for
    # a clear 不清楚, -0.8 to -1.6 for 是的明白); below it, major.
    transcript_min_logprob: float = -1.2
    # a TTS clip counts as played in full when at most this much is missing.
    clip_tolerance_ms: int = 300
    # Plausibility of durations.
    min_step_seconds: float = 1.0
    max_call_hours: float = 4.0

    def sampling_config(self) -> SamplingConfig:
        if self.sampling is not None:
            return self.sampling
        if self.sampling_file is not None:
            data: Any = yaml.safe_load(self.sampling_file.read_text(encoding="utf-8"))
            return SamplingConfig.model_validate(data)
        return SamplingConfig()
