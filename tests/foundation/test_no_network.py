"""The test run's network guard (tests/network_guard.py): nothing beyond this machine is
reached while testing, and a test that tries fails even if the code swallowed the error."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.network_guard import GUARD, NetworkBlocked


def test_a_connect_beyond_loopback_is_refused_and_fails_the_test() -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("192.0.2.10", 443), timeout=1)  # TEST-NET-1
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("speech.platform.bing.com", 443)
    # Recorded even though the error was caught: the guard would fail this test when it ends.
    assert any("192.0.2.10" in v for v in GUARD.violations)
    assert any("bing.com" in v for v in GUARD.violations)
    GUARD.violations.clear()  # (this test expected them)


async def test_asyncio_and_aiohttp_clients_are_refused_too(offline_network: list[str]) -> None:
    import aiohttp

    with pytest.raises(OSError):
        await asyncio.open_connection("198.51.100.7", 80)  # TEST-NET-2
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):
            await client.get("https://pypi.org/simple/", timeout=aiohttp.ClientTimeout(5))
    assert len(offline_network) == 2 and GUARD.violations == []


async def test_loopback_is_allowed() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for host in ("127.0.0.1", "localhost"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"hello")
            assert await reader.read(5) == b"hello"
            writer.close()
    assert GUARD.violations == []
