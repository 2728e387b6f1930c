"""
A hostile peer on a C{haproxy:} listener: it connects where only a load
balancer should, and sends no PROXY header, half of one, one split into
single bytes, or one whose fields are not what the specification allows
(escape bytes, C{not-an-ip}, port 99999, a non-numeric port, an address
that is not UTF-8). Against a real C{python -m sockplay.server} on an
ephemeral loopback port, with C{--idle-timeout 1 --max-connections 3}.

The promises it checks (issue 10, defects 2, 4, 5 and 6): the limits and
the idle timeout hold from the accept, before any header; a malformed
header is refused with a clean close and one log line, never a traceback,
and none of its bytes reach the log; a header split across reads, C{PROXY
UNKNOWN} and v2 C{LOCAL} are accepted; an IPv6 client is named in one
canonical form. After each case the listener still serves a client.

Nothing sleeps: every wait is on a socket or the server's log, with a bound.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.proxyheaders import MALFORMED_V1
from support.servers import (
    LOOPBACK,
    SOCKET_TIMEOUT,
    ServerProcess,
    cleanServer,
    connect,
    readToEOF,
    readWithin,
)

IDLE_TIMEOUT = 1
MAX_CONNECTIONS = 3
# How much later than the idle timeout a silent peer may be cut off
# (seconds): the machine is busy.
SLACK = 3.0

HEADER = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12345\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """
    A server with only a C{haproxy:} listener, that puts the client's
    address before each reply; at its end, its log must hold no traceback
    and none of the peer's bytes.
    """
    command = [
        sys.executable,
        "-m", "sockplay.server",
        "--framing", "line",
        "--prefix", "{peer} ",
        "--idle-timeout", str(IDLE_TIMEOUT),
        "--max-connections", str(MAX_CONNECTIONS),
        "--listen", f"haproxy:tcp:0:interface={LOOPBACK}",
    ]  # fmt: skip
    with cleanServer(command, tmp_path_factory.mktemp("hostile-proxy")) as process:
        yield process
    log = process.transcript()
    assert "\x1b" not in log and "INJECTED" not in log and "not-an-ip" not in log, log


def ask(port: int, header: bytes, message: bytes = b"hello\n") -> bytes:
    """
    Send C{header} and C{message} in one go; everything the server sends
    back until it closes.
    """
    with connect(port) as sock:
        sock.sendall(header + message)
        return readToEOF(sock)


def assertServes(server: ServerProcess) -> None:
    """
    The listener still answers a client behind a well-behaved proxy.
    """
    assert ask(server.port, HEADER) == b"192.0.2.7 hello\n"


def closedWithin(sock: socket.socket, seconds: float) -> float:
    """
    Wait, at most C{seconds}, for the server to close C{sock} (sending
    nothing); fail the test if it does not.

    @return: how long that took.
    """
    data, took = readWithin(sock, seconds)
    assert data == b""
    return took


def stillOpen(sock: socket.socket, seconds: float) -> bool:
    """
    Whether the server leaves C{sock} open (sends nothing, closes nothing)
    for C{seconds}.
    """
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


def test_silentAndHalfHeaderConnectionsCountAndTimeOut(server: ServerProcess) -> None:
    """
    Connections that send nothing, or half a header, count against
    C{--max-connections} while they wait: the next client is told the
    server is busy. Each is closed after the idle timeout, and then a
    client is served again.
    """
    silent = [connect(server.port) for _ in range(MAX_CONNECTIONS - 1)]
    half = connect(server.port)
    half.sendall(HEADER[:15])
    holders = [*silent, half]
    try:
        # The server has accepted all three once it answers a fourth.
        assert ask(server.port, HEADER) == b"Error: server busy\n"
        for sock in holders:
            took = closedWithin(sock, IDLE_TIMEOUT + SLACK)
            assert took < IDLE_TIMEOUT + SLACK
    finally:
        for sock in holders:
            sock.close()
    server.waitForLine(lambda line: "idle-timeout (PROXY header incomplete)" in line,
                       "the header's timeout logged")
    assertServes(server)


@pytest.mark.parametrize("header", MALFORMED_V1)
def test_malformedHeaderRefused(server: ServerProcess, header: bytes) -> None:
    """
    A header whose fields the specification does not allow is refused:
    the connection closes with nothing sent, the log has one line for it
    (and, checked at the end, no traceback and none of its bytes), and the
    listener goes on serving.
    """
    assert ask(server.port, header) == b""
    line = server.waitForLine(lambda line: "Connection closed:" in line, "the refusal logged")
    assert ", bad-header (v1 source " in line, line
    assertServes(server)


def test_headerSplitAcrossSegments(server: ServerProcess) -> None:
    """
    A header sent as C{PROXY } and then the rest, one byte per segment, is
    waited for (the server keeps the connection open in between) and
    accepted.
    """
    with connect(server.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HEADER[:6])
        assert stillOpen(sock, 0.2)
        for byte in HEADER[6:]:
            sock.sendall(bytes([byte]))
            assert stillOpen(sock, 0.01)
        sock.sendall(b"hello\n")
        assert readToEOF(sock) == b"192.0.2.7 hello\n"


@pytest.mark.parametrize(
    "header, peer",
    [
        pytest.param(b"PROXY UNKNOWN\r\n", b"127.0.0.1", id="v1-unknown"),
        pytest.param(V2_SIGNATURE + b"\x20\x00\x00\x00", b"127.0.0.1", id="v2-local"),
        pytest.param(
            V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", 36)
            + bytes.fromhex("20010db8000000000000000000000007") + bytes(15) + b"\x01"
            + struct.pack("!HH", 40000, 12345),
            b"2001:db8::7",
            id="v2-ipv6",
        ),
        pytest.param(b"PROXY TCP6 2001:db8:0:0:0:0:0:7 ::1 40000 12345\r\n", b"2001:db8::7",
                     id="v1-ipv6-uncompressed"),
    ],
)  # fmt: skip
def test_headersThatNameNoneOrIPv6(server: ServerProcess, header: bytes, peer: bytes) -> None:
    """
    C{PROXY UNKNOWN} and v2 C{LOCAL} are accepted and leave the socket's
    own peer; an IPv6 client comes out compressed, through v1 or v2.
    """
    assert ask(server.port, header) == peer + b" hello\n"


def test_headerlessProbeNotLogged(server: ServerProcess) -> None:
    """
    A health check that connects and closes without a byte leaves no line
    in the log (a C{probe}, logged at debug level only), and no error.
    """
    with connect(server.port) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
    assertServes(server)
    line = server.waitForLine(lambda line: "Connection closed:" in line, "the client's line")
    assert "192.0.2.7" in line and "probe" not in line


def test_drainClosesConnectionsAwaitingTheirHeader(tmp_path: Path) -> None:
    """
    A drain (SIGTERM) closes at once the connections still awaiting their
    PROXY header, silent or halfway: they are owed nothing, and the server
    does not wait its drain timeout for them.
    """
    command = [
        sys.executable, "-m", "sockplay.server",
        "--drain-timeout", "20",
        "--listen", f"haproxy:tcp:0:interface={LOOPBACK}",
    ]  # fmt: skip
    server = ServerProcess(command, tmp_path)
    try:
        port = server.waitUntilReady()
        with connect(port) as silent, connect(port) as halfway:
            halfway.sendall(HEADER[:10])
            assert stillOpen(silent, 0.2) and stillOpen(halfway, 0.2)
            started = time.monotonic()
            server.process.terminate()
            assert closedWithin(silent, SLACK) < SLACK
            assert closedWithin(halfway, SLACK) < SLACK
        assert server.waitForExit(timeout=SLACK + SOCKET_TIMEOUT) == 0, server.transcript()
        assert time.monotonic() - started < SLACK + 2
    finally:
        server.stop()
    assert "Shutdown complete: 0 connections drained, 0 aborted" in server.transcript()
