"""ICE set-up for the hub: ICE servers, and the loopback workaround for tests on one machine.

aioice (used by aiortc) deliberately leaves 127.0.0.1 out of its host candidates
(``aioice.ice.get_host_addresses``). A browser on the same machine that only offers loopback
candidates (Chromium with ``--allow-loopback-in-peer-connection``), or a machine with no other
interface, then never connects. There is no option for it, so :func:`include_loopback_candidates`
wraps that module-level function to add 127.0.0.1 back. It is process-wide (aioice looks the
function up at gathering time) and meant for tests and single-machine set-ups; production
leaves it off and relies on real interfaces plus STUN/TURN servers.

:func:`enlarge_receive_buffers` raises SO_RCVBUF on a connection's UDP sockets. With the Linux
default (208 KiB, about 90 full-size datagrams) a process whose event loop is held up for a
fraction of a second by CPU contention loses packets in the kernel; a lost video packet that
NACK cannot recover stalls aiortc's jitter buffer until it overflows (seconds of video). Measured
with ``bench/call.py``: thousands of dropped datagrams at load 5 with the default.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def include_loopback_candidates(enabled: bool = True) -> None:
    """Make aioice offer (or stop offering) a 127.0.0.1 host candidate. Idempotent."""
    global _original_get_host_addresses
    if enabled and _original_get_host_addresses is None:
        original = aioice.ice.get_host_addresses
        _original_get_host_addresses = original

        def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            addresses = original(use_ipv4, use_ipv6)
            if use_ipv4 and LOOPBACK not in addresses:
                addresses.append(LOOPBACK)
            return addresses

        aioice.ice.get_host_addresses = with_loopback  # type: ignore[assignment]
    elif not enabled and _original_get_host_addresses is not None:
        aioice.ice.get_host_addresses = _original_get_host_addresses  # type: ignore[assignment]
        _original_get_host_addresses = None


def rtc_configuration(ice_servers: Sequence[str | RTCIceServer]) -> RTCConfiguration:
    """An RTCConfiguration with exactly these STUN/TURN servers (URLs, or RTCIceServer with
    credentials for TURN).

    An empty list must be passed explicitly: given ``None``, aiortc falls back to a public
    Google STUN server, which on an offline machine only delays every gathering.
    """
    servers = [s if isinstance(s, RTCIceServer) else RTCIceServer(urls=s) for s in ice_servers]
    return RTCConfiguration(iceServers=servers)


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int) -> None:
    """Ask for ``size`` bytes of kernel receive buffer on each of ``pc``'s UDP sockets.

    Call after ``setLocalDescription`` (the sockets exist once candidates are gathered). Linux
    caps the value at ``net.core.rmem_max``. aioice keeps its sockets in the private
    ``Connection._protocols``; if that changes this logs and does nothing.
    """
    transports = {transceiver.receiver.transport.transport for transceiver in
                  pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport.transport)
    for ice in transports:
        protocols = getattr(ice.iceGatherer._connection, "_protocols", None)
        if protocols is None:
            logger.warning("aioice internals changed: receive buffers left as they are")
            return
        for protocol in protocols:
            sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
