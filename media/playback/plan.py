"""What a playback copy is made of, as plain data: the segments on the session clock, the
script steps and interruptions to show, and the render settings. Serialised as JSON to the
child process that renders it, and hashed so that a copy made from the same plan is not made
again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Bump when the picture or sound of the copy changes: existing copies are then re-made.
RENDERER_VERSION = 1


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Modest output for a QA inspector's browser: two 4:3 tiles of 480×360 between two
    32-pixel text bands (960×424), 15 fps, H.264 + AAC in MP4."""

    tile_width: int = 480
    tile_height: int = 360
    band_height: int = 32
    fps: int = 15
    crf: int = 28
    preset: str = "veryfast"
    threads: int = 1
    audio_bitrate: int = 64_000
    # A party's last picture is held this long before the tile says there is no picture.
    hold_ms: int = 1000

    @property
    def width(self) -> int:
        return 2 * self.tile_width

    @property
    def height(self) -> int:
        return self.tile_height + 2 * self.band_height


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """One sealed recording segment placed on the session clock (ms from recording start)."""

    recording_id: int
    kind: str  # customer_av | agent_av | tts
    segment: int
    path: str  # absolute path of the file, read only
    sha256: str  # the sealed hash (Recording.sha256)
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled stretch of the session clock: a play of a script step, or an interruption."""

    start_ms: int
    end_ms: int
    label: str


@dataclass(frozen=True, slots=True)
class PlaybackPlan:
    session_id: str
    recording_started_at: str  # ISO 8601 with offset; the burned-in clock is Beijing time
    duration_ms: int
    segments: tuple[SourceSegment, ...]
    steps: tuple[Span, ...] = ()
    interruptions: tuple[Span, ...] = ()
    settings: RenderSettings = field(default_factory=RenderSettings)
    renderer_version: int = RENDERER_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> PlaybackPlan:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            session_id=data["session_id"],
            recording_started_at=data["recording_started_at"],
            duration_ms=int(data["duration_ms"]),
            segments=tuple(SourceSegment(**s) for s in data["segments"]),
            steps=tuple(Span(**s) for s in data["steps"]),
            interruptions=tuple(Span(**s) for s in data["interruptions"]),
            settings=RenderSettings(**data["settings"]),
            renderer_version=int(data["renderer_version"]),
        )

    def digest(self) -> str:
        """Identifies what the copy shows; file locations are left out (a moved storage root
        does not change the copy)."""
        data = asdict(self)
        for s in data["segments"]:
            s.pop("path")
        raw = json.dumps(data, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()
