"""The call rooms of the whole cluster, as the API and the sweeps see them (R-30, infra/cluster.py):
a call request is answered by the node that holds the session's room (or the room is opened
here when nobody holds it), closing a room reaches its owner, and the room of a dead owner is
recovered — the session interrupted, the dead node's unfinished segments salvaged and
registered — so the call can resume on a live node.

A node without headroom for one more call refuses a new room (media/call/admission.py) and
gives up its claim on the session, so the balancer's retry on another node can take it."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal
from uuid import UUID

from aiohttp import web

from infra.cluster import FORWARDED_HEADER, Cluster, OwnerGone
from infra.config import Settings
from media.call import CallHub
from media.call.admission import AdmissionConfig, CallRefused
from media.recording.spool import Spool
from workflow import media_events
from workflow.core import WorkflowDeps

log = logging.getLogger(__name__)


class CallMoved(RuntimeError):
    """The room is held by another node and this request cannot be forwarded (it already was,
    or the owner just died: the session is being interrupted)."""


def call_admission(settings: Settings) -> AdmissionConfig | None:
    """The hub's admission control from the settings (None: every call is admitted)."""
    if not settings.call_admission:
        return None
    return AdmissionConfig(
        cores=settings.call_admission_cores,
        target_utilisation=settings.call_admission_target_utilisation,
        max_loop_lag=settings.call_admission_max_loop_lag_seconds,
        window_seconds=settings.call_admission_window_seconds,
        retry_after_seconds=settings.call_admission_retry_after_seconds,
        count_machine=settings.call_admission_count_machine,
    )


class Rooms:
    def __init__(self, hub: CallHub, cluster: Cluster, deps: WorkflowDeps,
                 spool: Spool) -> None:
        self.hub = hub
        self.cluster = cluster
        self.deps = deps
        self.spool = spool

    @property
    def node_id(self) -> str:
        return self.cluster.node.node_id

    async def route(self, request: web.Request, session_id: str) -> web.Response | None:
        """None when the room is (now) this node's: answer here. Otherwise the owner's answer
        to the forwarded request. Raises `CallMoved` when neither is possible."""
        owner = await self.cluster.claim(session_id)
        if owner == self.node_id:
            return None
        if await self.cluster.node_url(owner) is None:
            await self.recover(session_id, owner)
            raise CallMoved(f"the node {owner} holding the call is gone")
        if request.headers.get(FORWARDED_HEADER):
            raise CallMoved(f"forwarded here by {request.headers[FORWARDED_HEADER]}, "
                            f"but {owner} holds the call")
        try:
            return await self.cluster.forward(request, owner)
        except OwnerGone as gone:
            await self.recover(session_id, owner)
            raise CallMoved(f"the node {owner} holding the call is gone") from gone

    async def join(self, session_id: str, role: Literal["customer", "agent"], sdp: str,
                   type_: str) -> tuple[str, str]:
        """A party's offer answered by this node's hub (after `route`). A new room this node
        has no headroom for raises `CallRefused` and releases the session's claim, so another
        node may open it."""
        try:
            return await self.hub.join(session_id, role, sdp, type_)
        except CallRefused:
            if not self.hub.has_room(session_id):
                await self.cluster.release(session_id)
            raise

    async def close(self, session_id: str) -> None:
        """Closes the session's room wherever it is; every segment is registered when this
        returns (a dead owner's room is recovered instead)."""
        if self.hub.has_room(session_id):
            await self.hub.close(session_id)
            return
        owner = await self.cluster.owner(session_id)
        if owner is None or owner == self.node_id:
            return
        if await self.cluster.node_url(owner) is not None and await self.cluster.command(
                owner, "close", session_id):
            return
        await self.recover(session_id, owner)

    async def on_command(self, op: str, session_id: str) -> None:
        if op == "close":
            await self.hub.close(session_id)
        else:
            raise ValueError(f"unknown room command {op!r}")

    async def room_closed(self, session_id: str) -> None:
        await self.cluster.release(session_id)

    async def recover(self, session_id: str, dead_owner: str) -> bool:
        """The room of a node that died: interrupt the session (its parties rejoin through a
        live node once the agent resumes), salvage and register what the dead node was still
        writing, and drop the owner record. Done once, by one node."""
        if not await self.cluster.try_recovery_lock(session_id):
            return False
        log.warning("%s: call node %s is gone; recovering its room", session_id, dead_owner)
        sid = UUID(session_id)
        await media_events.room_lost(self.deps, sid, f"call node {dead_owner} lost")
        # The dead node's spool (same host, or a shared disk): salvaged and stored.
        result = await self.spool.salvage(session_id, dead_owner)
        for e in result.salvaged:
            await media_events.segment_written(
                self.deps, sid, e.kind, e.segment, e.path, e.sha256, e.size_bytes,
                e.duration_ms, e.started_at, e.ended_at)
        for path in result.unreadable:
            await media_events.segment_unreadable(self.deps, sid, path)
        await self.cluster.release(session_id, dead_owner)
        return True

    async def watch(self, interval: float) -> None:
        """Forever: recover the rooms of owners that stopped announcing themselves."""
        while True:
            await asyncio.sleep(interval)
            try:
                for session_id, owner in (await self.cluster.owned_rooms()).items():
                    if owner != self.node_id and await self.cluster.node_url(owner) is None:
                        await self.recover(session_id, owner)
            except Exception:
                log.exception("checking the call nodes failed")
