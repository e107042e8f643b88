"""Unfinished segments left by a process that died (R-30): a recorder writes each segment as
``NNNNN.webm.part`` and publishes it under ``NNNNN.webm`` only once it is closed, so a killed
process leaves its open segments as ``.part`` files whose WebM stream ends mid-cluster.

:func:`salvage_session` turns each of them into a normal, closed segment: every packet that can
still be read is copied (no re-encoding) into a new WebM published under the final name,
exactly as the recorder would have (write-once, fsynced); the segment's wall-clock start comes
from the ``started_at`` the recorder wrote into the container's metadata, its end from the last
packet that survived. The ``.part`` file is then removed. A file with nothing readable is kept,
renamed ``NNNNN.webm.unreadable``, and reported, so it is never silently left behind or lost.

In a recording spool (`media.recording.spool`) a finished ``NNNNN.webm`` is only waiting to be
stored: ``include_finished`` reports those too (read, not rewritten), so a process that died
between closing a segment and storing it loses nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from media.recording.segments import RECORDING_KINDS, SegmentWritten, check_session_id

logger = logging.getLogger(__name__)
_MILLISECONDS = Fraction(1, 1000)


@dataclass(frozen=True)
class SalvageResult:
    salvaged: list[SegmentWritten]
    unreadable: list[str]  # storage-relative paths of .part files kept as .unreadable


def salvage_session(storage_root: Path, session_id: str, *,
                    include_finished: bool = False) -> SalvageResult:
    """Salvages every ``.part`` file of the session's three recordings (blocking: run it in a
    thread), and with ``include_finished`` reports every closed segment still there. Only call
    it when no process records the session any more."""
    check_session_id(session_id)
    salvaged: list[SegmentWritten] = []
    unreadable: list[str] = []
    for kind in RECORDING_KINDS:
        folder = storage_root / session_id / kind
        if not folder.is_dir():
            continue
        if include_finished:
            for done in sorted(folder.glob("[0-9][0-9][0-9][0-9][0-9].webm")):
                try:
                    event = _finished(done, storage_root, session_id, kind)
                except Exception:
                    logger.exception("recording %s: could not read %s", session_id, done)
                    event = None
                if event is None:
                    kept = done.with_name(done.name + ".unreadable")
                    os.replace(done, kept)
                    unreadable.append(kept.relative_to(storage_root).as_posix())
                else:
                    salvaged.append(event)
        for part in sorted(folder.glob("*.webm.part")):
            final = part.with_name(part.name.removesuffix(".part"))
            try:
                event = _salvage(part, final, storage_root, session_id, kind)
            except Exception:
                logger.exception("recording %s: could not salvage %s", session_id, part)
                event = None
            if event is None:
                kept = part.with_name(part.name.removesuffix(".part") + ".unreadable")
                os.replace(part, kept)
                unreadable.append(kept.relative_to(storage_root).as_posix())
            else:
                salvaged.append(event)
    return SalvageResult(salvaged, unreadable)


def _finished(path: Path, root: Path, session_id: str, kind: str) -> SegmentWritten | None:
    """The facts of a closed segment, read from its packets and metadata."""
    first_ms: int | None = None
    last_ms = 0
    try:
        source = av.open(str(path))
    except (av.error.FFmpegError, OSError):
        return None
    with source:
        started = str(source.metadata.get("started_at") or source.metadata.get("STARTED_AT")
                      or "")
        streams = [s for s in source.streams if s.type in ("audio", "video")]
        try:
            for packet in source.demux(*streams):
                if packet.size == 0 or packet.pts is None:
                    continue
                at = round(float(packet.pts * packet.time_base) * 1000)
                end = at + round(float((packet.duration or 0) * packet.time_base) * 1000)
                first_ms = at if first_ms is None else min(first_ms, at)
                last_ms = max(last_ms, end)
        except (av.error.FFmpegError, EOFError, ValueError):
            logger.info("recording %s: %s ends early", session_id, path.name)
    if first_ms is None or not started:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        size = handle.tell()
    origin = datetime.fromisoformat(started)
    return SegmentWritten(
        session_id=session_id, kind=kind,  # type: ignore[arg-type]
        segment=int(path.name.split(".", 1)[0]),
        path=path.relative_to(root).as_posix(), sha256=digest.hexdigest(), size_bytes=size,
        duration_ms=last_ms - first_ms,
        started_at=origin + timedelta(milliseconds=first_ms),
        ended_at=origin + timedelta(milliseconds=last_ms),
    )


def _salvage(part: Path, final: Path, root: Path, session_id: str,
             kind: str) -> SegmentWritten | None:
    if final.exists():
        raise FileExistsError(f"{final} exists already: not overwritten")
    tmp = part.with_name(part.name + ".salvage")
    try:
        source = av.open(str(part))
    except (av.error.FFmpegError, OSError):
        return None
    first_ms: int | None = None
    last_ms = 0
    packets = 0
    with source:
        started = str(source.metadata.get("started_at") or source.metadata.get("STARTED_AT")
                      or "")
        with av.open(str(tmp), "w", format="webm") as out:
            for key, value in source.metadata.items():
                out.metadata[key] = value
            mapping = {}
            for stream in source.streams:
                if stream.type not in ("audio", "video"):
                    continue
                context: Any = stream.codec_context  # PyAV's stubs lack the media attributes
                if stream.type == "video":
                    target = out.add_mux_stream(context.name, width=context.width,
                                                height=context.height)
                else:
                    target = out.add_mux_stream(context.name, rate=context.sample_rate or 48_000)
                target.time_base = _MILLISECONDS
                mapping[stream.index] = target
            try:
                for packet in source.demux(*[source.streams[i] for i in mapping]):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    at = round(float(packet.pts * packet.time_base) * 1000)
                    end = at + round(float((packet.duration or 0) * packet.time_base) * 1000)
                    packet.stream = mapping[packet.stream.index]
                    packet.pts = packet.dts = at
                    packet.time_base = _MILLISECONDS
                    out.mux(packet)
                    packets += 1
                    first_ms = at if first_ms is None else min(first_ms, at)
                    last_ms = max(last_ms, end)
            except (av.error.FFmpegError, EOFError, ValueError) as error:
                # The stream ends mid-cluster where the process died: keep what came before.
                logger.info("recording %s: %s ends early (%s)", session_id, part.name, error)
    if packets == 0 or not started:
        tmp.unlink(missing_ok=True)
        return None
    digest = hashlib.sha256()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        size = handle.tell()
    os.link(tmp, final)  # never replaces an existing segment
    os.unlink(tmp)
    os.unlink(part)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    origin = datetime.fromisoformat(started)
    return SegmentWritten(
        session_id=session_id, kind=kind,  # type: ignore[arg-type]
        segment=int(final.name.split(".", 1)[0]),
        path=final.relative_to(root).as_posix(), sha256=digest.hexdigest(), size_bytes=size,
        duration_ms=last_ms - (first_ms or 0),
        started_at=origin + timedelta(milliseconds=first_ms or 0),
        ended_at=origin + timedelta(milliseconds=last_ms),
    )
