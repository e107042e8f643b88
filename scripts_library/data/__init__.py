"""Compliance rule data read by `scripts_library.rules` (YAML files, reviewed with compliance)."""
