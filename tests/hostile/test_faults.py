"""
Faults over real sockets: clients that reset, vanish, half-close, never read
or come two thousand at once; limits, graceful drain, the JSON log and fault
injection, each against a real C{twistd -n sockplay} process on an ephemeral
loopback port.

After each fault the server must still be running, have logged no error, and
answer a new client; each test ends by checking that. Nothing sleeps: every
wait is on a log line, a socket or a selector, with a bound, and every load
loop is bounded in bytes (or connections) and in time.

Tests that measure something print it (run with C{-s} to see the figures).
"""

from __future__ import annotations

import errno
import http.client
import json
import re
import selectors
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.servers import (
    HELLO,
    HELLO_REPLY,
    JSON_TWISTD,
    LOOPBACK,
    PREFIX,
    SERVER,
    SOCKET_TIMEOUT,
    ServerPool,
    ServerProcess,
    connect,
    readExactly,
    readToEOF,
    readWithin,
    resetConnection,
    tutorialClient,
)

# A pipelining client that never reads sends at most this much...
FLOOD_BYTES = 50 * 1024 * 1024
# ...for at most this long (seconds)...
FLOOD_SECONDS = 20.0
# ...and stops once its socket has not been writable for this long (seconds):
# the server has stopped reading it.
STALL_SECONDS = 2.0
# The acceptance criterion: such a client grows the server's RSS by less.
RSS_GROWTH_LIMIT_KIB = 16 * 1024
# How often another client makes a round trip during the flood (seconds),
# and the most any one round trip may take (seconds).
PROBE_INTERVAL = 0.1
PROBE_BOUND = 2.0

# Connections held open at once, and messages exchanged on each.
CONNECTIONS = 2000
MESSAGES = 3
# Connects in flight at once: within any listen backlog (sockplay asks for
# 1024; Twisted's own default is 50), so that no SYN is dropped and retried.
CONNECT_BATCH = 50
# Seconds the whole many-connection exchange may take.
CONNECTIONS_DEADLINE = 60.0
# File descriptors the test process needs beyond the connections.
SPARE_DESCRIPTORS = 100

LINE_REQUEST = HELLO + b"\n"
LINE_REPLY = HELLO_REPLY + b"\n"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerPool]:
    """
    Servers for one test, all stopped at its end.
    """
    with ServerPool(tmp_path) as pool:
        yield pool


# Reading the server's JSON log.


def isConnectionEvent(line: str) -> bool:
    """
    Whether C{line} of a JSON log is a closed connection's event.
    """
    return bool(json.loads(line).get("event") == "connection")


def nextConnectionEvent(server: ServerProcess) -> dict[str, Any]:
    """
    The next closed-connection event the server logs.
    """
    record: dict[str, Any] = json.loads(
        server.waitForLine(isConnectionEvent, "a closed connection's event")
    )
    return record


def records(server: ServerProcess) -> list[dict[str, Any]]:
    """
    Every line the server has written so far, each parsed as JSON.
    """
    return [json.loads(line) for line in server.output]


def connectionEvents(server: ServerProcess) -> list[dict[str, Any]]:
    """
    The closed-connection events among the lines read so far.
    """
    return [record for record in records(server) if record.get("event") == "connection"]


def stopServer(server: ServerProcess) -> int:
    """
    Send the server SIGTERM and wait for it to exit.

    @return: its exit status.
    """
    server.process.send_signal(signal.SIGTERM)
    return server.waitForExit()


def assertNoErrors(server: ServerProcess) -> None:
    """
    Nothing the server has logged so far is an error or a traceback.
    """
    bad = [
        record
        for record in records(server)
        if record.get("level") in ("error", "critical")
        or "traceback" in record
        or "Unhandled" in record.get("text", "")
    ]
    assert bad == [], server.transcript()


def assertServes(server: ServerProcess, framing: str) -> None:
    """
    The server still runs, has logged no error, and answers a new client's
    tutorial-style exchange (one message in C{framing}, its reply, then a
    clean end of input).
    """
    assert server.process.poll() is None, server.transcript()
    if framing == "raw":
        assert tutorialClient(server.port) == (HELLO_REPLY, b"")
    else:
        request, expected = {
            "line": (LINE_REQUEST, LINE_REPLY),
            "eof": (HELLO, HELLO_REPLY),
        }[framing]
        with connect(server.port) as sock:
            sock.sendall(request)
            if framing == "eof":
                sock.shutdown(socket.SHUT_WR)
            reply = readExactly(sock, len(expected))
            if framing != "eof":
                sock.shutdown(socket.SHUT_WR)
            rest = readToEOF(sock)
        assert (reply, rest) == (expected, b"")
    assertNoErrors(server)


# Socket helpers.


def lineExchange(sock: socket.socket, message: bytes) -> bytes:
    """
    Send C{message} as a line and read as much as its reply should be.
    """
    sock.sendall(message + b"\n")
    return readExactly(sock, len(PREFIX) + len(message) + 1)


def waitReadable(sock: socket.socket, timeout: float) -> bool:
    """
    Wait, at most C{timeout} seconds, for C{sock} to have data, an end of
    input or an error to read.
    """
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def socketQueues(local: int, remote: int) -> tuple[int, int] | None:
    """
    The send and receive queues (unacknowledged and unread bytes) of the
    loopback TCP socket from port C{local} to port C{remote}, from
    C{/proc/net/tcp}; C{None} if there is no such socket.
    """
    try:
        table = open("/proc/net/tcp")
    except FileNotFoundError:
        pytest.skip("no /proc/net/tcp: cannot see what the server has read")
    with table:
        next(table)
        for line in table:
            fields = line.split()
            ports = [int(address.rsplit(":", 1)[1], 16) for address in fields[1:3]]
            if ports == [local, remote]:
                sendQueue, receiveQueue = (int(size, 16) for size in fields[4].split(":"))
                return sendQueue, receiveQueue
    return None


def waitUntilServerRead(sock: socket.socket, serverPort: int) -> None:
    """
    Poll, at most L{SOCKET_TIMEOUT} seconds, until the server has read all
    that was sent on C{sock}: the client's bytes are all acknowledged and
    the server's socket holds none unread.
    """
    clientPort = sock.getsockname()[1]
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while (
        socketQueues(clientPort, serverPort),
        socketQueues(serverPort, clientPort),
    ) != ((0, 0), (0, 0)):
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not read its client's bytes in {SOCKET_TIMEOUT} s")


def memoryKiB(pid: int, field: str) -> int:
    """
    A memory figure of process C{pid}, in KiB, from C{/proc/PID/status}
    (C{VmRSS}: resident now; C{VmHWM}: resident at its peak).
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pytest.skip("no /proc: cannot measure the server's memory")
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# 1. A client resets in the middle of a message.


def test_resetMidMessage(servers: ServerPool) -> None:
    """
    A client that resets (RST) in the middle of a line ends only its own
    connection, which is logged as reset; the server goes on serving.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open")
    half = b"half a li"
    with connect(server.port) as sock:
        sock.sendall(half)
        waitUntilServerRead(sock, server.port)
        resetConnection(sock)
    event = nextConnectionEvent(server)
    assert (event["outcome"], event["messages"], event["bytesIn"]) == ("reset", 0, len(half))
    assertServes(server, "line")


# 2. A client is gone before its (delayed) reply is due.


def test_clientClosesBeforeDelayedReply(servers: ServerPool) -> None:
    """
    A client that sends a message and closes before its reply is due (C{--delay})
    does not upset the server: the reply falls on a closed socket, and the
    connection is logged with an outcome.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--delay", "0.3")
    with connect(server.port) as sock:
        sock.sendall(LINE_REQUEST)
        waitUntilServerRead(sock, server.port)
    event = nextConnectionEvent(server)
    assert (event["outcome"], event["messages"]) == ("ok", 1)
    assertServes(server, "line")


def test_clientResetsBeforeDelayedReply(servers: ServerPool) -> None:
    """
    A client that sends a message and resets before its reply is due
    (C{--delay}) is logged as reset; its pending reply is dropped, and the
    server goes on serving.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--delay", "0.3")
    with connect(server.port) as sock:
        sock.sendall(LINE_REQUEST)
        waitUntilServerRead(sock, server.port)
        resetConnection(sock)
    event = nextConnectionEvent(server)
    assert (event["outcome"], event["messages"]) == ("reset", 1)
    assertServes(server, "line")


# 3. Half-close: the client shuts down its write side, then reads.


@pytest.mark.parametrize("framing", ["eof", "line"])
def test_halfCloseGetsWholeReply(framing: str, servers: ServerPool) -> None:
    """
    A one-shot client that sends its message, shuts down its write side and
    only then reads gets the whole reply, then a clean end of input.
    """
    server = servers.start(JSON_TWISTD, "--framing", framing)
    # Several segments' worth, under the default --max-message of 64 KiB.
    message = bytes(range(32, 127)) * 600
    terminator = b"\n" if framing == "line" else b""
    with connect(server.port) as sock:
        sock.sendall(message + terminator)
        sock.shutdown(socket.SHUT_WR)
        reply = readToEOF(sock)
    assert reply == PREFIX + message + terminator
    assertServes(server, framing)


# 4. A client that pipelines requests and never reads the replies.


@dataclass
class Flood:
    """
    What a client that sends without reading achieved.

    @ivar sent: bytes it sent.
    @ivar seconds: how long it sent for.
    @ivar stalled: whether its socket stopped being writable (backpressure).
    @ivar stalledAt: when it last made progress (C{time.monotonic()}).
    @ivar probes: each other-client round trip, as (when it started, seconds).
    """

    sent: int = 0
    seconds: float = 0.0
    stalled: bool = False
    stalledAt: float = 0.0
    probes: list[tuple[float, float]] = field(default_factory=list)


def roundTrip(sock: socket.socket) -> float:
    """
    One line request and its reply on C{sock}.

    @return: how long it took, in seconds.
    """
    started = time.monotonic()
    assert lineExchange(sock, b"probe") == b"Message received: probe\n"
    return time.monotonic() - started


def floodWithoutReading(sock: socket.socket, probe: socket.socket | None = None) -> Flood:
    """
    Pipeline line requests on C{sock}, made non-blocking, never reading,
    until L{FLOOD_BYTES} are sent, L{FLOOD_SECONDS} pass, or the socket has
    not been writable for L{STALL_SECONDS}. Meanwhile, every
    L{PROBE_INTERVAL}, make a round trip on C{probe} if given.
    """
    flood = Flood()
    chunk = memoryview((b"r" * 63 + b"\n") * 1024)
    offset = 0
    sock.setblocking(False)
    started = lastProgress = nextProbe = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while flood.sent < FLOOD_BYTES:
            now = time.monotonic()
            if now - lastProgress >= STALL_SECONDS:
                flood.stalled = True
                break
            if now - started >= FLOOD_SECONDS:
                break
            if probe is not None and now >= nextProbe:
                flood.probes.append((now, roundTrip(probe)))
                nextProbe = time.monotonic() + PROBE_INTERVAL
            if not selector.select(PROBE_INTERVAL):
                continue
            try:
                sent = sock.send(chunk[offset:])
            except BlockingIOError:
                continue
            flood.sent += sent
            offset = (offset + sent) % len(chunk)
            lastProgress = time.monotonic()
    flood.seconds = time.monotonic() - started
    flood.stalledAt = lastProgress
    return flood


def test_unreadRepliesBoundServerMemory(servers: ServerPool) -> None:
    """
    A client that pipelines line requests without reading the replies is
    stopped by backpressure: it cannot send its 50 MB, and the server's RSS
    grows by less than 16 MB.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open")
    pid = server.process.pid
    # Warm up: the code paths of a connection are loaded before measuring.
    assertServes(server, "line")
    before = memoryKiB(pid, "VmRSS")
    # Closed with its replies unread: a RST.
    with connect(server.port) as sock:
        flood = floodWithoutReading(sock)
        after = memoryKiB(pid, "VmRSS")
        peak = memoryKiB(pid, "VmHWM")
    print(
        f"\nunread flood: sent {flood.sent} bytes in {flood.seconds:.2f} s, "
        f"stalled: {flood.stalled}; server VmRSS {before} -> {after} KiB "
        f"(growth {after - before} KiB), VmHWM {peak} KiB"
    )
    assert flood.stalled, f"the server kept reading: {flood.sent} bytes sent"
    assert after - before < RSS_GROWTH_LIMIT_KIB
    assert peak - before < RSS_GROWTH_LIMIT_KIB
    assertServes(server, "line")


def test_othersServedWhileOneClientDoesNotRead(servers: ServerPool) -> None:
    """
    While one client pipelines requests without reading (and the server has
    stopped reading it), another client's round trips still succeed, each
    within L{PROBE_BOUND} seconds.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open")
    with connect(server.port) as probe, connect(server.port) as sock:
        probe.settimeout(PROBE_BOUND)
        flood = floodWithoutReading(sock, probe)
        # A last one after the flood stopped: it is surely held back now.
        flood.probes.append((time.monotonic(), roundTrip(probe)))
    latencies = [seconds for _, seconds in flood.probes]
    during = [seconds for when, seconds in flood.probes if when > flood.stalledAt]
    print(
        f"\nround trips beside an unread flood ({flood.sent} bytes, stalled: "
        f"{flood.stalled}): {len(latencies)} in all, median "
        f"{statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms; "
        f"{len(during)} under backpressure, max {max(during, default=0) * 1000:.2f} ms"
    )
    assert flood.stalled
    assert during
    assert max(latencies) < PROBE_BOUND
    assertServes(server, "line")


# 5. Two thousand concurrent connections.


@pytest.fixture
def fileLimit() -> Iterator[None]:
    """
    Raise this process's soft limit on open files enough for L{CONNECTIONS}
    sockets, and put it back afterwards.
    """
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTIONS + SPARE_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"open-file hard limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def remaining(deadline: float, what: str) -> float:
    """
    Seconds left before C{deadline}; fail the test, naming C{what} was
    awaited, once there are none.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        pytest.fail(f"{CONNECTIONS_DEADLINE} s passed waiting for {what}")
    return left


def openConnections(
    selector: selectors.BaseSelector,
    port: int,
    count: int,
    deadline: float,
    opened: list[socket.socket],
) -> list[socket.socket]:
    """
    Open C{count} non-blocking connections to C{port} at once and wait
    until each is established.

    @param opened: each new socket is added here as soon as it exists, for
        the caller to close.
    @return: the new sockets.
    """
    batch = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        opened.append(sock)
        batch.append(sock)
        sock.setblocking(False)
        result = sock.connect_ex((LOOPBACK, port))
        assert result in (0, errno.EINPROGRESS), errno.errorcode.get(result, result)
        selector.register(sock, selectors.EVENT_WRITE)
    pending = len(batch)
    while pending:
        for key, _ in selector.select(remaining(deadline, f"{pending} connects")):
            connected = key.fileobj
            assert isinstance(connected, socket.socket)
            selector.unregister(connected)
            assert connected.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            pending -= 1
    return batch


def converse(
    selector: selectors.BaseSelector,
    connections: list[socket.socket],
    first: int,
    message: int,
    deadline: float,
) -> int:
    """
    Send message number C{message} on every connection at once, then read
    every reply and check it.

    @param first: the number of the first connection, to tell them apart.
    @return: how many replies were right (all of them, or the test fails).
    """
    expected: dict[socket.socket, bytes] = {}
    for number, sock in enumerate(connections, first):
        request = b"connection %d message %d\n" % (number, message)
        # A few bytes always fit in an idle socket's send buffer.
        assert sock.send(request) == len(request)
        expected[sock] = PREFIX + request
        selector.register(sock, selectors.EVENT_READ, bytearray())
    correct = 0
    while expected:
        for key, _ in selector.select(remaining(deadline, f"{len(expected)} replies")):
            readable = key.fileobj
            assert isinstance(readable, socket.socket)
            chunk = readable.recv(4096)
            assert chunk, f"connection closed before its reply to message {message}"
            key.data.extend(chunk)
            if len(key.data) >= len(expected[readable]):
                assert bytes(key.data) == expected.pop(readable)
                selector.unregister(readable)
                correct += 1
    return correct


def test_twoThousandConcurrentConnections(servers: ServerPool, fileLimit: None) -> None:
    """
    Two thousand keep-open connections, all open at once, each get a correct
    reply to each of their messages.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open")
    started = time.monotonic()
    deadline = started + CONNECTIONS_DEADLINE
    connections: list[socket.socket] = []
    correct = 0
    try:
        with selectors.DefaultSelector() as selector:
            # Connect in batches, each answering its first message, so that
            # the listen backlog never overflows.
            for first in range(0, CONNECTIONS, CONNECT_BATCH):
                count = min(CONNECT_BATCH, CONNECTIONS - first)
                batch = openConnections(selector, server.port, count, deadline, connections)
                correct += converse(selector, batch, first, 0, deadline)
            connected = time.monotonic()
            # Then every connection, all open, at once.
            for message in range(1, MESSAGES):
                correct += converse(selector, connections, 0, message, deadline)
    finally:
        for sock in connections:
            sock.close()
    finished = time.monotonic()
    print(
        f"\n{CONNECTIONS} connections x {MESSAGES} messages: connected and first replies "
        f"in {connected - started:.2f} s, all done in {finished - started:.2f} s"
    )
    assert correct == CONNECTIONS * MESSAGES
    assertServes(server, "line")


# 6. Graceful drain at SIGTERM.


def shutdownLine(server: ServerProcess) -> str:
    """
    The text of the server's C{Shutdown complete} log line.
    """
    lines = [
        str(record["text"])
        for record in records(server)
        if str(record["text"]).startswith("Shutdown complete")
    ]
    assert len(lines) == 1, server.transcript()
    return lines[0]


def test_drainAnswersInFlightMessage(servers: ServerPool) -> None:
    """
    A message read before SIGTERM, whose delayed reply is still pending when
    the drain starts, gets its reply, then a clean end of input; the server
    exits 0 having drained the connection.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--delay", "0.5")
    with connect(server.port) as sock:
        sock.sendall(LINE_REQUEST)
        # Only what the server has read is answered at a drain: bytes still
        # in its socket buffer when SIGTERM is handled are discarded.
        waitUntilServerRead(sock, server.port)
        server.process.send_signal(signal.SIGTERM)
        reply = readExactly(sock, len(LINE_REPLY))
        rest = readToEOF(sock)
    assert (reply, rest) == (LINE_REPLY, b"")
    assert server.waitForExit() == 0, server.transcript()
    assert shutdownLine(server) == "Shutdown complete: 1 connection drained, 0 aborted"


def test_drainAbortsClientThatDoesNotClose(servers: ServerPool) -> None:
    """
    A client that neither reads nor closes after the server's half-close at
    SIGTERM is aborted after C{--drain-timeout}; the server exits 0.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--drain-timeout", "0.5"
    )
    with connect(server.port) as sock:
        assert lineExchange(sock, b"first") == b"Message received: first\n"
        # Nothing more from the client: no read, no close, until the server exits.
        status = stopServer(server)
    assert status == 0, server.transcript()
    assert shutdownLine(server) == "Shutdown complete: 0 connections drained, 1 aborted"


def test_drainAbortLoggedAsAborted(servers: ServerPool) -> None:
    """
    A connection aborted at the end of C{--drain-timeout} is logged with the
    outcome C{aborted} (the client did not close in time), not C{shutdown}
    like a connection that drained cleanly.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--drain-timeout", "0.5"
    )
    with connect(server.port) as sock:
        assert lineExchange(sock, b"first") == b"Message received: first\n"
        status = stopServer(server)
    assert status == 0, server.transcript()
    assert [event["outcome"] for event in connectionEvents(server)] == ["aborted"]


def refusedWithin(port: int, timeout: float) -> bool:
    """
    Whether a connection to C{port} is refused within C{timeout} seconds. A
    connection made meanwhile (queued on a listener that is closing) is
    waited on until it is reset, then tried again; so is one reset while
    connecting (it reached the listener as it closed).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sock = connect(port)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            continue
        with sock:
            waitReadable(sock, max(0.0, deadline - time.monotonic()))
    return False


def test_drainRefusesNewConnections(servers: ServerPool) -> None:
    """
    Once SIGTERM has started the drain, new connections are refused while
    open ones are still being drained.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open")
    with connect(server.port) as held:
        assert lineExchange(held, b"first") == b"Message received: first\n"
        server.process.send_signal(signal.SIGTERM)
        server.waitForLine(lambda line: "Shutting down" in line, "that it is shutting down")
        refused = refusedWithin(server.port, SOCKET_TIMEOUT)
        stillDraining = server.process.poll() is None
        # The server half-closed the held connection; closing it ends the drain.
        assert readToEOF(held) == b""
    assert (refused, stillDraining) == (True, True)
    assert server.waitForExit() == 0, server.transcript()


# 7. Connection limits and the idle timeout.


def test_maxConnectionsRefusesThird(servers: ServerPool) -> None:
    """
    With C{--max-connections 2} and two connections open, a third gets
    C{Error: server busy} and an end of input; once one of the two closes,
    a new client is served.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--max-connections", "2"
    )
    with connect(server.port) as first, connect(server.port) as second:
        for sock in (first, second):
            assert lineExchange(sock, b"in") == b"Message received: in\n"
        with connect(server.port) as third:
            assert readToEOF(third) == b"Error: server busy\n"
        first.shutdown(socket.SHUT_WR)
        assert readToEOF(first) == b""
        assertServes(server, "line")


def test_maxPerPeerRefusesSecond(servers: ServerPool) -> None:
    """
    With C{--max-per-peer 1}, a second connection from 127.0.0.1 gets
    C{Error: too many connections from 127.0.0.1} and an end of input; once
    the first closes, a new client is served.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--max-per-peer", "1")
    with connect(server.port) as first:
        assert lineExchange(first, b"in") == b"Message received: in\n"
        with connect(server.port) as second:
            assert readToEOF(second) == b"Error: too many connections from 127.0.0.1\n"
        first.shutdown(socket.SHUT_WR)
        assert readToEOF(first) == b""
    assertServes(server, "line")


def test_idleClientTimedOut(servers: ServerPool) -> None:
    """
    With C{--idle-timeout 0.5}, a client that sends nothing gets
    C{Error: idle timeout (0.5 s)} and an end of input.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--idle-timeout", "0.5")
    with connect(server.port) as sock:
        assert readToEOF(sock) == b"Error: idle timeout (0.5 s)\n"
    assertServes(server, "line")


# 8. The JSON log.


def test_jsonLogEveryLineParses(servers: ServerPool) -> None:
    """
    With C{--logger sockplay.logs.jsonObserver}, every line the server
    writes, from startup through a client to shutdown, is a JSON object.
    """
    server = servers.start(JSON_TWISTD)
    assert tutorialClient(server.port) == (HELLO_REPLY, b"")
    assert stopServer(server) == 0, server.transcript()
    notObjects = []
    for line in server.output:
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            notObjects.append(line)
    assert (notObjects, len(server.output) > 0) == ([], True)


def test_jsonLogOneEventPerConnection(servers: ServerPool) -> None:
    """
    One tutorial exchange is logged as exactly one connection event, with
    outcome C{ok} and the bytes each way.
    """
    server = servers.start(JSON_TWISTD)
    assert tutorialClient(server.port) == (HELLO_REPLY, b"")
    nextConnectionEvent(server)
    assert stopServer(server) == 0, server.transcript()
    [event] = connectionEvents(server)
    fields = {key: event[key] for key in ("framing", "messages", "bytesIn", "bytesOut", "outcome")}
    assert fields == {
        "framing": "raw",
        "messages": 1,
        "bytesIn": len(HELLO),
        "bytesOut": len(HELLO_REPLY),
        "outcome": "ok",
    }
    assert event["listener"] == f"tcp:{LOOPBACK}:{server.port}"
    assert event["peer"].startswith(f"tcp:{LOOPBACK}:")
    assert event["duration"] >= 0


def test_quietJsonLogHasNoConnectionEvents(servers: ServerPool) -> None:
    """
    With C{--quiet}, a client exchange logs no connection event, but the
    startup and shutdown lines are still there.
    """
    server = servers.start(JSON_TWISTD, "--quiet")
    assert tutorialClient(server.port) == (HELLO_REPLY, b"")
    assert stopServer(server) == 0, server.transcript()
    texts = [record["text"] for record in records(server)]
    assert connectionEvents(server) == []
    assert "Server is running, waiting for connections..." in texts
    assert any(text.startswith("Shutdown complete: ") for text in texts), texts


# 9. Fault injection.


def test_injectedResetReachesClient(servers: ServerPool) -> None:
    """
    With C{--reset-rate 1}, a client's message is answered by a RST: its
    read raises C{ConnectionResetError}. The next client gets the same.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--reset-rate", "1")
    for _ in range(2):
        with connect(server.port) as sock:
            sock.sendall(LINE_REQUEST)
            with pytest.raises(ConnectionResetError):
                readToEOF(sock)
        assert nextConnectionEvent(server)["outcome"] == "reset-injected"
    assert server.process.poll() is None
    assertNoErrors(server)


def test_injectedDropClosesWithoutReply(servers: ServerPool) -> None:
    """
    With C{--drop-rate 1}, a client's message is answered by a clean close
    without a reply. The next client gets the same.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--drop-rate", "1")
    for _ in range(2):
        with connect(server.port) as sock:
            sock.sendall(LINE_REQUEST)
            assert readToEOF(sock) == b""
        assert nextConnectionEvent(server)["outcome"] == "dropped"
    assert server.process.poll() is None
    assertNoErrors(server)


def test_bannerBeforeRequest(servers: ServerPool) -> None:
    """
    With C{--banner hello}, the banner arrives as soon as the client
    connects, before it sends anything; then its message is answered.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--keep-open", "--banner", "hello")
    with connect(server.port) as sock:
        assert waitReadable(sock, SOCKET_TIMEOUT)
        banner = readExactly(sock, len(b"hello\n"))
        reply = lineExchange(sock, HELLO)
        sock.shutdown(socket.SHUT_WR)
        rest = readToEOF(sock)
    assert (banner, reply, rest) == (b"hello\n", LINE_REPLY, b"")
    assert server.process.poll() is None
    assertNoErrors(server)



# 10. The faults a client sees: truncate, stall, cut-after, throttle, jitter.

# Connections tried, at most, until a fault drawn at a rate of one half has
# been seen both to hit and to miss (each misses both with odds 2**-39).
HALF_RATE_TRIES = 40

# The most a fault's timing may overrun what it asks for, on a loaded
# machine: the upper bounds are generous, the lower ones exact.
TIMING_SLACK = 3.0


def halfRateOutcomes(server: ServerProcess, seconds: float) -> dict[str, bytes]:
    """
    One-shot line exchanges with C{server}, whose fault is drawn at a rate
    of one half, until one connection got the fault and one was answered
    whole.

    @param seconds: how long one exchange may take.
    @return: what the client read (to the end of input), by the outcome the
        server logged for its connection.
    """
    seen: dict[str, bytes] = {}
    for _ in range(HALF_RATE_TRIES):
        with connect(server.port) as sock:
            sock.sendall(LINE_REQUEST)
            data, _ = readWithin(sock, seconds)
        seen.setdefault(nextConnectionEvent(server)["outcome"], data)
        if len(seen) == 2:
            return seen
    pytest.fail(f"{HALF_RATE_TRIES} connections saw only {sorted(seen)}")


def test_truncatedReplyThenClose(servers: ServerPool) -> None:
    """
    With C{--truncate-rate}, a message that draws the fault gets the first
    half of its reply, then the end of input (a close, not a reset), logged
    as truncated-reply; the others get their whole reply.
    """
    server = servers.start(JSON_TWISTD, "--framing", "line", "--truncate-rate", "0.5")
    seen = halfRateOutcomes(server, SOCKET_TIMEOUT)
    assert seen == {
        "truncated-reply": LINE_REPLY[: len(LINE_REPLY) // 2],
        "ok": LINE_REPLY,
    }
    assertNoErrors(server)


def test_stalledConnectionClosedAtIdleTimeout(servers: ServerPool) -> None:
    """
    With C{--stall-rate 1}, a message gets no reply, nor does what the
    client sends after it; the connection is closed, with no error text,
    at C{--idle-timeout} after the stalled message, logged as stalled.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--stall-rate", "1",
        "--idle-timeout", "1",
    )
    with connect(server.port) as sock:
        sock.sendall(LINE_REQUEST)
        start = time.monotonic()
        for _ in range(3):
            sock.sendall(LINE_REQUEST)
            assert not waitReadable(sock, 0.2)
        data, _ = readWithin(sock, 1 + TIMING_SLACK)
        elapsed = time.monotonic() - start
    assert data == b""
    assert 0.95 <= elapsed < 1 + TIMING_SLACK
    event = nextConnectionEvent(server)
    assert (event["outcome"], event["messages"], event["bytesOut"]) == ("stalled", 0, 0)
    assert server.process.poll() is None
    assertNoErrors(server)


def test_stallSparesOtherConnections(servers: ServerPool) -> None:
    """
    With C{--stall-rate 0.5}, a stall holds only the connection it hits:
    other clients are answered.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--stall-rate", "0.5", "--idle-timeout", "0.5",
    )
    seen = halfRateOutcomes(server, 0.5 + TIMING_SLACK)
    assert seen == {"stalled": b"", "ok": LINE_REPLY}
    assertNoErrors(server)


def test_cutAfterResetsTheConnection(servers: ServerPool) -> None:
    """
    With C{--cut-after 1}, a keep-open connection is answered until, one
    second after it opened, it is reset; logged as cut. A client that is
    done sooner is not touched.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--cut-after", "1",
    )
    start = time.monotonic()
    with connect(server.port) as sock:
        assert lineExchange(sock, HELLO) == LINE_REPLY
        with pytest.raises(ConnectionResetError):
            sock.settimeout(1 + TIMING_SLACK)
            readToEOF(sock)
        elapsed = time.monotonic() - start
    assert 0.95 <= elapsed < 1 + TIMING_SLACK
    event = nextConnectionEvent(server)
    assert (event["outcome"], event["messages"]) == ("cut", 1)
    assertServes(server, "line")


def test_throttledReplyTakesItsTime(servers: ServerPool) -> None:
    """
    With C{--throttle 20000}, a 10 KB reply takes at least 0.4 s: a tenth
    of a second's worth at once, the rest at 20,000 bytes a second; a short
    reply after it is not held back beyond that.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--throttle", "20000",
    )
    message = b"x" * 10000
    with connect(server.port) as sock:
        start = time.monotonic()
        reply = lineExchange(sock, message)
        elapsed = time.monotonic() - start
    assert reply == PREFIX + message + b"\n"
    assert (len(reply) - 2000) / 20000 <= elapsed < 0.5 + TIMING_SLACK
    assertServes(server, "line")


def test_jitteredReplies(servers: ServerPool) -> None:
    """
    With C{--delay 0.2 --jitter 0.3}, each reply comes at least 0.2 s after
    its message, and the waits differ from reply to reply.
    """
    server = servers.start(
        JSON_TWISTD, "--framing", "line", "--keep-open", "--delay", "0.2", "--jitter", "0.3",
    )
    waits = []
    with connect(server.port) as sock:
        for _ in range(8):
            start = time.monotonic()
            assert lineExchange(sock, HELLO) == LINE_REPLY
            waits.append(time.monotonic() - start)
    assert min(waits) >= 0.2
    assert max(waits) < 0.5 + TIMING_SLACK
    assert max(waits) - min(waits) > 0.05, waits
    assertServes(server, "line")


_SERVING_METRICS = re.compile(r"Serving metrics on tcp:127\.0\.0\.1:(\d+) ")


def test_faultsInjectedOnMetrics(servers: ServerPool) -> None:
    """
    C{/metrics} counts the faults injected by kind, every kind shown from
    the start, and the connections by their fault's outcome.
    """
    server = servers.start(
        SERVER, "--framing", "line", "--keep-open", "--delay", "0.01", "--cut-after", "0.5",
        "--metrics", "tcp:0:interface=127.0.0.1",
    )
    port = next(
        (int(match.group(1)) for line in server.output if (match := _SERVING_METRICS.search(line))),
        None,
    )
    assert port is not None, server.transcript()
    with connect(server.port) as sock:
        assert lineExchange(sock, HELLO) == LINE_REPLY
        sock.sendall(LINE_REQUEST * 2)
        assert readExactly(sock, 2 * len(LINE_REPLY)) == LINE_REPLY * 2
        with pytest.raises(ConnectionResetError):
            readToEOF(sock)
    server.waitForLine(lambda line: ", cut, " in line, "the cut connection's log line")
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=SOCKET_TIMEOUT)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    counts = {
        kind: float(value)
        for kind, value in re.findall(r'^sockplay_faults_injected_total\{kind="(\w+)"\} (\S+)$',
                                      text, re.MULTILINE)
    }
    assert counts == {
        "delay": 3, "drop": 0, "reset": 0, "truncate": 0, "stall": 0, "cut": 1, "throttle": 0,
    }
    assert 'sockplay_connections_total{outcome="cut"} 1.0' in text
