"""The QA section of the configuration lives with the others in `infra.sections.qa` (loaded once
by `infra.config.load_config`, `Config.qa`); re-exported here for the QA modules."""

from infra.sections.qa import QaSettings, SamplingConfig, SamplingRule

__all__ = ["QaSettings", "SamplingConfig", "SamplingRule"]
