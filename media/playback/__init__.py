"""The playback copy of a sealed session for QA inspectors (R-41): one MP4 with both parties
side by side, the TTS mixed into the audio, and the wall-clock time, session id and script step
burned into every frame. Built from the sealed segments, which are only ever read.

`plan` describes what to draw (no database here), `compose` renders it (CPU-heavy, run in a
child process), `overlay` draws the text bands and cards, `sidecar` is the record of a copy.
"""

from media.playback.plan import (
    RENDERER_VERSION,
    PlaybackPlan,
    RenderSettings,
    SourceSegment,
    Span,
)

__all__ = ["RENDERER_VERSION", "PlaybackPlan", "RenderSettings", "SourceSegment", "Span"]
