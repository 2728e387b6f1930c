"""
Hostile peers of the C{--metrics} web site, against a real server process
on ephemeral loopback ports.

The peers: a client that POSTs a 1 GB body, one that trickles its headers
(a slowloris), and one that opens more connections than the site holds.
The promises: the site is read-only and never stores a request body (no
temporary file appears in the server's C{TMPDIR}), it answers a refused
request at once, it times out headers that never complete, and its own
connection limit keeps it from taking what the echo listeners need: echo
clients are served throughout.
"""

from __future__ import annotations

import os
import re
import select
import socket
import sys
import time
from pathlib import Path

import pytest
from support.servers import (
    LOOPBACK,
    SERVER,
    ServerPool,
    ServerProcess,
    tutorialClient,
)

from sockplay.website import MAX_SITE_CONNECTIONS

# The site's header deadline in the slowloris test, instead of its 10 s, so
# that the test takes a second: set in the server process before it starts.
SHORT_HEADERS_TIMEOUT = 1.0

# Seconds between the slowloris's bytes: well within any idle timeout.
TRICKLE = 0.1

# Seconds a refused request may take to be answered: it is answered on its
# request line, so this is only the bound of a slow test machine.
ANSWER_BOUND = 2.0

# What a hostile client reads before it gives up on an answer.
READ_TIMEOUT = 5.0

_SERVING = re.compile(r"Serving metrics on tcp:127\.0\.0\.1:(\d+) ")


def startWithMetrics(servers: ServerPool, command: list[str] = SERVER) -> tuple[ServerProcess, int]:
    """
    A server with C{--metrics} on an ephemeral loopback port.

    @return: the server, and the metrics site's port.
    """
    server = servers.start(command, "--metrics", "tcp:0:interface=127.0.0.1")
    for line in server.output:
        if match := _SERVING.search(line):
            return server, int(match.group(1))
    pytest.fail(f"the server did not say where it serves metrics:\n{server.transcript()}")


def readAnswer(sock: socket.socket) -> bytes:
    """
    What the site sends until it closes, within L{READ_TIMEOUT}. A close
    with the client's bytes unread is a reset, which ends the answer too.
    """
    sock.settimeout(READ_TIMEOUT)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def filesUnder(pid: int, directory: Path) -> list[str]:
    """
    The files under C{directory} that process C{pid} holds open, deleted
    ones too (a Python temporary file has no name from the start).
    """
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held


def test_largePostAnsweredAtOnceNothingStored(
    servers: ServerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A POST that announces 1 GB and sends its body as fast as it can is
    answered 405 at once; the server stores nothing of it (no file of its
    C{TMPDIR} open), and goes on serving.
    """
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    server, port = startWithMetrics(servers)
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        sock.setblocking(False)
        body = b"x" * 65536
        try:
            # As much of the body as the socket takes, for a moment.
            while time.monotonic() - started < 0.5:
                try:
                    sock.send(body)
                except BlockingIOError:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = readAnswer(sock)
        elapsed = time.monotonic() - started
        held = filesUnder(server.process.pid, temporary)
    assert held == []
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), answer
    assert elapsed < ANSWER_BOUND
    assert list(temporary.iterdir()) == []
    assert tutorialClient(server.port)[0] == b"Message received: Hello Server !"


def test_headerSlowlorisClosed(servers: ServerPool) -> None:
    """
    A client that sends its headers a byte at a time, each within the idle
    timeout, is answered 408 and closed once the header deadline passes
    (shortened here to L{SHORT_HEADERS_TIMEOUT}); echo clients are served
    meanwhile.
    """
    shortened = [
        sys.executable,
        "-c",
        "from sockplay.website import ReadOnlyChannel; "
        f"ReadOnlyChannel.headersTimeout = {SHORT_HEADERS_TIMEOUT}; "
        "from sockplay.server.command import main; main()",
    ]
    server, port = startWithMetrics(servers, shortened)
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, port), timeout=READ_TIMEOUT) as sock:
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            # A byte every tenth of a second, until the server answers.
            answered, _, _ = select.select([sock], [], [], TRICKLE)
            if answered or time.monotonic() - started > READ_TIMEOUT:
                break
        answer = readAnswer(sock)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert SHORT_HEADERS_TIMEOUT <= elapsed < SHORT_HEADERS_TIMEOUT + ANSWER_BOUND
    assert tutorialClient(server.port)[0] == b"Message received: Hello Server !"


def test_connectionLimitSparesEchoClients(servers: ServerPool) -> None:
    """
    The site holds L{MAX_SITE_CONNECTIONS} silent connections; the next
    one is answered 503 and closed; echo clients are served all along, and
    once a silent connection goes, the site serves again.
    """
    server, port = startWithMetrics(servers)
    silent = [
        socket.create_connection((LOOPBACK, port), timeout=READ_TIMEOUT)
        for _ in range(MAX_SITE_CONNECTIONS)
    ]
    try:
        with socket.create_connection((LOOPBACK, port), timeout=READ_TIMEOUT) as extra:
            answer = readAnswer(extra)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert tutorialClient(server.port)[0] == b"Message received: Hello Server !"
        silent.pop().close()
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            with socket.create_connection((LOOPBACK, port), timeout=READ_TIMEOUT) as scraper:
                scraper.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                answer = readAnswer(scraper)
            # The server sees the close on its next turn; until then, 503.
            if not answer.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                break
        assert answer.startswith(b"HTTP/1.0 200 OK\r\n"), answer
        assert answer.endswith(b"\r\n\r\nok")
    finally:
        for sock in silent:
            sock.close()
