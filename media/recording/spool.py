"""The recording spool (issue 13): a call hub writes its segments into a node-local folder,
``<spool>/<node id>/<session>/<kind>/NNNNN.webm[.part]`` (`SegmentWriter`: crash-tolerant,
write-once), and each segment it finishes is stored in the evidence store (the local folder or
S3; multipart above 8 MiB) before it is reported — registered with its object key, which is
``<session>/<kind>/NNNNN.webm`` on every backend. The spool copy is removed once stored.

Numbers: a node's writer numbers from its own spool, which is empty when a session resumes on
another node (or after segments were stored and removed), so the number a segment is stored
under is the writer's or, when that is taken, the next after the highest stored for the
session and kind: never a collision, never an overwrite (the store refuses those anyway).

Salvage (R-30): when a node dies, the node that recovers its room salvages the dead node's
spool for the session — the same folder on the same host, or on a shared disk — (its ``.part``
files turned into closed segments, `media.recording.salvage`), plus closed segments that were
not stored yet, stores them and reports them like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import replace
from pathlib import Path

from media.recording.salvage import SalvageResult, salvage_session
from media.recording.segments import SegmentWritten, check_session_id
from storage import ObjectStore

log = logging.getLogger(__name__)
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_STORED_NAME = re.compile(r"/(\d{5})\.webm$")


def node_folder_name(node_id: str) -> str:
    """A node id as a folder name: kept when it is a safe name, else a hash of it."""
    if _NODE_NAME.match(node_id) and ".." not in node_id:
        return node_id
    return "node-" + hashlib.sha256(node_id.encode()).hexdigest()[:16]


def segment_key(session_id: str, kind: str, number: int) -> str:
    return f"{check_session_id(session_id)}/{kind}/{number:05d}.webm"


class Spool:
    """This node's spool folder and the store its segments go to."""

    def __init__(self, base: Path, node_id: str, store: ObjectStore) -> None:
        self.base = Path(base)
        self.node_id = node_id
        self.root = self.base / node_folder_name(node_id)
        self.store = store
        self._highest: dict[tuple[str, str], int] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def node_root(self, node_id: str) -> Path:
        return self.base / node_folder_name(node_id)

    async def _highest_stored(self, session_id: str, kind: str) -> int:
        known = self._highest.get((session_id, kind))
        if known is not None:
            return known
        keys = await self.store.keys(f"{session_id}/{kind}/")
        numbers = [int(m.group(1)) for k in keys if (m := _STORED_NAME.search(k))]
        return max(numbers, default=0)

    async def store_segment(self, event: SegmentWritten,
                            root: Path | None = None) -> SegmentWritten:
        """Stores a closed spool segment (``event.path`` relative to ``root``, this node's
        spool by default) and removes it from the spool; returns the event naming the stored
        object. Raises when it could not be stored (the file stays in the spool)."""
        slot = (event.session_id, event.kind)
        lock = self._locks.setdefault(slot, asyncio.Lock())
        async with lock:
            number = max(event.segment, await self._highest_stored(*slot) + 1)
            key = segment_key(event.session_id, event.kind, number)
            source = (root or self.root) / event.path
            await self.store.put_file(key, source, sha256=event.sha256, move=True)
            self._highest[slot] = number
        if number != event.segment:
            log.info("recording %s/%s: spool segment %d stored as %d", event.session_id,
                     event.kind, event.segment, number)
        return replace(event, segment=number, path=key)

    def forget(self, session_id: str) -> None:
        """The room closed: drop what is cached about its numbers."""
        for slot in [s for s in self._highest if s[0] == session_id]:
            self._highest.pop(slot, None)
            self._locks.pop(slot, None)

    async def salvage(self, session_id: str, dead_node: str | None = None) -> SalvageResult:
        """Salvages what the dead node (and this node itself) left of the session in the spool:
        unfinished segments closed, closed ones not stored yet; all stored. Returns the stored
        segments (to register) and the spool paths of files nothing could be read from (kept
        there as ``.unreadable``)."""
        check_session_id(session_id)
        roots = [self.node_root(dead_node)] if dead_node else []
        roots += [] if self.root in roots else [self.root]
        stored: list[SegmentWritten] = []
        unreadable: list[str] = []
        for root in roots:
            if not (root / session_id).is_dir():
                continue
            found = await asyncio.to_thread(salvage_session, root, session_id,
                                            include_finished=True)
            unreadable += [(root / p).relative_to(self.base).as_posix()
                           for p in found.unreadable]
            for event in sorted(found.salvaged, key=lambda e: (e.kind, e.segment)):
                try:
                    stored.append(await self.store_segment(event, root))
                except Exception:
                    log.exception("recording %s: could not store salvaged %s", session_id,
                                  event.path)
        return SalvageResult(stored, unreadable)
