"""The archive and insurer sections of the configuration live with the others in
`infra.sections.archive` (loaded once by `infra.config.load_config`, `Config.archive` and
`Config.insurer`); re-exported here for the archive modules."""

from infra.sections.archive import ArchiveSettings, InsurerClient, InsurerSettings

__all__ = ["ArchiveSettings", "InsurerClient", "InsurerSettings"]
