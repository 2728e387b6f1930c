"""
A hostile peer against the framings of a real C{python -m sockplay.server}
on an ephemeral loopback port: length headers that announce more than the
limit, input that ends inside a frame or on a lone carriage return, a
stream cut into random pieces, and a client that has its reply and never
closes.

The promises checked are those of C{docs/robustness.md} that the unit tests
prove on in-memory transports, here over real sockets: the error arrives,
as soon as it can, framed, then the end of the connection; replies do not
depend on how the input was cut; and the server goes on serving.

Nothing sleeps but the random peer, whose pauses are its misbehaviour:
every other wait is on a socket or a log line, with a bound.
"""

from __future__ import annotations

import random
import socket
import struct
import time

from support.servers import (
    HELLO,
    HELLO_REPLY,
    SERVER,
    SOCKET_TIMEOUT,
    ServerPool,
    ServerProcess,
    connect,
    readToEOF,
)

from sockplay.server.settings import DEFAULT_LINGER

LIMIT = 1024


def int32(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def assertServesInt32(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(int32(HELLO))
        assert readToEOF(sock) == int32(HELLO_REPLY)


def test_int32HeaderOverLimitRefusedAtOnce(servers: ServerPool) -> None:
    """
    A length header that announces more than C{--max-message} is refused
    as soon as the header is in: the error comes back while the peer has
    sent no byte of the payload.
    """
    server = servers.start(SERVER, "--framing", "int32", "--max-message", str(LIMIT))
    with connect(server.port) as sock:
        sock.sendall(struct.pack("!I", 10 * 1024 * 1024))
        assert readToEOF(sock) == int32(f"Error: message too long (limit {LIMIT} bytes)".encode())
    assertServesInt32(server)


def test_inputEndsInsideAnInt32Frame(servers: ServerPool) -> None:
    """
    A peer that half-closes in the middle of a frame is told so.
    """
    server = servers.start(SERVER, "--framing", "int32")
    with connect(server.port) as sock:
        sock.sendall(struct.pack("!I", 10) + b"abc")
        sock.shutdown(socket.SHUT_WR)
        reply = readToEOF(sock)
    # One frame, whose length is its payload's, holding the error.
    (length,) = struct.unpack("!I", reply[:4])
    assert length == len(reply) - 4
    assert reply[4:].startswith(b"Error: input ended inside a frame")
    assertServesInt32(server)


def test_unterminatedLineOfLimitPlusCR(servers: ServerPool) -> None:
    """
    A last line of exactly the limit plus a carriage return, then the end
    of input, is too long: the CR was held only as the start of a CRLF.
    """
    server = servers.start(SERVER, "--framing", "line", "--max-message", str(LIMIT))
    with connect(server.port) as sock:
        sock.sendall(b"x" * LIMIT + b"\r")
        sock.shutdown(socket.SHUT_WR)
        assert readToEOF(sock) == f"Error: message too long (limit {LIMIT} bytes)\n".encode()


def test_repliesDoNotDependOnHowInputIsCut(servers: ServerPool) -> None:
    """
    The same messages sent whole, and cut into random pieces sent with
    random pauses (seeded: the same cuts each run), get the same replies,
    byte for byte, in each framing.
    """
    rng = random.Random(10)
    messages = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(30)]
    for framing, encode in [
        ("line", lambda m: m.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n"),
        ("int32", int32),
    ]:
        server = servers.start(SERVER, "--framing", framing, "--keep-open")
        stream = b"".join(encode(m) for m in messages)
        replies = []
        for cut in (False, True):
            with connect(server.port) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if cut:
                    at = 0
                    while at < len(stream):
                        step = rng.randrange(1, 40)
                        sock.sendall(stream[at : at + step])
                        at += step
                        time.sleep(rng.choice([0, 0, 0.001]))
                else:
                    sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
                replies.append(readToEOF(sock))
        whole, pieces = replies
        assert whole == pieces, framing
        assert whole.count(b"Message received: ") == len(messages), framing


def test_clientThatNeverClosesIsAborted(servers: ServerPool) -> None:
    """
    A client that reads its whole reply and never closes is aborted once
    the linger period passes; the server logs it as C{aborted} and goes on
    serving.
    """
    server = servers.start(SERVER, "--framing", "line")
    with connect(server.port) as sock:
        sock.sendall(HELLO + b"\n")
        # The reply, then the server's half-close: the client stays.
        assert readToEOF(sock) == HELLO_REPLY + b"\n"
        started = time.monotonic()
        line = server.waitForLine(
            lambda line: "Connection closed: " in line, "the abort", DEFAULT_LINGER + SOCKET_TIMEOUT
        )
        took = time.monotonic() - started
    assert ", aborted, 1 message, " in line
    assert DEFAULT_LINGER - 1 <= took < DEFAULT_LINGER + 2
    with connect(server.port) as sock:
        sock.sendall(HELLO + b"\n")
        assert readToEOF(sock) == HELLO_REPLY + b"\n"
