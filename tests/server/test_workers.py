"""
Tests for C{--workers}: several processes serving the same listeners.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from support.servers import TWISTD, ServerPool, connect, readToEOF
from twisted.internet.testing import MemoryReactor

from sockplay.server import ServerSettings
from sockplay.server.workers import AdoptedEndpoint, decodeSettings, encodeSettings

DEADLINE = 20.0


def test_settingsRoundTrip() -> None:
    """
    Settings reach the workers unchanged, bytes included.
    """
    settings = ServerSettings(
        "line", True, prefix=b"\xff{pid} ", banner=b"hi\x00", delay=0.5, maxPerPeer=3
    )
    assert decodeSettings(encodeSettings(settings)) == settings


def test_adoptedEndpoint() -> None:
    """
    The adopted endpoint listens on the inherited descriptor, with the
    given address family, and closes the original (the reactor keeps a
    duplicate).
    """
    reactor = MemoryReactor()
    sock = socket.socket()
    fd = os.dup(sock.fileno())
    sock.close()
    AdoptedEndpoint(reactor, fd, socket.AF_INET).listen(object())  # type: ignore[arg-type]
    [(adoptedFD, family, _)] = reactor.adoptedPorts
    assert (adoptedFD, family) == (fd, socket.AF_INET)
    with pytest.raises(OSError):
        os.fstat(fd)


def pidsServing(port: int, count: int) -> list[int]:
    """
    Which process answered each of C{count} one-shot requests, from a
    C{{pid}} prefix.
    """
    pids = []
    for _ in range(count):
        with connect(port) as sock:
            sock.sendall(b"who")
            reply = readToEOF(sock)
        pid, _, rest = reply.partition(b" ")
        assert rest == b"who", reply
        pids.append(int(pid))
    return pids


@pytest.fixture
def workerPids(servers: ServerPool) -> Iterator[set[int]]:
    """
    The pids of every worker seen in a test, killed at the end in case a
    test left one behind.
    """
    seen: set[int] = set()
    try:
        yield seen
    finally:
        for pid in seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_workersShareTheListener(servers: ServerPool, workerPids: set[int]) -> None:
    """
    With --workers 2, connections to one port are served by two processes,
    neither of them the parent.
    """
    server = servers.start(TWISTD, "--workers", "2", "--prefix", "{pid} ")
    pids = pidsServing(server.port, 60)
    workerPids.update(pids)
    assert len(set(pids)) == 2, pids
    assert server.process.pid not in pids


def test_workerRestarted(servers: ServerPool, workerPids: set[int]) -> None:
    """
    A worker that dies is replaced, and serving goes on.
    """
    server = servers.start(TWISTD, "--workers", "2", "--prefix", "{pid} ")
    first = set(pidsServing(server.port, 40))
    workerPids.update(first)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    fresh: set[int] = set()
    while not fresh and time.monotonic() < deadline:
        seen = set(pidsServing(server.port, 10))
        workerPids.update(seen)
        assert victim not in seen or time.monotonic() < deadline
        fresh = seen - first
    assert fresh, "no new worker served within the deadline"


def test_sigtermDrainsEveryWorker(servers: ServerPool, workerPids: set[int]) -> None:
    """
    SIGTERM to the parent drains each worker: a reply owed at that moment
    still arrives, then a clean end of stream, and every process exits.
    """
    server = servers.start(
        TWISTD, "--workers", "2", "--framing", "line", "--keep-open", "--delay", "0.5",
        "--prefix", "{pid} ",
    )
    with connect(server.port) as sock:
        sock.sendall(b"owed\n")
        waitUntilServerRead(sock, DEADLINE)
        server.process.send_signal(signal.SIGTERM)
        reply = readToEOF(sock)
    pid, _, rest = reply.partition(b" ")
    workerPids.add(int(pid))
    assert rest == b"owed\n"
    assert server.process.wait(timeout=DEADLINE) == 0
    assert waitForExit(int(pid), DEADLINE), "the worker outlived its parent"


def waitUntilServerRead(sock: socket.socket, timeout: float) -> None:
    """
    Wait, at most C{timeout} seconds, until the server has read everything
    sent on C{sock}: its side of the connection, in /proc/net/tcp, has an
    empty receive queue. (Only then is a reply owed.)
    """
    clientHost, clientPort = sock.getsockname()[:2]
    serverHost, serverPort = sock.getpeername()[:2]

    def hexAddress(host: str, port: int) -> str:
        return f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"

    local, remote = hexAddress(serverHost, serverPort), hexAddress(clientHost, clientPort)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    if int(fields[4].split(":")[1], 16) == 0:
                        return
        select.select([], [], [], 0.01)
    pytest.fail("the server did not read the message in time")


def waitForExit(pid: int, timeout: float) -> bool:
    """
    Wait, at most C{timeout} seconds, for a process that is not our child
    to end (a pidfd becomes readable when it does).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(pidfd)


def test_workersServeUDP(servers: ServerPool, workerPids: set[int]) -> None:
    """
    With C{--workers 2}, C{--udp} is not dropped: the parent binds the UDP
    port once and the workers answer its datagrams, each reply from a
    worker (its C{{pid}}), never from the parent.
    """
    server = servers.start(TWISTD, "--workers", "2", "--udp", "0", "--prefix", "{pid} ")
    transcript = server.transcript()
    started = {int(pid) for pid in re.findall(r"Worker \d started \(pid (\d+)\)", transcript)}
    workerPids.update(started)
    found = re.search(r"Listening on udp:127\.0\.0\.1:(\d+) \(UDP\) with 2 workers", transcript)
    assert found is not None, transcript
    pids = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        for _ in range(20):
            sock.sendto(b"who", ("127.0.0.1", int(found.group(1))))
            reply = sock.recv(65535)
            pid, _, rest = reply.partition(b" ")
            assert rest == b"who", reply
            pids.add(int(pid))
    assert pids and pids <= started, (pids, started)
    assert server.process.pid not in pids


def test_workersSecondSignalStopsNow(servers: ServerPool, workerPids: set[int]) -> None:
    """
    With workers, a first SIGINT to the parent starts each worker's drain;
    a second stops them at once (the parent passes it on), with no
    traceback anywhere, and everything exits 0.
    """
    server = servers.start(
        TWISTD, "--workers", "2", "--framing", "line", "--keep-open", "--drain-timeout", "30",
        "--prefix", "{pid} ",
    )
    with connect(server.port) as sock:
        sock.sendall(b"hi\n")
        pid, _, rest = sock.recv(1024).partition(b" ")
        workerPids.add(int(pid))
        assert rest == b"hi\n"
        server.process.send_signal(signal.SIGINT)
        server.waitForLine(lambda line: "press Ctrl-C again to stop now" in line, "stopping")
        started = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        assert server.waitForExit() == 0, server.transcript()
        elapsed = time.monotonic() - started
    output = server.transcript()
    # Well within the 5 s a client that does not close is given.
    assert elapsed < 4, output
    assert "Traceback" not in output
    assert waitForExit(int(pid), DEADLINE), "the worker outlived its parent"
    assert "aborted" in output
