"""
Test doubles shared by the unit tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.test.iosim import FakeTransport, IOPump
from zope.interface import implementer

from sockplay.server.faultsettings import FAULT_KEYS, Faults
from sockplay.server.settings import ServerSettings

LOOPBACK_PEER = IPv4Address("TCP", "127.0.0.1", 40000)
LOOPBACK_HOST = IPv4Address("TCP", "127.0.0.1", 12345)


@implementer(IHalfCloseableDescriptor)
class HalfCloseableTransport(StringTransport):
    """
    A L{StringTransport} that, like a TCP connection, can close its write
    side alone.

    @ivar writeClosed: C{True} once L{loseWriteConnection} was called.
    @ivar aborted: C{True} once L{abortConnection} was called.
    """

    writeClosed = False
    aborted = False

    def __init__(self) -> None:
        super().__init__(hostAddress=LOOPBACK_HOST, peerAddress=LOOPBACK_PEER)

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    noDelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def writeConnectionLost(self, reason: Failure) -> None:
        pass

    def readConnectionLost(self, reason: Failure) -> None:
        pass


@implementer(IHalfCloseableDescriptor)
class HalfCloseableFakeTransport(FakeTransport):
    """
    An L{iosim} transport that records a half-close, for L{pumpWithHalfClose}
    to deliver to the peer.
    """

    writeClosed = False
    halfCloseDelivered = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


def halfCloseableClient(protocol: object) -> HalfCloseableFakeTransport:
    return HalfCloseableFakeTransport(protocol, isServer=False)


def halfCloseableServer(protocol: object) -> HalfCloseableFakeTransport:
    return HalfCloseableFakeTransport(protocol, isServer=True)


def pumpWithHalfClose(pump: IOPump) -> None:
    """
    Flush C{pump}, delivering each side's half-close to the other side's
    protocol once the bytes written before it have arrived, as TCP does.
    """
    for _ in range(100):
        pump.flush()
        moved = False
        for io, peer in ((pump.clientIO, pump.server), (pump.serverIO, pump.client)):
            if getattr(io, "writeClosed", False) and not io.halfCloseDelivered:
                io.halfCloseDelivered = True
                if not io.disconnecting:
                    peer.readConnectionLost()
                moved = True
        if not moved:
            return
    raise AssertionError("half-close pumping did not settle")


class MuteServer(Protocol):
    """
    A server that accepts and never answers.
    """


def acceptLatest(reactor: MemoryReactorClock, server: Protocol) -> iosim.IOPump:
    """
    Connect the latest connection attempt on C{reactor} to C{server}.
    """
    _, _, factory, _, _ = reactor.tcpClients[-1]
    client = factory.buildProtocol(None)
    return iosim.connect(
        server,
        halfCloseableServer(server),
        client,
        halfCloseableClient(client),
        greet=False,
    )


def refuseLatest(reactor: MemoryReactorClock) -> None:
    """
    Refuse the latest connection attempt on C{reactor}.
    """
    _, _, factory, _, _ = reactor.tcpClients[-1]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))


class FakeSendQueue:
    """
    What a server's connections read as the bytes their clients have not
    yet received (put one in the factory's C{unsentBytes}): a count set per
    transport; C{None}, as for a transport with no socket, for the others.

    @ivar unsent: the count for each transport.
    @ivar looks: how many times a connection asked.
    """

    def __init__(self) -> None:
        self.unsent: dict[object, int] = {}
        self.looks = 0

    def __call__(self, transport: object) -> int | None:
        self.looks += 1
        return self.unsent.get(transport)


def serverSettings(*args: Any, **values: Any) -> ServerSettings:
    """
    L{ServerSettings} as a test names them: fault keys (C{delay=0.5},
    C{dropRate=1}) go into its L{Faults}, the rest to the settings.
    """
    faults = {key: values.pop(key) for key in FAULT_KEYS if key in values}
    return ServerSettings(*args, faults=Faults(**faults), **values)
