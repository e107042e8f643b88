"""Figures and evidence for supervisors and regulators: statistics (R-55) and the acceptance
evidence pack (R-02)."""
