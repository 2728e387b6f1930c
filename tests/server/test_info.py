"""
Tests for L{sockplay.server.info} (the C{--info} listener) and
L{sockplay.server.tls} (the server's TLS context, mutual TLS and handshake
failures), in memory: fake transports, a fake clock, and TLS over
Twisted's in-memory I/O pump.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from support.fakes import LOOPBACK_HOST, LOOPBACK_PEER, HalfCloseableTransport, serverSettings
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from sockplay.server import EchoReplyFactory
from sockplay.server.info import InfoFactory, InfoProtocol, describeConnection, describeTLV
from sockplay.server.protocol import ConnectionState
from sockplay.server.proxy import ProxyWrappingFactory
from sockplay.server.proxyheader import TLV, InvalidProxyHeader, parseTLVs
from sockplay.server.settings import ConnectionRecord, ServerSettings
from sockplay.server.tls import (
    ClientCAError,
    ServerTLS,
    beneathTLS,
    describeHandshakeFailure,
    loadClientCAs,
    secure,
)

NOW = 1_800_000_000.25


def info(
    settings: ServerSettings | None = None, clock: Clock | None = None
) -> tuple[EchoReplyFactory, InfoFactory, Clock]:
    """
    A server factory, the info factory that reports on its behalf, and
    their clock, set to L{NOW}.
    """
    clock = clock or Clock()
    clock.advance(NOW)
    server = EchoReplyFactory(settings or ServerSettings(), clock=clock, hostname="testhost")
    return server, InfoFactory(server), clock


def connectInfo(factory: InfoFactory) -> tuple[InfoProtocol, HalfCloseableTransport]:
    protocol = factory.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport


# The TLVs.


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


@pytest.mark.parametrize(
    "kind, value, name, decoded",
    [
        (0x01, b"h2", "alpn", "h2"),
        (0x02, b"app.example", "authority", "app.example"),
        (0x03, b"\x12\x34\xab\xcd", "crc32c", "0x1234abcd"),
        (0x04, b"\x00\x00", "noop", None),
        (0x05, b"id-\xff", "unique_id", "id-\\xff"),
        (0x30, b"blue", "netns", "blue"),
        (0xE3, b"\x01", None, None),
        (0x07, b"", None, None),
    ],
)
def test_describeTLV(kind: int, value: bytes, name: str | None, decoded: Any) -> None:
    """
    A TLV is reported with its type, its name where the specification
    gives one, its value decoded where its type says how (text with
    anything but UTF-8 escaped, the CRC32C as hex), and its exact bytes in
    hex.
    """
    assert describeTLV(TLV(kind, value)) == {
        "type": kind,
        "name": name,
        "value": decoded,
        "hex": value.hex(),
    }


def test_describeSSLTLV() -> None:
    """
    The SSL TLV: its client flags, the verify result, and its sub-TLVs by
    their names (unknown ones by number only).
    """
    value = struct.pack("!BI", 0x01, 7) + tlv(0x21, b"TLSv1.2") + tlv(0x23, b"AES") + tlv(
        0x99, b"?"
    )
    assert describeTLV(TLV(0x20, value))["value"] == {
        "client": {"ssl": True, "cert_conn": False, "cert_sess": False},
        "verify": 7,
        "tlvs": [
            {"type": 0x21, "name": "version", "value": "TLSv1.2", "hex": b"TLSv1.2".hex()},
            {"type": 0x23, "name": "cipher", "value": "AES", "hex": b"AES".hex()},
            {"type": 0x99, "name": None, "value": None, "hex": "3f"},
        ],
    }


@pytest.mark.parametrize(
    "value, error",
    [
        (b"\x01\x00\x00", "shorter than its 5-byte fixed part"),
        (struct.pack("!BI", 1, 0) + b"\x21\x00\x09TLS", "SSL sub-TLV longer than"),
    ],
)
def test_brokenSSLTLVSaysSo(value: bytes, error: str) -> None:
    """
    An SSL TLV whose structure is broken is still reported (the header
    around it is valid), with what is wrong with it, and its bytes.
    """
    described = describeTLV(TLV(0x20, value))
    assert error in described["value"]["error"]
    assert described["hex"] == value.hex()


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8))
def test_tlvsRoundTrip(records: list[tuple[int, bytes]]) -> None:
    """
    Any run of TLVs, framed, comes back as the same records in order.
    """
    data = b"".join(tlv(kind, value) for kind, value in records)
    assert parseTLVs(data) == tuple(TLV(kind, value) for kind, value in records)


@given(st.binary(min_size=1, max_size=40))
def test_tlvsCutShortRefused(data: bytes) -> None:
    """
    A run of TLVs either frames exactly, or is refused: never a record
    that runs past the end.
    """
    try:
        records = parseTLVs(data)
    except InvalidProxyHeader:
        return
    assert sum(3 + len(record.value) for record in records) == len(data)


# What an info connection says.


def test_plainConnection() -> None:
    """
    Over a plain socket: the socket's addresses, the listener, the host,
    the process, no PROXY header, no TLS, and the time.
    """
    described = describeConnection(HalfCloseableTransport(), "testhost", 42, NOW)
    assert described == {
        "peer": {"family": "ipv4", "address": "127.0.0.1", "port": LOOPBACK_PEER.port},
        "local": {"family": "ipv4", "address": "127.0.0.1", "port": LOOPBACK_HOST.port},
        "listener": f"tcp:127.0.0.1:{LOOPBACK_HOST.port}",
        "hostname": "testhost",
        "pid": 42,
        "proxy": None,
        "tls": None,
        "time": "2027-01-15T08:00:00.250Z",
    }


@pytest.mark.parametrize(
    "address, expected",
    [
        (IPv6Address("TCP", "::1", 5), {"family": "ipv6", "address": "::1", "port": 5}),
        (UNIXAddress(b"/run/s.sock"), {"family": "unix", "path": "/run/s.sock"}),
        (UNIXAddress(None), {"family": "unix", "path": None}),
    ],
)
def test_otherAddresses(address: Any, expected: dict[str, Any]) -> None:
    """
    IPv6 and UNIX addresses have their own shapes (an unnamed UNIX socket,
    as a UNIX client's is, has a null path).
    """
    transport = HalfCloseableTransport()
    transport.peerAddr = address
    assert describeConnection(transport, "h", 1, NOW)["peer"] == expected


def test_behindProxyHeader() -> None:
    """
    Behind a PROXY header, C{peer} and C{local} are still the socket's,
    the listener is named C{haproxy:}, and C{proxy} says what the header
    said.
    """
    _, factory, _ = info()
    wrapping = ProxyWrappingFactory(factory)  # type: ignore[no-untyped-call]
    wrapper = wrapping.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    wrapper.makeConnection(transport)
    wrapper.dataReceived(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n")
    described = json.loads(transport.value())
    assert described["peer"]["address"] == "127.0.0.1"
    assert described["listener"].startswith("haproxy:tcp:127.0.0.1:")
    assert described["proxy"] == {
        "version": 1,
        "command": "PROXY",
        "protocol": "TCP6",
        "source": {"family": "ipv6", "address": "2001:db8::7", "port": 40000},
        "destination": {"family": "ipv6", "address": "2001:db8::1", "port": 443},
        "tlvs": [],
    }


def test_terminalBytesEscaped() -> None:
    """
    Bytes from the network that a terminal would act on (an escape
    sequence, invalid UTF-8, in a TLV) reach the client as JSON escapes,
    never raw: the whole line is ASCII.
    """
    _, factory, _ = info()
    wrapper = ProxyWrappingFactory(factory).buildProtocol(LOOPBACK_PEER)  # type: ignore[no-untyped-call]
    transport = HalfCloseableTransport()
    wrapper.makeConnection(transport)
    block = bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack("!HH", 1, 2)
    block += tlv(0x02, b"\x1b[31mred\xff")
    wrapper.dataReceived(
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(block)) + block
    )
    line = transport.value()
    assert b"\x1b" not in line and line.isascii()
    assert json.loads(line)["proxy"]["tlvs"][0]["value"] == "\x1b[31mred\\xff"


# The info connection's life.


def test_writesOneLineThenHalfCloses() -> None:
    """
    An info connection writes one line of JSON at once, then closes its
    write side; what the client sends is discarded, and its close ends
    the connection, logged as C{ok} by the server's factory.
    """
    records: list[ConnectionRecord] = []
    server, factory, _ = info()
    server.observers.append(records.append)
    protocol, transport = connectInfo(factory)
    data = transport.value()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data)["hostname"] == "testhost"
    assert transport.writeClosed
    assert protocol in server.connections
    protocol.dataReceived(b"ignored")
    assert transport.value() == data
    protocol.readConnectionLost()
    assert transport.disconnecting
    protocol.connectionLost(Failure(Exception("gone")))
    assert protocol not in server.connections
    assert [(r.outcome, r.messages, r.bytesIn, r.bytesOut) for r in records] == [
        ("ok", 0, 7, len(data))
    ]


def test_noBannerNoFaultsNoFraming() -> None:
    """
    The server's banner, faults and framing are the echo listeners'
    business: an info connection writes only its JSON, at once.
    """
    settings = serverSettings(
        "int32", keepOpen=True, banner=b"HELLO", delay=5.0, dropRate=1.0, resetRate=0.0
    )
    _, factory, _ = info(settings)
    _, transport = connectInfo(factory)
    assert transport.value().startswith(b'{"peer": ')


def test_refusedOverTheServersLimit() -> None:
    """
    Info connections share the server's limits: with the one place taken
    by an echo connection, an info client gets the error as a line.
    """
    server, factory, _ = info(ServerSettings(maxConnections=1))
    echo = server.buildProtocol(LOOPBACK_PEER)
    echo.makeConnection(HalfCloseableTransport())
    protocol, transport = connectInfo(factory)
    assert protocol.state is ConnectionState.REFUSED
    assert transport.value() == b"Error: server busy\n"


def test_drainedWithTheServer() -> None:
    """
    The server's drain covers its info connections: one whose client has
    not yet closed is aborted at the drain's timeout.
    """
    server, factory, clock = info()
    protocol, transport = connectInfo(factory)
    done = server.drain(1.0)
    clock.advance(1.0)
    assert transport.aborted
    protocol.connectionLost(Failure(Exception("aborted")))
    assert done.called


# Over TLS, in memory.


@pytest.fixture
def certificates() -> dict[str, Any]:
    ca = trustme.CA()
    other = trustme.CA()
    return {
        "ca": ca,
        "server": ca.issue_cert("localhost"),
        "client": ca.issue_cert("client.test", common_name="the client"),
        "stranger": other.issue_cert("stranger.test"),
    }


def _private(issued: Any) -> PrivateCertificate:
    return PrivateCertificate.loadPEM(
        issued.cert_chain_pems[0].bytes() + issued.private_key_pem.bytes()
    )


def serverOptions(certificates: dict[str, Any]) -> CertificateOptions:
    server = _private(certificates["server"])
    return CertificateOptions(
        privateKey=server.privateKey.original, certificate=server.original
    )


class Received(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


def overTLS(
    certificates: dict[str, Any],
    clientCAs: bool = False,
    clientCert: str | None = None,
    alpn: list[bytes] | None = None,
    factory: InfoFactory | None = None,
) -> tuple[Received, InfoProtocol, IOPump]:
    """
    An info connection over TLS, in memory, its handshake pumped through.

    @return: the client's protocol, the server's info protocol, the pump.
    """
    if factory is None:
        _, factory, _ = info()
    cas = [x509(certificates["ca"])] if clientCAs else []
    serverSide = TLSMemoryBIOFactory(ServerTLS(serverOptions(certificates), cas), False, factory)
    trust = Certificate.loadPEM(certificates["ca"].cert_pem.bytes())
    clientOptions: dict[str, Any] = {"trustRoot": trust}
    if clientCert is not None:
        clientOptions["clientCertificate"] = _private(certificates[clientCert])
    if alpn:
        clientOptions["acceptableProtocols"] = alpn
    from twisted.internet.ssl import optionsForClientTLS

    clientSide = TLSMemoryBIOFactory(
        optionsForClientTLS("localhost", **clientOptions), True, Factory.forProtocol(Received)
    )
    server = serverSide.buildProtocol(LOOPBACK_PEER)
    client = clientSide.buildProtocol(LOOPBACK_HOST)
    # Taken now: a wrapper forgets its protocol once the connection closes.
    received, protocol = client.wrappedProtocol, server.wrappedProtocol
    pump = connectedServerAndClient(lambda: server, lambda: client, greet=False)[2]
    pump.flush()
    return received, protocol, pump


def x509(authority: trustme.CA) -> Any:
    from cryptography import x509 as cx509

    return cx509.load_pem_x509_certificate(authority.cert_pem.bytes())


def test_tlsDetails(certificates: dict[str, Any]) -> None:
    """
    Over TLS the JSON is written once the handshake is done, and says the
    version, the cipher, the SNI, the ALPN offers and the first one
    selected, and the client certificate.
    """
    client, _, _ = overTLS(
        certificates, clientCAs=True, clientCert="client", alpn=[b"x-test/1", b"h2"]
    )
    tls = json.loads(client.data)["tls"]
    assert tls["version"] == "TLSv1.3"
    assert tls["cipher"]
    assert tls["server_name"] == "localhost"
    assert tls["alpn_offered"] == ["x-test/1", "h2"]
    assert tls["alpn"] == "x-test/1"
    assert tls["client_certificate"]["subject"].startswith("CN=the client")


@pytest.mark.parametrize(
    "clientCert, reason",
    [
        (None, "peer did not return a certificate (the client sent no certificate"),
        ("stranger", "certificate verify failed (the client's certificate is not signed"),
    ],
)
def test_mutualTLSRefuses(
    certificates: dict[str, Any], clientCert: str | None, reason: str
) -> None:
    """
    With client CAs, a client without a certificate, or with one from
    another CA, fails the handshake; the connection is logged as
    C{tls-failed} with the reason, and nothing is written to it.
    """
    records: list[tuple[str, str]] = []
    server, factory, _ = info()
    original = server.connectionClosed
    server.connectionClosed = lambda p: (  # type: ignore[method-assign]
        records.append((p.outcome or "", p.detail)), original(p)
    )
    client, _, _ = overTLS(certificates, True, clientCert, factory=factory)
    assert client.data == b""
    assert records and records[0][0] == "tls-failed"
    assert reason in records[0][1]


def test_handshakeThatNeverCompletesTimesOut(certificates: dict[str, Any]) -> None:
    """
    A TLS client that never completes its handshake is aborted at the
    idle timeout, with nothing written.
    """
    _, factory, clock = info(ServerSettings(idleTimeout=2.0))
    serverSide = TLSMemoryBIOFactory(ServerTLS(serverOptions(certificates)), False, factory)
    tls = serverSide.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    tls.makeConnection(transport)
    tls.dataReceived(b"\x16\x03\x01")
    protocol = tls.wrappedProtocol
    assert protocol.state is ConnectionState.READING
    clock.advance(3.0)
    assert transport.aborted
    assert protocol.outcome == "idle-timeout"


# The server's TLS context.


def test_serverTLSWithoutClientCAsAsksForNone(certificates: dict[str, Any]) -> None:
    """
    Without client CAs no client certificate is asked for; with them, one
    is required, and its CAs are named to the client.
    """
    plain = ServerTLS(serverOptions(certificates)).getContext()
    assert plain.get_verify_mode() == SSL.VERIFY_NONE
    mutual = ServerTLS(serverOptions(certificates), [x509(certificates["ca"])]).getContext()
    assert mutual.get_verify_mode() == SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT


def test_secureOnlyTouchesSSL(tmp_path: Path, certificates: dict[str, Any]) -> None:
    """
    L{secure} gives an C{ssl:} endpoint sockplay's context, and leaves any
    other endpoint as it is.
    """
    certificates["server"].private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "s.pem"))
    endpoint = secure(
        serverFromString(MemoryReactorClock(), f"ssl:0:privateKey={tmp_path / 's.pem'}")
    )
    assert isinstance(endpoint._sslContextFactory, ServerTLS)  # type: ignore[attr-defined]
    plain = TCP4ServerEndpoint(MemoryReactorClock(), 0)
    assert secure(plain) is plain


def test_beneathTLS(tmp_path: Path, certificates: dict[str, Any]) -> None:
    """
    The TCP endpoint beneath an C{ssl:} endpoint (for C{haproxy:ssl:})
    listens where the C{ssl:} one would: this pins the attributes of
    Twisted's endpoint that L{beneathTLS} reads.
    """
    certificates["server"].private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "s.pem"))
    reactor = MemoryReactorClock()
    endpoint = serverFromString(
        reactor, f"ssl:4433:interface=127.0.0.2:backlog=77:privateKey={tmp_path / 's.pem'}"
    )
    beneath = beneathTLS(endpoint)
    beneath.listen(Factory.forProtocol(Protocol))
    port, _, backlog, interface = reactor.tcpServers[0]
    assert (port, backlog, interface) == (4433, 77, "127.0.0.2")


def test_loadClientCAs(tmp_path: Path, certificates: dict[str, Any]) -> None:
    """
    A PEM file of CAs gives each; a missing file or one without a
    certificate is an error that names the file.
    """
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(certificates["ca"].cert_pem.bytes() * 2)
    assert len(loadClientCAs(str(bundle))) == 2
    with pytest.raises(ClientCAError, match=r"cannot read .*missing\.pem"):
        loadClientCAs(str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(ClientCAError, match=r"empty\.pem holds no valid PEM certificate"):
        loadClientCAs(str(tmp_path / "empty.pem"))


@pytest.mark.parametrize(
    "queue, text",
    [
        (
            [("SSL routines", "", "wrong version number")],
            "TLS handshake failed: wrong version number (the client did not speak TLS)",
        ),
        (
            [("SSL routines", "", "unexpected eof while reading"), ("x", "", "other")],
            "TLS handshake failed: unexpected eof while reading; other",
        ),
        ([], "TLS handshake failed: no reason given"),
    ],
)
def test_describeHandshakeFailure(queue: list[tuple[str, str, str]], text: str) -> None:
    """
    A failed handshake reads as OpenSSL's reasons, with what the first
    one an operator can act on means.
    """
    assert describeHandshakeFailure(Failure(SSL.Error(queue))) == text
