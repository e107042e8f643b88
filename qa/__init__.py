"""Quality inspection after the call (R-40, R-41): automated checks on the recording and the
timeline, the QA queue with sampling, deadlines and rectification, and the replay view."""
