"""Recording of the call (R-30, R-31, R-32): each party's audio+video and the TTS that was
played, as received (no re-encoding), in crash-tolerant segments with wall-clock times; and a
probe that inspects a segment for quality checks."""

from media.recording.packets import EncodedPacket, MediaKind, vp8_is_keyframe, vp8_picture_size
from media.recording.probe import SegmentProbe, probe_segment
from media.recording.segments import (
    RECORDING_KINDS,
    RecordingKind,
    SegmentCallback,
    SegmentWriter,
    SegmentWritten,
    SessionRecorder,
    check_session_id,
)

__all__ = [
    "RECORDING_KINDS",
    "EncodedPacket",
    "MediaKind",
    "RecordingKind",
    "SegmentCallback",
    "SegmentProbe",
    "SegmentWriter",
    "SegmentWritten",
    "SessionRecorder",
    "check_session_id",
    "probe_segment",
    "vp8_is_keyframe",
    "vp8_picture_size",
]
