"""No network at test time: a test that connects anywhere but this machine fails.

Every socket connect (and every name lookup, which would send a DNS query) goes through a guard
for the whole run: loopback addresses, Unix sockets and local names pass; anything else is
refused with an OSError, as an offline machine would refuse it, *and* the test fails when it
ends, even if the code under test swallowed the error (a fallback that hides a network call
is exactly what this guard is for). The test data the suite needs comes from `bin/setup`
(its test-data step) or is generated.

A test that is about behaviour without a network asks for the `offline_network` fixture: the
attempts are refused the same way and collected for it to look at, without failing it.
Child processes (browsers, app nodes) are not covered; they are given loopback URLs only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class NetworkBlocked(OSError):
    """Raised for a connection the test run does not allow (an OSError, as offline)."""


class _Guard:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.expected: list[str] | None = None  # set by `offline_network`

    def refuse(self, what: str) -> NetworkBlocked:
        (self.expected if self.expected is not None else self.violations).append(what)
        return NetworkBlocked(f"network access blocked in tests: {what}")


GUARD = _Guard()


def _local_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    name = str(host).strip("[]").split("%")[0]
    if name.lower() in LOCAL_NAMES or name.lower().endswith(".localhost") or name == "":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) \
            and not _local_host(address[0]):
        raise GUARD.refuse(f"connect to {address[0]}:{address[1]}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _connect_ex(self, address)


def _ip_literal(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # An address needs no lookup (its connect is checked); a name would send a DNS query.
    if not _local_host(host) and not _ip_literal(host):
        GUARD.refuse(f"name lookup of {host}")
        raise socket.gaierror(socket.EAI_NONAME, f"name lookup blocked in tests: {host}")
    return _getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fails the test that tried to reach beyond this machine (see the module docstring)."""
    GUARD.violations.clear()
    yield
    found, GUARD.violations[:] = list(GUARD.violations), []
    if found:
        pytest.fail("the test tried to use the network: " + "; ".join(sorted(set(found))),
                    pytrace=False)


@pytest.fixture
def offline_network() -> Iterator[list[str]]:
    """For tests of offline behaviour: attempts are refused and listed here, not failed."""
    GUARD.expected = []
    try:
        yield GUARD.expected
    finally:
        GUARD.expected = None


install()
