"""
Tests for the PROXY protocol: the header parser
(L{sockplay.server.proxyheader}, no I/O) and the wrapper of C{haproxy:}
listeners (L{sockplay.server.proxy}) on in-memory transports with a fake
clock: a header split across reads at every byte boundary, malformed
headers refused with one log line and no traceback, C{UNKNOWN} and
C{LOCAL}, one canonical form for IPv6, and the limits and the idle timeout
from the moment of accept (issue 10, defects 2, 4, 5 and 6).
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest
from support.fakes import HalfCloseableTransport, serverSettings
from support.proxyheaders import ESCAPE, MALFORMED_V1
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from sockplay.server import EchoReplyFactory
from sockplay.server.factory import CONNECTION_LOG_LEVELS
from sockplay.server.proxy import HeaderState, ProxyHeaderWrapper, ProxyWrappingFactory
from sockplay.server.proxyheader import TLV as ProxyTLV
from sockplay.server.proxyheader import (
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    HeaderParser,
    InvalidProxyHeader,
    ProxyHeader,
)
from sockplay.server.settings import ConnectionRecord

# What a load balancer says it relays: documentation addresses.
V1_TCP4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 12345\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 12345\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# The longest line the specification allows: 107 bytes, CRLF included.
V1_LONGEST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
# The client's own bytes, after the header.
MESSAGE = b"hello\n"
# Bytes a terminal would act on, which must never reach a log line.


def v2(command: int, family: int, block: bytes) -> bytes:
    """
    A version 2 header: signature, version 2 and C{command}, C{family},
    and the address block.
    """
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def v2TCP4(source: str, destination: str, ports: tuple[int, int], tlvs: bytes = b"") -> bytes:
    packed = bytes(int(part) for part in source.split(".")) + bytes(
        int(part) for part in destination.split(".")
    )
    return v2(0x1, 0x11, packed + struct.pack("!HH", *ports) + tlvs)


def v2TCP6(source: bytes, destination: bytes, ports: tuple[int, int]) -> bytes:
    return v2(0x1, 0x21, source + destination + struct.pack("!HH", *ports))


# 2001:db8::7 and 2001:db8::1, as 16 bytes.
SOURCE6 = bytes.fromhex("20010db8000000000000000000000007")
DESTINATION6 = bytes.fromhex("20010db8000000000000000000000001")
# A type-length-value record after the addresses (PP2_TYPE_AUTHORITY).
TLV = b"\x02" + struct.pack("!H", 11) + b"example.com"

V2_TCP4 = v2TCP4("192.0.2.7", "198.51.100.1", (40000, 12345))
V2_TCP4_TLV = v2TCP4("192.0.2.7", "198.51.100.1", (40000, 12345), TLV)
V2_TCP6 = v2TCP6(SOURCE6, DESTINATION6, (40000, 12345))
# HAProxy's health check on a send-proxy-v2 server.
V2_LOCAL = v2(0x0, 0x00, b"")

SOURCE4 = IPv4Address("TCP", "192.0.2.7", 40000)
HEADER4 = ProxyHeader(SOURCE4, IPv4Address("TCP", "198.51.100.1", 12345), protocol="TCP4")
HEADER6 = ProxyHeader(
    IPv6Address("TCP", "2001:db8::7", 40000),
    IPv6Address("TCP", "2001:db8::1", 12345),
    protocol="TCP6",
)
HEADER4_V2 = replace(HEADER4, version=2)

# Every valid header, with what it says.
VALID = [
    pytest.param(V1_TCP4, HEADER4, id="v1-tcp4"),
    pytest.param(V1_TCP6, HEADER6, id="v1-tcp6"),
    pytest.param(V1_UNKNOWN, ProxyHeader(), id="v1-unknown"),
    pytest.param(V1_LONGEST, ProxyHeader(), id="v1-longest"),
    pytest.param(V2_TCP4, HEADER4_V2, id="v2-tcp4"),
    pytest.param(
        V2_TCP4_TLV,
        replace(HEADER4_V2, tlvs=(ProxyTLV(0x02, b"example.com"),)),
        id="v2-tcp4-tlv",
    ),
    pytest.param(V2_TCP6, replace(HEADER6, version=2), id="v2-tcp6"),
    pytest.param(
        V2_LOCAL, ProxyHeader(version=2, command="LOCAL", protocol="UNSPEC"), id="v2-local"
    ),
]


def feedAll(pieces: list[bytes]) -> tuple[ProxyHeader | None, bytes]:
    """
    Feed C{pieces} to a new parser, one per read.

    @return: the header (once complete) and the bytes after it.
    """
    parser = HeaderParser()
    header = None
    for piece in pieces:
        assert header is None, "a header is complete before its last byte"
        header = parser.feed(piece)
    return header, parser.rest


# The parser: split reads (defect 5).


@pytest.mark.parametrize("data, expected", VALID)
def test_headerSplitAtEveryByteBoundary(data: bytes, expected: ProxyHeader) -> None:
    """
    A header, followed by the client's bytes, read in two pieces split at
    any byte: the same header, and the client's bytes intact.
    """
    stream = data + MESSAGE
    for split in range(len(data)):
        header, rest = feedAll([stream[:split], stream[split:]])
        assert (header, rest) == (expected, MESSAGE), split


@pytest.mark.parametrize("data, expected", VALID)
def test_headerOneBytePerRead(data: bytes, expected: ProxyHeader) -> None:
    """
    A header read one byte at a time is complete at its last byte.
    """
    assert feedAll([bytes([byte]) for byte in data]) == (expected, b"")


def test_v1PrefixShorterThanEightBytesWaits() -> None:
    """
    C{PROXY } alone (shorter than 8 bytes, the first read that Twisted's
    wrapper refused) is the start of a header: the parser waits.
    """
    parser = HeaderParser()
    assert parser.feed(b"PROXY ") is None
    assert parser.feed(V1_TCP4[6:]) == HEADER4


def test_v2PrefixShorterThanSixteenBytesWaits() -> None:
    """
    The v2 signature alone (shorter than 16 bytes) is waited on too.
    """
    parser = HeaderParser()
    assert parser.feed(V2_TCP4[:12]) is None
    assert parser.feed(V2_TCP4[12:]) == HEADER4_V2


# The parser: validation (defect 4).

MALFORMED = [
    pytest.param(b"PROXY TCP4 " + ESCAPE + b" 5.6.7.8 1 2\r\n", "source address", id="escape"),
    pytest.param(b"PROXY TCP4 not-an-ip 5.6.7.8 1 2\r\n", "source address", id="not-an-ip"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", "source port", id="port-99999"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "destination port", id="port-65536"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 abc 2\r\n", "source port", id="port-abc"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "source port", id="port-leading-0"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "source port", id="port-negative"),
    pytest.param(b"PROXY TCP4 \xff\xfe.1.1.1 5.6.7.8 1 2\r\n", "source address", id="non-utf8"),
    pytest.param(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "source address", id="ipv4-leading-0"),
    pytest.param(b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "source address", id="ipv4-256"),
    pytest.param(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "destination address", id="tcp4-ipv6"),
    pytest.param(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "source address", id="tcp6-ipv4"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address", id="ipv6-scope"),
    pytest.param(b"PROXY TCP6 2001:db8:::7 ::1 1 2\r\n", "source address", id="ipv6-bad"),
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol", id="tcp5"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "one space apart", id="field-missing"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "one space apart", id="field-extra"),
    pytest.param(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "one space apart", id="double-space"),
    pytest.param(b"PROXY TCP4\r\n", "one space apart", id="no-addresses"),
    pytest.param(b"PROXY \r\n", "protocol", id="empty"),
    pytest.param(b"PROXY UNKNOWNX\r\n", "protocol", id="unknownx"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF", id="bare-lf"),
    pytest.param(b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", "longer than 107", id="v1-too-long"),
    pytest.param(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY header", id="lowercase"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", "not a PROXY header", id="http"),
    pytest.param(b"hello\n", "not a PROXY header", id="plain-message"),
    pytest.param(V2_TCP4[:12] + b"\x11" + V2_TCP4[13:], "version", id="v2-version-1"),
    pytest.param(v2(0x2, 0x11, V2_TCP4[16:]), "command", id="v2-command-2"),
    pytest.param(v2(0x1, 0x13, V2_TCP4[16:]), "family", id="v2-protocol-3"),
    pytest.param(v2(0x1, 0x41, V2_TCP4[16:]), "family", id="v2-family-4"),
    pytest.param(v2(0x1, 0x11, V2_TCP4[16:27]), "too short", id="v2-tcp4-short"),
    pytest.param(v2(0x1, 0x21, V2_TCP4[16:]), "too short", id="v2-tcp6-short"),
    pytest.param(v2(0x1, 0x31, b"\x00" * 215), "too short", id="v2-unix-short"),
    pytest.param(v2(0x1, 0x00, b"\x00" * (V2_MAX_LENGTH + 1)), "longer", id="v2-too-long"),
    pytest.param(V2_SIGNATURE[:5] + b"X" + V2_SIGNATURE[6:], "not a PROXY header", id="v2-sig"),
]


@pytest.mark.parametrize("data, reason", MALFORMED)
def test_malformedHeaderRefused(data: bytes, reason: str) -> None:
    """
    A header that breaks a rule of the specification is refused, with a
    reason that names the rule in plain ASCII and quotes none of the bytes.
    """
    with pytest.raises(InvalidProxyHeader) as caught:
        HeaderParser().feed(data + MESSAGE)
    text = str(caught.value)
    assert reason in text
    assert text.isascii() and text.isprintable()
    assert "INJECTED" not in text and "not-an-ip" not in text and "99999" not in text


@pytest.mark.parametrize("data, reason", MALFORMED)
def test_malformedHeaderRefusedWhicheverTheSplit(data: bytes, reason: str) -> None:
    """
    A malformed header is refused however its bytes are split across reads,
    never accepted.
    """
    stream = data + MESSAGE
    for split in range(1, len(stream)):
        parser = HeaderParser()
        with pytest.raises(InvalidProxyHeader):
            assert parser.feed(stream[:split]) is None
            parser.feed(stream[split:])


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"G", id="first-byte"),
        pytest.param(b"PROXX", id="v1-signature"),
        pytest.param(V2_SIGNATURE[:7] + b"X", id="v2-signature"),
        pytest.param(b"PROXY TCP4 1.2.3.4\n", id="bare-lf"),
        pytest.param(b"PROXY " + b"1" * (V1_MAX_LENGTH - 6), id="107-bytes-no-crlf"),
        pytest.param(V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 2), id="v2-short-block"),
        pytest.param(V2_SIGNATURE + b"\x21\x00\xff\xff", id="v2-long-block"),
    ],
)
def test_provablyInvalidRefusedAtOnce(start: bytes) -> None:
    """
    Bytes that cannot start a valid header are refused as soon as they
    arrive, not after a timeout: a first byte that starts neither
    signature, a broken signature, a v1 line with a bare LF or 107 bytes
    without CRLF, a v2 length out of bounds for its family.
    """
    with pytest.raises(InvalidProxyHeader):
        HeaderParser().feed(start)


def test_v1UnknownWithAnythingAccepted() -> None:
    """
    C{PROXY UNKNOWN} followed by anything up to CRLF is valid (the
    specification: the receiver ignores the rest) and names no address.
    """
    header, rest = feedAll([b"PROXY UNKNOWN " + ESCAPE + b" whatever\r\n" + MESSAGE])
    assert (header, rest) == (ProxyHeader(), MESSAGE)


@pytest.mark.parametrize(
    "family, block, protocol",
    [
        pytest.param(0x00, b"", "UNSPEC", id="unspec"),
        pytest.param(0x12, V2_TCP4[16:], "UDP4", id="udp4"),
        pytest.param(0x22, V2_TCP6[16:], "UDP6", id="udp6"),
        pytest.param(0x31, b"/run/client.sock".ljust(216, b"\x00"), "UNIX_STREAM", id="unix"),
        pytest.param(0x32, b"/run/client.sock".ljust(216, b"\x00"), "UNIX_DGRAM", id="unix-dgram"),
    ],
)
def test_v2WithoutTCPAddressesNamesNone(family: int, block: bytes, protocol: str) -> None:
    """
    A v2 PROXY header for UNSPEC, or for UDP or UNIX addresses (which the
    specification lets a receiver treat as UNSPEC), names no address: the
    connection's own stand. It names its protocol, and its TLVs are read.
    """
    assert feedAll([v2(0x1, family, block + TLV) + MESSAGE]) == (
        ProxyHeader(version=2, protocol=protocol, tlvs=(ProxyTLV(0x02, b"example.com"),)),
        MESSAGE,
    )


def test_v2LocalIgnoresItsBlock() -> None:
    """
    The v2 C{LOCAL} command (a load balancer's own connection) names no
    address, whatever its block holds, TLVs included (the specification:
    the receiver discards it).
    """
    assert feedAll([v2(0x0, 0x11, V2_TCP4[16:] + b"\xff\xff") + MESSAGE]) == (
        ProxyHeader(version=2, command="LOCAL", protocol="TCP4"),
        MESSAGE,
    )


def test_v2TLVsInOrder() -> None:
    """
    Every TLV after the addresses comes out, in order, with its exact
    bytes; an empty value is a TLV too.
    """
    tlvs = (
        TLV
        + b"\x05" + struct.pack("!H", 4) + b"\x00\x01\xfe\xff"
        + b"\x04" + struct.pack("!H", 0)
    )
    header, rest = feedAll([v2TCP4("192.0.2.7", "198.51.100.1", (40000, 12345), tlvs) + MESSAGE])
    assert header is not None
    assert header.tlvs == (
        ProxyTLV(0x02, b"example.com"),
        ProxyTLV(0x05, b"\x00\x01\xfe\xff"),
        ProxyTLV(0x04, b""),
    )
    assert rest == MESSAGE


@pytest.mark.parametrize(
    "tlvs",
    [
        pytest.param(b"\x02", id="type-only"),
        pytest.param(b"\x02\x00", id="half-a-length"),
        pytest.param(b"\x02" + struct.pack("!H", 12) + b"example.com", id="length-past-end"),
        pytest.param(TLV + b"\x05" + struct.pack("!H", 0xFFFF), id="second-past-end"),
    ],
)
def test_v2BrokenTLVsRefused(tlvs: bytes) -> None:
    """
    TLVs that do not exactly fill the rest of the address block (a record
    cut short, a length past the end) make the header invalid, with a
    reason that names the rule.
    """
    with pytest.raises(InvalidProxyHeader, match="TLV"):
        HeaderParser().feed(v2TCP4("192.0.2.7", "198.51.100.1", (40000, 12345), tlvs))


# The parser: one canonical form for IPv6 (defect 6).


@pytest.mark.parametrize(
    "packed, text",
    [
        (SOURCE6, "2001:db8::7"),
        (bytes.fromhex("20010db8000000010001000100010001"), "2001:db8:0:1:1:1:1:1"),
        (bytes.fromhex("00000000000000000000ffffc0000207"), "::ffff:192.0.2.7"),
        (bytes(15) + b"\x01", "::1"),
    ],
)
def test_ipv6CanonicalWhicheverVersion(packed: bytes, text: str) -> None:
    """
    An IPv6 source comes out in the form a C{tcp6:} listener reports (RFC
    5952, as C{inet_ntop}), from v2's 16 bytes and from v1's text in any
    spelling (uncompressed, upper case).
    """
    fromV2, _ = feedAll([v2TCP6(packed, DESTINATION6, (1, 2))])
    spelled = ":".join(packed[i : i + 2].hex().upper() for i in range(0, 16, 2))
    fromV1, _ = feedAll([f"PROXY TCP6 {spelled} ::1 1 2\r\n".encode()])
    assert fromV2 is not None and fromV1 is not None
    assert fromV2.source == fromV1.source == IPv6Address("TCP", text, 1)


# The wrapper.


@pytest.fixture
def records() -> list[ConnectionRecord]:
    return []


def makeFactory(
    records: list[ConnectionRecord] | None = None, clock: Clock | None = None, **settings: Any
) -> EchoReplyFactory:
    settings.setdefault("framing", "line")
    factory = EchoReplyFactory(serverSettings(**settings), clock=clock or Clock(), hostname="box")
    if records is not None:
        factory.observers.append(records.append)
    return factory


def accept(
    factory: EchoReplyFactory, peer: str = "10.0.0.1", port: int = 50000
) -> tuple[ProxyHeaderWrapper, HalfCloseableTransport]:
    """
    Accept a connection on a C{haproxy:} listener of C{factory}, from the
    load balancer at C{peer}.
    """
    transport = HalfCloseableTransport()
    transport.peerAddr = IPv4Address("TCP", peer, port)
    wrapper = ProxyWrappingFactory(factory).buildProtocol(transport.peerAddr)
    assert isinstance(wrapper, ProxyHeaderWrapper)
    wrapper.makeConnection(transport)
    return wrapper, transport


def lose(wrapper: ProxyHeaderWrapper, transport: HalfCloseableTransport) -> None:
    """
    Deliver the end of a connection that the server closed.
    """
    assert transport.disconnecting
    wrapper.connectionLost(Failure(ConnectionDone()))


@pytest.mark.parametrize("data", [V1_TCP4, V2_TCP4])
def test_wrapperHeaderSplitAtEveryByteBoundary(data: bytes) -> None:
    """
    Through the wrapper, a header split at any byte (the first read as
    short as one byte) connects the protocol with the original client as
    its peer, and the client's message is answered.
    """
    stream = data + MESSAGE
    for split in range(1, len(stream)):
        factory = makeFactory(prefix=b"{peer} ")
        wrapper, transport = accept(factory)
        wrapper.dataReceived(stream[:split])
        wrapper.dataReceived(stream[split:])
        assert transport.value() == b"192.0.2.7 hello\n", split
        [protocol] = factory.connections
        assert protocol.peerAddress == SOURCE4


@pytest.mark.parametrize(
    "data",
    [
        *MALFORMED_V1,
        pytest.param(ESCAPE + b"\n", id="no-header"),
        pytest.param(v2(0x1, 0x41, V2_TCP4[16:]), id="v2-family"),
    ],
)
def test_wrapperRefusesMalformedHeader(
    data: bytes, logged: list[str], records: list[ConnectionRecord]
) -> None:
    """
    A malformed header closes the connection cleanly, with nothing sent
    (there is no framing to answer in yet) and one log line, under the
    socket's peer, that names the broken rule and none of the bytes; no
    traceback, and the protocol is never connected.
    """
    factory = makeFactory(records)
    wrapper, transport = accept(factory)
    wrapper.dataReceived(data + MESSAGE)
    assert transport.value() == b""
    lose(wrapper, transport)
    assert [record.outcome for record in records] == ["bad-header"]
    assert records[0].peer == "tcp:10.0.0.1:50000"
    [line] = logged
    assert ", bad-header (" in line and "Traceback" not in line
    assert "\x1b" not in line and "INJECTED" not in line
    assert not factory.connections and not factory.awaiting


def test_wrapperHeaderRefusedLogEvent() -> None:
    """
    The refused header's log event carries the reason as a field of its own.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        wrapper, transport = accept(makeFactory())
        wrapper.dataReceived(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n")
        lose(wrapper, transport)
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = events
    assert event["outcome"] == "bad-header"
    assert event["detail"] == "v1 source port is not a decimal number in 0..65535"


@pytest.mark.parametrize("data", [V1_UNKNOWN, V2_LOCAL])
def test_wrapperUnknownAndLocalUseTheSocketsAddresses(data: bytes) -> None:
    """
    C{PROXY UNKNOWN} and v2 C{LOCAL} are accepted; the protocol's peer is
    then the socket's own.
    """
    factory = makeFactory(prefix=b"{peer} ")
    wrapper, transport = accept(factory)
    wrapper.dataReceived(data + MESSAGE)
    assert transport.value() == b"10.0.0.1 hello\n"


def test_wrapperIPv6PeerCanonical() -> None:
    """
    A client named in v2 and in v1 (uncompressed) gets one C{{peer}}, one
    log address, and one per-peer limit key: the second connection is over
    C{--max-per-peer 1} for the same client.
    """
    factory = makeFactory(prefix=b"{peer} ", maxPerPeer=1, keepOpen=True)
    first, firstTransport = accept(factory, "10.0.0.1")
    first.dataReceived(V2_TCP6 + MESSAGE)
    assert firstTransport.value() == b"2001:db8::7 hello\n"
    second, secondTransport = accept(factory, "10.0.0.2")
    second.dataReceived(b"PROXY TCP6 2001:0DB8:0:0:0:0:0:7 ::1 1 2\r\n")
    assert secondTransport.value() == b"Error: too many connections from 2001:db8::7\n"


def test_wrapperHalfHeaderTimedOut(logged: list[str], records: list[ConnectionRecord]) -> None:
    """
    A connection whose header is not complete within the idle timeout is
    closed, with nothing sent and one log line.
    """
    clock = Clock()
    factory = makeFactory(records, clock, idleTimeout=2)
    wrapper, transport = accept(factory)
    wrapper.dataReceived(b"PROXY TCP4 192.0.")
    clock.advance(1.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.value() == b""
    lose(wrapper, transport)
    assert [(r.outcome, r.bytesIn, r.duration) for r in records] == [("idle-timeout", 17, 2.0)]
    [line] = logged
    assert "idle-timeout (PROXY header incomplete)" in line


def test_wrapperSilentTimedOut(records: list[ConnectionRecord]) -> None:
    """
    A connection that sends nothing at all is closed at the idle timeout.
    """
    clock = Clock()
    wrapper, transport = accept(makeFactory(records, clock, idleTimeout=2))
    clock.advance(2)
    lose(wrapper, transport)
    assert [record.outcome for record in records] == ["idle-timeout"]
    assert not clock.getDelayedCalls()


def test_wrapperNoTimeoutWhenIdleTimeoutOff() -> None:
    """
    With the idle timeout off, the header is waited for without a timer.
    """
    clock = Clock()
    accept(makeFactory(clock=clock, idleTimeout=0))
    assert not clock.getDelayedCalls()


def test_wrapperTimerCancelledOnceHeaderIn() -> None:
    """
    The header's timer is cancelled once the header is in; the protocol's
    own idle timeout (the server's sweep) takes over.
    """
    clock = Clock()
    factory = makeFactory(clock=clock, idleTimeout=2)
    wrapper, _ = accept(factory)
    [timer] = clock.getDelayedCalls()
    wrapper.dataReceived(V1_TCP4)
    assert not timer.active()
    [protocol] = factory.connections
    clock.advance(2.5)
    assert protocol.outcome == "idle-timeout"


def test_wrapperTimerCancelledWhenClientGoes() -> None:
    """
    A client that goes before its header is complete takes its timer
    with it.
    """
    clock = Clock()
    wrapper, _ = accept(makeFactory(clock=clock, idleTimeout=2))
    wrapper.connectionLost(Failure(ConnectionLost()))
    assert not clock.getDelayedCalls()


def test_wrapperAwaitingCountsAgainstMaxConnections() -> None:
    """
    Connections awaiting their header count against C{--max-connections}:
    past it, the next is refused with the usual error at once; once they
    time out, a new one is admitted.
    """
    clock = Clock()
    factory = makeFactory(clock=clock, idleTimeout=2, maxConnections=2)
    waiting = [accept(factory) for _ in range(2)]
    third, thirdTransport = accept(factory)
    assert thirdTransport.value() == b"Error: server busy\n"
    assert thirdTransport.disconnecting and third.state is HeaderState.CONNECTED
    clock.advance(2)
    for wrapper, transport in waiting:
        lose(wrapper, transport)
    fourth, fourthTransport = accept(factory)
    fourth.dataReceived(V1_TCP4 + MESSAGE)
    assert fourthTransport.value() == b"Message received: hello\n"


def test_wrapperAwaitingCountsUnderTheSocketsPeer() -> None:
    """
    A connection awaiting its header counts against C{--max-per-peer}
    under the socket's peer (the load balancer); once the header names the
    client, it counts under the client instead.
    """
    factory = makeFactory(maxPerPeer=1, keepOpen=True)
    first, _ = accept(factory, "10.0.0.1")
    _, refused = accept(factory, "10.0.0.1")
    assert refused.value() == b"Error: too many connections from 10.0.0.1\n"
    first.dataReceived(V1_TCP4)
    again, againTransport = accept(factory, "10.0.0.1")
    assert not againTransport.disconnecting
    again.dataReceived(V1_TCP4)
    assert againTransport.value() == b"Error: too many connections from 192.0.2.7\n"


def test_wrapperHeaderlessHealthCheckIsProbe(records: list[ConnectionRecord]) -> None:
    """
    A health check that connects and closes (or resets) without a byte is a
    C{probe}, logged at debug level only.
    """
    events: list[LogEvent] = []
    CONNECTION_LOG_LEVELS.setLogLevelForNamespace(EchoReplyFactory.log.namespace, LogLevel.debug)
    globalLogPublisher.addObserver(events.append)
    try:
        factory = makeFactory(records)
        for reason in (ConnectionDone, ConnectionLost):
            wrapper, _ = accept(factory)
            wrapper.connectionLost(Failure(reason()))
    finally:
        globalLogPublisher.removeObserver(events.append)
        CONNECTION_LOG_LEVELS.clearLogLevels()
    assert [record.outcome for record in records] == ["probe", "probe"]
    assert {event["log_level"] for event in events} == {LogLevel.debug}


def test_wrapperHeaderlessHalfCloseIsProbe(records: list[ConnectionRecord]) -> None:
    """
    A client that half-closes before sending anything is a probe too, and
    its connection is closed.
    """
    wrapper, transport = accept(makeFactory(records))
    wrapper.readConnectionLost()
    lose(wrapper, transport)
    assert [record.outcome for record in records] == ["probe"]


@pytest.mark.parametrize(
    "reason, outcome", [(ConnectionDone, "no-message"), (ConnectionLost, "reset")]
)
def test_wrapperClientGoneMidHeader(
    reason: type[Exception], outcome: str, records: list[ConnectionRecord]
) -> None:
    """
    A client that closes or resets in the middle of its header is logged
    as for a message cut short, under the socket's peer.
    """
    factory = makeFactory(records)
    wrapper, _ = accept(factory)
    wrapper.dataReceived(b"PROXY TCP4 1.2")
    wrapper.connectionLost(Failure(reason()))
    assert [(r.outcome, r.peer) for r in records] == [(outcome, "tcp:10.0.0.1:50000")]
    assert not factory.awaiting


def test_wrapperHalfClosePassesThrough() -> None:
    """
    After the header, the client's half-close reaches the protocol, which
    answers what the input completes.
    """
    factory = makeFactory(framing="eof")
    wrapper, transport = accept(factory)
    wrapper.dataReceived(V1_TCP4 + b"all of it")
    wrapper.readConnectionLost()
    assert transport.value() == b"Message received: all of it"
    assert transport.disconnecting


def test_wrapperDrainClosesAwaitingAtOnce(records: list[ConnectionRecord]) -> None:
    """
    A drain closes a connection still awaiting its header at once (it is
    owed nothing); a header that arrives after that is ignored.
    """
    factory = makeFactory(records)
    wrapper, transport = accept(factory)
    factory.drain(10)
    assert transport.disconnecting
    wrapper.dataReceived(V1_TCP4 + MESSAGE)
    assert transport.value() == b"" and not factory.connections
    lose(wrapper, transport)
    assert [record.outcome for record in records] == ["shutdown"]


def test_wrapperAwaitingReportedOnceToObservers() -> None:
    """
    The opened and closed observers (metrics) see each connection once,
    whether it ends while awaiting its header or after.
    """
    opened: list[None] = []
    closed: list[ConnectionRecord] = []
    factory = makeFactory(closed)
    factory.openedObservers.append(lambda: opened.append(None))
    ended, endedTransport = accept(factory)
    ended.dataReceived(b"hello\n")
    lose(ended, endedTransport)
    served, _ = accept(factory)
    served.dataReceived(V1_TCP4 + MESSAGE)
    served.connectionLost(Failure(ConnectionDone()))
    assert (len(opened), [record.outcome for record in closed]) == (2, ["bad-header", "ok"])


def test_wrapperQuietLogsNothing(logged: list[str]) -> None:
    """
    With C{--quiet}, a refused header is not logged either.
    """
    wrapper, transport = accept(makeFactory(quiet=True))
    wrapper.dataReceived(b"hello\n")
    lose(wrapper, transport)
    assert logged == []


def test_idleTimeoutCountsFromTheAccept(records: list[ConnectionRecord]) -> None:
    """
    The idle timeout holds the header and the first message together: a
    client whose header arrives just before the timeout does not get a
    second full period for its message, and the logged duration counts
    from the accept.
    """
    clock = Clock()
    clock.advance(100)
    factory = makeFactory(records, clock, idleTimeout=2)
    wrapper, transport = accept(factory)
    clock.advance(1.9)
    wrapper.dataReceived(V1_TCP4 + b"half a mess")
    for _ in range(5):
        clock.advance(0.1)
    assert transport.value() == b"Error: idle timeout (2 s)\n"
    wrapper.connectionLost(Failure(ConnectionDone()))
    [record] = records
    assert (record.outcome, record.duration) == ("idle-timeout", pytest.approx(2.4))
