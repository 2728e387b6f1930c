"""
A hostile reader against a real C{python -m sockplay.server} (line framing,
one-shot, default settings) on an ephemeral loopback port: a client with a
tiny receive buffer sends a large line and then reads its reply slowly, or
stops reading it, and never closes.

The promises checked (C{docs/protocol.md}, "Closing a conversation"): no
reply is lost to a reader that is slow but still reading, even when reading
takes longer than the linger period; a reader that stops reading entirely
is still cut off, once the linger period passes without progress, and the
server logs it as C{aborted}.

The reader's pace is the misbehaviour itself, so it pauses between reads;
every other wait is on a socket or a log line, with a bound.
"""

from __future__ import annotations

import select
import socket
import time

from support.servers import LOOPBACK, PREFIX, SERVER, SOCKET_TIMEOUT, ServerPool, ServerProcess

from sockplay.server.settings import DEFAULT_LINGER

# The client's receive buffer (the kernel doubles it): so small that nearly
# all of a large reply waits in the server's send queue, as in the report.
RECEIVE_BUFFER = 2048

# Each read, and the pause after it: 40 KB read 1 KB at a time every 150 ms
# takes about 6 s, past the 5 s linger, yet keeps the test short.
READ_SIZE = 1024
READ_PAUSE = 0.15
MESSAGE = b"x" * (40 * 1024)
REPLY = PREFIX + MESSAGE + b"\n"


def slowClient(port: int) -> socket.socket:
    """
    Connect with a tiny receive buffer and send the large line, without
    half-closing (a client that half-closes has its reply flushed by the
    server's full close).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.settimeout(SOCKET_TIMEOUT)
    sock.connect((LOOPBACK, port))
    sock.sendall(MESSAGE + b"\n")
    return sock


def closedLine(server: ServerProcess) -> str:
    """
    The server's log line for the connection's end.
    """
    return server.waitForLine(lambda line: "Connection closed: " in line, "the close")


def test_slowReaderGetsTheWholeReply(servers: ServerPool) -> None:
    """
    A client that reads a large reply slowly, for longer than the linger
    period, gets every byte of it and then the end of the stream, not a
    reset; the server logs the connection as C{ok}.
    """
    server = servers.start(SERVER, "--framing", "line")
    received = b""
    with slowClient(server.port) as sock:
        started = time.monotonic()
        try:
            while chunk := sock.recv(READ_SIZE):
                received += chunk
                time.sleep(READ_PAUSE)
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - started
    assert (len(received), received == REPLY) == (len(REPLY), True), server.transcript()
    assert elapsed > DEFAULT_LINGER
    assert ", ok, 1 message, " in closedLine(server)


def test_stalledReaderIsCutOff(servers: ServerPool) -> None:
    """
    A client that reads a little of a large reply and then stops reading
    (and never closes) is aborted once the linger period passes without
    progress: not before, and not much after. The server logs C{aborted}.
    """
    server = servers.start(SERVER, "--framing", "line")
    with slowClient(server.port) as sock:
        for _ in range(4):
            assert sock.recv(READ_SIZE)
        stalled = time.monotonic()
        # Wait for the reset without reading (which would be progress):
        # POLLERR and POLLHUP are reported whatever the mask.
        poller = select.poll()
        poller.register(sock, 0)
        events = poller.poll(SOCKET_TIMEOUT * 1000)
        elapsed = time.monotonic() - stalled
    assert events, "the server never cut the stalled reader off"
    line = closedLine(server)
    assert ", aborted, 1 message, " in line
    # The linger, plus the sweep's look and check, each every tenth of it.
    assert DEFAULT_LINGER - 0.5 < elapsed < DEFAULT_LINGER + 3, line
