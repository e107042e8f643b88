"""Sections of the one configuration whose models the layers above infra share (channels,
QA, archive and insurers); `infra.config.load_config` fills them."""
