"""
Tests for L{sockplay.server.udp}: the datagram protocol on a fake transport, the
service against a fake reactor, and both on a real loopback UDP socket.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest
from support.realreactor import resultOf, spinUntil
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.protocol import DatagramProtocol

from sockplay.server.listening import (
    MAX_DATAGRAM,
    MAX_REPLY,
    EchoReplyDatagramProtocol,
    UDPService,
    makeUDPService,
)

LOOPBACK = "127.0.0.1"
SENDER = (LOOPBACK, 40000)
PREFIX = b"Message received: "


class RecordingTransport:
    """
    A datagram transport that records what is written to whom, or raises
    C{error} on every write.
    """

    def __init__(self, error: Exception | None = None) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.error = error

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((datagram, addr))


def connected(transport: RecordingTransport, prefix: bytes = PREFIX) -> EchoReplyDatagramProtocol:
    """
    A protocol with C{prefix}, started on C{transport}.
    """
    protocol = EchoReplyDatagramProtocol(prefix)
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return protocol


class FakePort:
    """
    A listening UDP port that, like the reactor's, connects its protocol
    when it starts and disconnects it when stopped, and remembers being
    stopped.
    """

    def __init__(self, host: IPv4Address, protocol: DatagramProtocol) -> None:
        self.host = host
        self.stopped = False
        self.protocol = protocol
        protocol.makeConnection(self)  # type: ignore[arg-type]

    def getHost(self) -> IPv4Address:
        return self.host

    def stopListening(self) -> None:
        self.stopped = True
        self.protocol.doStop()


class FakeUDPReactor:
    """
    Records each C{listenUDP} call, or raises C{error}.
    """

    def __init__(self, error: Exception | None = None) -> None:
        self.udpServers: list[tuple[int, DatagramProtocol, str, int]] = []
        self.error = error

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakePort:
        if self.error is not None:
            raise self.error
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return FakePort(IPv4Address("UDP", interface, port), protocol)


def test_datagramGetsPrefixedReply() -> None:
    """
    One datagram gets one reply, the prefix and its bytes, sent to its
    sender.
    """
    transport = RecordingTransport()
    connected(transport).datagramReceived(b"Hello Server !", SENDER)
    assert transport.written == [(b"Message received: Hello Server !", SENDER)]


def test_eachSenderGetsItsOwnReply() -> None:
    """
    Datagrams from different senders are answered in order, each to its
    own sender; bytes of any value pass through.
    """
    transport = RecordingTransport()
    protocol = connected(transport, b"> ")
    other = (LOOPBACK, 40001)
    protocol.datagramReceived(b"\x00\xff", SENDER)
    protocol.datagramReceived(b"two", other)
    assert transport.written == [(b"> \x00\xff", SENDER), (b"> two", other)]


def test_emptyDatagramGetsPrefix() -> None:
    """
    An empty datagram is a message too: its reply is the prefix alone.
    """
    transport = RecordingTransport()
    connected(transport).datagramReceived(b"", SENDER)
    assert transport.written == [(PREFIX, SENDER)]


def test_largestDatagramAnswered() -> None:
    """
    A datagram whose reply just fits in one UDP datagram (65507 bytes with
    the prefix) gets it.
    """
    transport = RecordingTransport()
    protocol = connected(transport)
    datagram = b"x" * (MAX_REPLY - len(PREFIX))
    protocol.datagramReceived(datagram, SENDER)
    assert transport.written == [(PREFIX + datagram, SENDER)]
    assert len(transport.written[0][0]) == MAX_REPLY


def test_oversizedDatagramGetsError() -> None:
    """
    A datagram one byte longer gets an error reply naming the limit (65507
    minus the prefix) instead.
    """
    transport = RecordingTransport()
    protocol = connected(transport)
    protocol.datagramReceived(b"x" * (MAX_REPLY - len(PREFIX) + 1), SENDER)
    limit = MAX_REPLY - len(PREFIX)
    assert transport.written == [
        (f"Error: message too long (limit {limit} bytes)\n".encode(), SENDER)
    ]


@pytest.mark.parametrize(
    "error",
    [
        MessageLengthError("message too long"),
        OSError(errno.ECONNREFUSED, "Connection refused"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
    ],
    ids=["EMSGSIZE", "ECONNREFUSED", "ENETUNREACH"],
)
def test_sendErrorLogged(error: Exception, logged: list[str]) -> None:
    """
    A reply that cannot be sent is logged, naming the sender; the error does
    not escape the protocol.
    """
    connected(RecordingTransport(error)).datagramReceived(b"hi", SENDER)
    assert len(logged) == 1
    assert logged[0].startswith("Cannot send a reply to 127.0.0.1:40000: ")


def test_udpServiceListens(logged: list[str]) -> None:
    """
    The service listens on its port and interface while running, reading
    datagrams of any size, names its address once started, and stops
    listening when stopped.
    """
    reactor = FakeUDPReactor()
    service = makeUDPService(9999, LOOPBACK, b"P: ", reactor)  # type: ignore[arg-type]
    service.privilegedStartService()
    service.startService()
    [(port, protocol, interface, maxPacketSize)] = reactor.udpServers
    assert (port, interface, maxPacketSize) == (9999, LOOPBACK, MAX_DATAGRAM)
    assert isinstance(protocol, EchoReplyDatagramProtocol)
    assert protocol.prefix == b"P: "
    assert logged == ["Listening on udp:127.0.0.1:9999 (UDP)"]
    listening = service.port
    assert isinstance(listening, FakePort)
    service.stopService()
    assert (service.port, listening.stopped) == (None, True)


def test_udpServiceCannotListen() -> None:
    """
    A UDP port that cannot be had ends the program with one line naming it
    (a L{SystemExit}, no traceback).
    """
    reactor = FakeUDPReactor(CannotListenError(LOOPBACK, 9999, OSError(98, "Address in use")))
    service = makeUDPService(9999, LOOPBACK, PREFIX, reactor)  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as info:
        service.privilegedStartService()
    assert str(info.value.code) == (
        "Error: cannot listen on udp:9999:interface=127.0.0.1: [Errno 98] Address in use"
    )


@pytest.fixture
def udpServer() -> Iterator[UDPService]:
    """
    A UDP echo-reply service on an ephemeral loopback port of the real
    reactor, stopped after the test.
    """
    service = makeUDPService(0, LOOPBACK, PREFIX)
    service.privilegedStartService()
    service.startService()
    try:
        yield service
    finally:
        resultOf(service.stopService(), "the UDP port to close")


def exchange(port: int, datagram: bytes) -> tuple[bytes, tuple[str, int]]:
    """
    Send C{datagram} from a fresh loopback socket to C{port}, iterate the
    global reactor until a reply arrives, and return it with its source.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        sock.sendto(datagram, (LOOPBACK, port))
        replies: list[tuple[bytes, tuple[str, int]]] = []

        def replied() -> bool:
            try:
                replies.append(sock.recvfrom(MAX_DATAGRAM))
            except BlockingIOError:
                return False
            return True

        spinUntil(replied, f"a reply to a {len(datagram)}-byte datagram")
    return replies[0]


def test_udpOverRealSocket(udpServer: UDPService) -> None:
    """
    On a real loopback port 0, the service's port tells the port it got; a
    datagram sent there gets its reply from that port, and a datagram far
    above Twisted's default 8192-byte read is answered whole.
    """
    assert udpServer.port is not None
    address = udpServer.port.getHost()
    port = address.port  # type: ignore[attr-defined]
    assert (address.type, address.host) == ("UDP", LOOPBACK)  # type: ignore[attr-defined]
    assert exchange(port, b"Hello Server !") == (
        b"Message received: Hello Server !",
        (LOOPBACK, port),
    )
    large = bytes(range(256)) * 200
    assert exchange(port, large)[0] == PREFIX + large


def test_udpOversizedOverRealSocket(udpServer: UDPService) -> None:
    """
    The largest datagram IPv4 carries (65507 bytes) is read whole, and its
    reply, which would not fit, is the error naming the limit.
    """
    assert udpServer.port is not None
    port = udpServer.port.getHost().port  # type: ignore[attr-defined]
    reply, _ = exchange(port, b"x" * MAX_REPLY)
    assert reply == f"Error: message too long (limit {MAX_REPLY - len(PREFIX)} bytes)\n".encode()
