"""
A hostile peer against every kind of listener at once: plain TCP, TLS, the
PROXY protocol, a Unix socket and UDP, all served by one real
C{python -m sockplay.server} process on ephemeral loopback ports.

The peer misbehaves on purpose: it sends a message over the limit, says
nothing, trickles a message that never ends (slowloris), resets in the
middle of a message, sends bytes that are not text, or floods datagrams it
never reads. Each test checks what C{docs/robustness.md} promises for that
case on that kind of listener, then that the listener still serves a
well-behaved client. At the end the server's log must hold no traceback
and none of the peer's bytes.

Nothing sleeps: every wait is on a socket, with a bound.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.proxyheaders import ESCAPE
from support.servers import (
    HELLO,
    HELLO_REPLY,
    LOOPBACK,
    PREFIX,
    SOCKET_TIMEOUT,
    ServerProcess,
    cleanServer,
    connect,
    readToEOF,
    readWithin,
    resetConnection,
)

from sockplay.certs import listenDescription, writeCertificates
from sockplay.server.listening import MAX_REPLY

# The server's limits: small, so that the peer reaches them quickly.
LIMIT = 1024
IDLE_TIMEOUT = 1
# How much later than the idle timeout a silent peer may be cut off
# (seconds): the sweep runs four times a second, and the machine is busy.
SLACK = 3.0

# What a PROXY-protocol peer says it is relaying: a documentation address.
PROXY_HEADER = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12345\r\n"

STREAM_KINDS = ["tcp", "ssl", "haproxy", "unix"]


@dataclass
class Listeners:
    """
    The running server and where each of its listeners is.
    """

    server: ServerProcess
    ports: dict[str, int]
    unixPath: Path
    tls: ssl.SSLContext

    def open(self, kind: str) -> socket.socket:
        """
        A connection to the C{kind} listener, ready for a message: through
        the TLS handshake for C{ssl}, past the PROXY header for
        C{haproxy}.
        """
        sock: socket.socket
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(SOCKET_TIMEOUT)
            sock.connect(str(self.unixPath))
        else:
            sock = connect(self.ports[kind])
        if kind == "ssl":
            sock = self.tls.wrap_socket(sock, server_hostname=LOOPBACK)
        elif kind == "haproxy":
            sock.sendall(PROXY_HEADER)
        return sock


def _listenerPorts(server: ServerProcess) -> dict[str, int]:
    """
    The port of each listener, from the server's C{Listening on} lines.
    """
    ports = {}
    for line in server.output:
        for kind, marker in [
            ("tcp", "Listening on tcp:"),
            ("ssl", "Listening on ssl:"),
            ("haproxy", "Listening on haproxy:tcp:"),
            ("udp", "Listening on udp:"),
        ]:
            if marker in line:
                ports[kind] = int(line.split(marker, 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
    return ports


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listeners]:
    """
    One server with a listener of every kind, stopped at the end of the
    module, when its log is checked for tracebacks and the peer's bytes.
    """
    directory = tmp_path_factory.mktemp("hostile")
    certificates = writeCertificates(directory / "certs")
    unixPath = directory / "echo.sock"
    command = [
        sys.executable,
        "-m", "sockplay.server",
        "--framing", "line",
        "--max-message", str(LIMIT),
        "--idle-timeout", str(IDLE_TIMEOUT),
        "--listen", f"tcp:0:interface={LOOPBACK}",
        "--listen", listenDescription(certificates, 0),
        "--listen", f"haproxy:tcp:0:interface={LOOPBACK}",
        "--listen", f"unix:{unixPath}",
        "--udp", "0", "--udp-interface", LOOPBACK,
    ]  # fmt: skip
    with cleanServer(command, directory) as server:
        tls = ssl.create_default_context(cafile=str(certificates.ca))
        yield Listeners(server, _listenerPorts(server), unixPath, tls)
    log = server.transcript()
    assert "\x1b" not in log and "INJECTED" not in log, log


def assertServes(listeners: Listeners, kind: str) -> None:
    """
    The C{kind} listener still answers a well-behaved client: the
    tutorial's message, then its reply and the end of the connection.
    """
    assert listeners.server.process.poll() is None, listeners.server.transcript()
    with listeners.open(kind) as sock:
        sock.sendall(HELLO + b"\n")
        assert readToEOF(sock) == HELLO_REPLY + b"\n"


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_overlongMessage(listeners: Listeners, kind: str) -> None:
    """
    A message over C{--max-message} is answered with one error line, and
    the connection closes; the listener goes on serving.
    """
    with listeners.open(kind) as sock:
        sock.sendall(b"x" * (LIMIT + 1) + b"\n")
        reply, _ = readWithin(sock, SOCKET_TIMEOUT)
    assert reply == f"Error: message too long (limit {LIMIT} bytes)\n".encode()
    assertServes(listeners, kind)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_silentPeerTimedOut(listeners: Listeners, kind: str) -> None:
    """
    A peer that connects (and, over TLS, shakes hands; through the PROXY
    protocol, sends its header) and then says nothing is told so and cut
    off after C{--idle-timeout}.
    """
    with listeners.open(kind) as sock:
        reply, took = readWithin(sock, IDLE_TIMEOUT + SLACK)
    assert reply == f"Error: idle timeout ({IDLE_TIMEOUT} s)\n".encode()
    assert took >= IDLE_TIMEOUT - 0.5
    assertServes(listeners, kind)


@pytest.mark.parametrize("kind", ["ssl", "haproxy"])
def test_silentBeforeHandshakeOrHeader(listeners: Listeners, kind: str) -> None:
    """
    A peer that opens a TCP connection to a TLS or PROXY-protocol listener
    and never starts the handshake or the header is cut off after
    C{--idle-timeout} too: it cannot hold a connection open for free.
    """
    with connect(listeners.ports[kind]) as sock:
        _, took = readWithin(sock, IDLE_TIMEOUT + SLACK)
    assert took >= IDLE_TIMEOUT - 0.5
    assertServes(listeners, kind)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_slowloris(listeners: Listeners, kind: str) -> None:
    """
    A peer that trickles a message one byte at a time and never ends it is
    cut off after C{--idle-timeout}: the timeout counts from the last
    message, not the last byte.
    """
    with listeners.open(kind) as sock:
        start = time.monotonic()
        sock.settimeout(0.25)
        received = b""
        try:
            while time.monotonic() - start < IDLE_TIMEOUT + SLACK:
                sock.sendall(b"x")
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                received += chunk
            else:
                pytest.fail(f"a slowloris was still connected after {IDLE_TIMEOUT + SLACK} s")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            pass
    assert received in (b"", f"Error: idle timeout ({IDLE_TIMEOUT} s)\n".encode())
    assertServes(listeners, kind)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_resetMidMessage(listeners: Listeners, kind: str) -> None:
    """
    A peer that resets in the middle of a message ends only its own
    connection.
    """
    sock = listeners.open(kind)
    sock.sendall(b"half a mess")
    resetConnection(sock)
    assertServes(listeners, kind)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_bytesNotTextRoundTrip(listeners: Listeners, kind: str) -> None:
    """
    Every byte but the newline, escape sequences included, comes back
    unchanged, and none of it reaches the log (checked at the end of the
    module).
    """
    message = ESCAPE + bytes(byte for byte in range(256) if byte != ord("\n"))
    with listeners.open(kind) as sock:
        sock.sendall(message + b"\n")
        assert readToEOF(sock) == PREFIX + message + b"\n"


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_oneShotPeerSendsMore(listeners: Listeners, kind: str) -> None:
    """
    A one-shot peer that sends many messages, more than the server reads
    in one go, gets the reply to the first one whole, then a clean end: the
    rest is discarded, and no reset destroys the reply.
    """
    with listeners.open(kind) as sock:
        sock.sendall(HELLO + b"\n" + b"more\n" * 20000)
        assert readToEOF(sock) == HELLO_REPLY + b"\n"
    assertServes(listeners, kind)


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


def _askUDP(listeners: Listeners, datagram: bytes) -> bytes:
    with _udp() as sock:
        sock.sendto(datagram, (LOOPBACK, listeners.ports["udp"]))
        return sock.recv(65536)


def test_udpOverlongDatagram(listeners: Listeners) -> None:
    """
    A datagram whose reply would not fit in one UDP datagram gets one error
    datagram instead.
    """
    limit = MAX_REPLY - len(PREFIX)
    assert _askUDP(listeners, b"x" * (limit + 1)) == (
        f"Error: message too long (limit {limit} bytes)\n".encode()
    )
    assert _askUDP(listeners, HELLO) == HELLO_REPLY


def test_udpBytesNotTextRoundTrip(listeners: Listeners) -> None:
    """
    Every byte value, escape sequences included, comes back unchanged in
    the reply datagram.
    """
    message = ESCAPE + bytes(range(256))
    assert _askUDP(listeners, message) == PREFIX + message


def test_udpFloodNeverRead(listeners: Listeners) -> None:
    """
    A peer that floods datagrams and never reads the replies does not stop
    the server answering another peer.
    """
    with _udp() as flooder:
        flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(2000):
            flooder.sendto(b"y" * LIMIT, (LOOPBACK, listeners.ports["udp"]))
        assert _askUDP(listeners, HELLO) == HELLO_REPLY
