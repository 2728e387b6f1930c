"""
Tests for L{sockplay.server.limits.ConnectionLimits}: C{--max-connections}
and C{--max-per-peer}, counted in and out.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress

from sockplay.server.limits import ConnectionLimits
from sockplay.server.settings import ServerSettings


def peer(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


def test_busyPastMaxConnections() -> None:
    """
    Past C{maxConnections} a connection is refused as busy, and not
    counted; one counted out makes room again.
    """
    limits = ConnectionLimits(ServerSettings(maxConnections=2))
    assert limits.countIn(peer("192.0.2.1")) is None
    assert limits.countIn(peer("192.0.2.2")) is None
    assert limits.countIn(peer("192.0.2.3")) == ("busy", "server busy")
    assert limits.counted == 2
    limits.countOut(peer("192.0.2.1"))
    assert limits.countIn(peer("192.0.2.3")) is None


def test_peerLimitPerAddress() -> None:
    """
    Past C{maxPerPeer} connections from one address, another from it is
    refused, naming the address; other addresses are untouched.
    """
    limits = ConnectionLimits(ServerSettings(maxPerPeer=1))
    assert limits.countIn(peer("192.0.2.1")) is None
    assert limits.countIn(peer("192.0.2.1")) == (
        "peer-limit",
        "too many connections from 192.0.2.1",
    )
    assert limits.countIn(peer("192.0.2.2")) is None
    limits.countOut(peer("192.0.2.1"))
    assert limits.countIn(peer("192.0.2.1")) is None


def test_addressWithoutHostNotLimitedPerPeer() -> None:
    """
    A connection with no IP address (a UNIX socket) counts against
    C{maxConnections} only.
    """
    limits = ConnectionLimits(ServerSettings(maxPerPeer=1, maxConnections=3))
    unix = UNIXAddress(b"/tmp/echo.sock")
    assert limits.countIn(unix) is None
    assert limits.countIn(unix) is None
    assert limits.countIn(None) is None
    assert limits.countIn(unix) == ("busy", "server busy")
