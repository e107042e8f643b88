"""Keeping and deleting evidence (R-42) and telling the insurer (R-43): policy status and
disputes, retention per session, tombstones, storage backends and insurer webhooks."""
