"""Authentication, roles and permissions, the audit log, and personal-data protection."""
