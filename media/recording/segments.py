"""Segmented recording of one stream of a session, written without re-encoding (R-30, R-31, R-32).

A :class:`SegmentWriter` receives the encoded VP8/Opus frames of one party (or of the TTS) and
muxes them, as they are, into WebM files of about ``segment_seconds`` each:

* a segment is written as ``NNNNN.webm.part`` and renamed (hard link + unlink, which refuses to
  replace an existing file) only once it is closed and fsynced, so a crash loses at most the open
  segment and a finished segment is never overwritten, not even by a restarted process: numbering
  continues after the highest number found on disk;
* video segments start on a key frame (one is requested from the sender when a segment is due),
  so every segment decodes on its own;
* each segment carries the wall-clock time of its first and last frame, derived from the RTP
  clock anchored at arrival, so the segments of all parties line up on one timeline;
* audio that arrives before the first video key frame is held back briefly (not written into a
  file whose video stream is not declared yet — aiortc's ``MediaRecorder`` loses the video then).

Muxing a frame costs a few microseconds and runs in the event loop; closing, hashing and renaming
a segment runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av

from media.recording.packets import OPUS_FRAME_SECONDS, EncodedPacket, MediaKind, vp8_picture_size

logger = logging.getLogger(__name__)

RecordingKind = Literal["customer_av", "agent_av", "tts"]
RECORDING_KINDS: tuple[RecordingKind, ...] = ("customer_av", "agent_av", "tts")

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_SEGMENT_NAME = re.compile(r"^(\d{5})\.webm(\.part)?$")
_MILLISECONDS = Fraction(1, 1000)
# A sender clock that drifts this far from arrival time (or jumps) is re-anchored.
_MAX_CLOCK_DRIFT_SECONDS = 1.0
# Video that has not delivered a frame for this long is treated as stopped (camera off).
_VIDEO_STALE_SECONDS = 1.0
_KEYFRAME_REQUEST_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class SegmentWritten:
    """A finished, closed and fsynced segment file (R-31: register its hash with the session).

    ``path`` is relative to the storage root, in POSIX form. ``started_at``/``ended_at`` are the
    wall-clock times (UTC) of the first frame and of the end of the last frame.
    """

    session_id: str
    kind: RecordingKind
    segment: int
    path: str
    sha256: str
    size_bytes: int
    duration_ms: int
    started_at: datetime
    ended_at: datetime


SegmentCallback = Callable[[SegmentWritten], Awaitable[None] | None]


def check_session_id(session_id: str) -> str:
    """The session id becomes a folder name: allow only a safe alphabet (no path tricks)."""
    if not SESSION_ID_PATTERN.match(session_id):
        raise ValueError(f"invalid session id for a recording folder: {session_id!r}")
    return session_id


class MediaClock:
    """Maps a stream's RTP timestamps to wall-clock seconds.

    Anchored on the arrival time of the first frame of each epoch and advanced by the sender's
    own clock after that, so network jitter does not leak into the recording's timestamps.
    """

    def __init__(self) -> None:
        self._epoch: int | None = None
        self._anchor_ts = 0
        self._anchor_wall = 0.0

    def map(self, packet: EncodedPacket) -> float:
        if self._epoch != packet.epoch:
            self._reanchor(packet)
        wall = self._anchor_wall + (packet.timestamp - self._anchor_ts) / packet.clock_rate
        if abs(wall - packet.received_at) > _MAX_CLOCK_DRIFT_SECONDS:
            self._reanchor(packet)
            wall = packet.received_at
        return wall

    def _reanchor(self, packet: EncodedPacket) -> None:
        self._epoch = packet.epoch
        self._anchor_ts = packet.timestamp
        self._anchor_wall = packet.received_at


@dataclass
class _OpenSegment:
    number: int
    part_path: Path
    final_path: Path
    container: Any  # av.container.OutputContainer (PyAV's stubs are incomplete for mux streams)
    streams: dict[MediaKind, Any]
    started_at: float
    ended_at: float
    video_needs_keyframe: bool
    last_pts: dict[MediaKind, int] = field(default_factory=dict)
    keyframe_requested: bool = False


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class SegmentWriter:
    """Records one ``kind`` of a session into numbered WebM segments (R-30, R-31)."""

    def __init__(
        self,
        storage_root: Path,
        session_id: str,
        kind: RecordingKind,
        *,
        segment_seconds: float = 60.0,
        on_segment: SegmentCallback | None = None,
        request_keyframe: Callable[[], None] | None = None,
        video_wait_seconds: float = 2.0,
        keyframe_wait_seconds: float = 3.0,
        default_video_size: tuple[int, int] = (640, 480),
    ) -> None:
        self.storage_root = storage_root
        self.session_id = check_session_id(session_id)
        self.kind: RecordingKind = kind
        self.segment_seconds = segment_seconds
        self._on_segment = on_segment
        self._request_keyframe = request_keyframe
        self._video_wait = video_wait_seconds
        self._keyframe_wait = keyframe_wait_seconds
        self._default_size = default_video_size
        self._expect: dict[MediaKind, bool] = {"audio": kind == "tts", "video": False}
        self._clocks: dict[MediaKind, MediaClock] = {"audio": MediaClock(), "video": MediaClock()}
        self._open: _OpenSegment | None = None
        self._pending: list[tuple[EncodedPacket, float]] = []
        self._last_video_at = 0.0
        self._last_video_interval = 1 / 15
        self._last_keyframe_request = 0.0
        self._finalizing: set[asyncio.Task[None]] = set()
        self._last_finalize: asyncio.Task[None] | None = None
        self._next_number = self._first_free_number()
        self.written: list[SegmentWritten] = []

    @property
    def folder(self) -> Path:
        return self.storage_root / self.session_id / self.kind

    def expect(self, *, audio: bool, video: bool) -> None:
        """Declare the streams the next segments hold (from the party's offer)."""
        self._expect = {"audio": audio, "video": video}

    def write(self, packet: EncodedPacket) -> None:
        """Add one encoded frame. Never raises: a failing segment is logged and abandoned."""
        if not self._expect[packet.kind]:
            return
        try:
            self._write(packet)
        except Exception:
            logger.exception("recording %s/%s: writing failed", self.session_id, self.kind)
            self._abandon_open_segment()

    async def finish(self) -> None:
        """Close the open segment (the party left) and wait until every segment is reported."""
        if self._open is None and self._pending:
            self._open_segment(self._pending[0][1], self._default_size, video_keyframe=False)
        self._close_open_segment()
        while self._finalizing:
            await asyncio.gather(*self._finalizing, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------

    def _first_free_number(self) -> int:
        highest = 0
        if self.folder.is_dir():
            for entry in self.folder.iterdir():
                match = _SEGMENT_NAME.match(entry.name)
                if match:
                    highest = max(highest, int(match.group(1)))
        return highest + 1

    def _write(self, packet: EncodedPacket) -> None:
        at = self._clocks[packet.kind].map(packet)
        if packet.kind == "video":
            if self._last_video_at:
                self._last_video_interval = min(max(at - self._last_video_at, 0.01), 0.2)
            self._last_video_at = at
        segment = self._open
        due = segment is not None and at - segment.started_at >= self.segment_seconds
        if segment is not None and due and self._rotate_now(segment, packet, at):
            self._close_open_segment()
            segment = None
        if segment is None:
            self._start_or_hold(packet, at)
        else:
            self._mux(segment, packet, at)

    def _rotate_now(self, segment: _OpenSegment, packet: EncodedPacket, at: float) -> bool:
        """A due segment ends on the next video key frame, so the next one starts with one."""
        if "video" not in segment.streams or at - self._last_video_at > _VIDEO_STALE_SECONDS:
            return True
        if packet.kind == "video" and packet.keyframe:
            return True
        if not segment.keyframe_requested:
            segment.keyframe_requested = True
            self._ask_keyframe(force=True)
        # A sender that ignores key frame requests must not stretch segments without bound.
        return at - segment.started_at >= self.segment_seconds + self._keyframe_wait

    def _start_or_hold(self, packet: EncodedPacket, at: float) -> None:
        if packet.kind == "video":
            size = vp8_picture_size(packet.data)
            if size is None:
                self._ask_keyframe()  # inter frames before a key frame cannot be decoded
                return
            start = min([at] + [t for _, t in self._pending])
            segment = self._open_segment(start, size, video_keyframe=True)
            self._flush_pending(segment)
            self._mux(segment, packet, at)
            return
        if not self._expect["video"]:
            self._mux(self._open_segment(at, self._default_size, video_keyframe=False), packet, at)
            return
        # Audio before the first video key frame: hold it back for a moment (bounded).
        self._pending.append((packet, at))
        if at - self._pending[0][1] >= self._video_wait:
            segment = self._open_segment(self._pending[0][1], self._default_size, False)
            self._flush_pending(segment)

    def _flush_pending(self, segment: _OpenSegment) -> None:
        pending, self._pending = self._pending, []
        for held, held_at in pending:
            self._mux(segment, held, held_at)

    def _open_segment(
        self, started_at: float, size: tuple[int, int], video_keyframe: bool
    ) -> _OpenSegment:
        number = self._next_number
        self._next_number += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        final_path = self.folder / f"{number:05d}.webm"
        part_path = final_path.with_name(final_path.name + ".part")
        # O_EXCL: two writers (or a restarted process) can never share or truncate a file.
        os.close(os.open(part_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))
        # Clusters of at most a second, written through at once: a process that is killed
        # leaves a .part file holding all but its last second (media/recording/salvage.py).
        container = av.open(str(part_path), "w", format="webm",
                            options={"cluster_time_limit": "1000", "flush_packets": "1"})
        container.metadata["title"] = f"{self.session_id} {self.kind} {number}"
        container.metadata["session_id"] = self.session_id
        container.metadata["recording_kind"] = self.kind
        container.metadata["started_at"] = _utc(started_at).isoformat()
        streams: dict[MediaKind, Any] = {}
        if self._expect["video"]:
            streams["video"] = container.add_mux_stream("vp8", width=size[0], height=size[1])
        if self._expect["audio"]:
            streams["audio"] = container.add_mux_stream("opus", rate=48_000)
        for stream in streams.values():
            stream.time_base = _MILLISECONDS
        self._open = _OpenSegment(
            number=number,
            part_path=part_path,
            final_path=final_path,
            container=container,
            streams=streams,
            started_at=started_at,
            ended_at=started_at,
            video_needs_keyframe=not video_keyframe,
        )
        return self._open

    def _mux(self, segment: _OpenSegment, packet: EncodedPacket, at: float) -> None:
        stream = segment.streams.get(packet.kind)
        if stream is None:
            return
        if packet.kind == "video":
            if segment.video_needs_keyframe and not packet.keyframe:
                self._ask_keyframe()
                return
            segment.video_needs_keyframe = False
            duration = self._last_video_interval
        else:
            duration = OPUS_FRAME_SECONDS
        pts = max(round((at - segment.started_at) * 1000), 0)
        last = segment.last_pts.get(packet.kind)
        if last is not None and pts <= last:
            pts = last + 1  # the muxer needs strictly increasing timestamps per stream
        segment.last_pts[packet.kind] = pts
        out = av.Packet(packet.data)
        out.stream = stream
        out.time_base = _MILLISECONDS
        out.pts = out.dts = pts
        out.duration = max(round(duration * 1000), 1)
        out.is_keyframe = packet.keyframe
        segment.container.mux(out)
        segment.ended_at = max(segment.ended_at, segment.started_at + (pts / 1000) + duration)

    def _ask_keyframe(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._request_keyframe is None:
            return
        if force or now - self._last_keyframe_request >= _KEYFRAME_REQUEST_INTERVAL:
            self._last_keyframe_request = now
            self._request_keyframe()

    def _close_open_segment(self) -> None:
        segment, self._open = self._open, None
        if segment is None:
            return
        previous = self._last_finalize
        task = asyncio.get_running_loop().create_task(self._finalize(segment, previous))
        self._last_finalize = task
        self._finalizing.add(task)
        task.add_done_callback(self._finalizing.discard)

    def _abandon_open_segment(self) -> None:
        """After a write error: keep the ``.part`` file as it is and start afresh."""
        segment, self._open = self._open, None
        self._pending = []
        if segment is not None:
            try:
                segment.container.close()
            except Exception:
                logger.exception("recording %s/%s: closing a failed segment", self.session_id,
                                 self.kind)

    async def _finalize(self, segment: _OpenSegment, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # segments are reported in order
        try:
            sha256, size = await asyncio.to_thread(_close_and_seal, segment)
        except Exception:
            logger.exception(
                "recording %s/%s: segment %d could not be finished; %s kept as it is",
                self.session_id, self.kind, segment.number, segment.part_path,
            )
            return
        event = SegmentWritten(
            session_id=self.session_id,
            kind=self.kind,
            segment=segment.number,
            path=segment.final_path.relative_to(self.storage_root).as_posix(),
            sha256=sha256,
            size_bytes=size,
            duration_ms=round((segment.ended_at - segment.started_at) * 1000),
            started_at=_utc(segment.started_at),
            ended_at=_utc(segment.ended_at),
        )
        self.written.append(event)
        if self._on_segment is not None:
            try:
                result = self._on_segment(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("recording %s/%s: on_segment callback failed for %s",
                                 self.session_id, self.kind, event.path)


def _close_and_seal(segment: _OpenSegment) -> tuple[str, int]:
    """In a worker thread: write the trailer, fsync, hash, publish under the final name."""
    segment.container.close()
    digest = hashlib.sha256()
    with open(segment.part_path, "rb") as file:
        os.fsync(file.fileno())
        while chunk := file.read(1 << 20):
            digest.update(chunk)
        size = file.tell()
    os.link(segment.part_path, segment.final_path)  # raises if the name exists: never overwrite
    os.unlink(segment.part_path)
    directory = os.open(segment.final_path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return digest.hexdigest(), size


class SessionRecorder:
    """The three recordings of one session: customer, agent and the TTS that was played."""

    def __init__(
        self,
        storage_root: Path,
        session_id: str,
        *,
        segment_seconds: float = 60.0,
        on_segment: SegmentCallback | None = None,
        request_keyframe: Callable[[RecordingKind], None] | None = None,
    ) -> None:
        def keyframe_requester(kind: RecordingKind) -> Callable[[], None] | None:
            if request_keyframe is None:
                return None
            return lambda: request_keyframe(kind)

        self.writers: dict[RecordingKind, SegmentWriter] = {
            kind: SegmentWriter(
                storage_root,
                session_id,
                kind,
                segment_seconds=segment_seconds,
                on_segment=on_segment,
                request_keyframe=keyframe_requester(kind),
            )
            for kind in RECORDING_KINDS
        }

    def __getitem__(self, kind: RecordingKind) -> SegmentWriter:
        return self.writers[kind]

    @property
    def written(self) -> list[SegmentWritten]:
        return sorted(
            (event for writer in self.writers.values() for event in writer.written),
            key=lambda event: (event.kind, event.segment),
        )

    async def finish(self) -> None:
        await asyncio.gather(*(writer.finish() for writer in self.writers.values()))
