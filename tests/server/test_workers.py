"""
Tests for C{--workers}: several processes serving the same listeners.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from support.fakes import serverSettings
from support.servers import TWISTD, ServerPool, connect, readToEOF, run, serverCommands
from twisted.internet import tcp, unix
from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport, IReactorProcess
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay import _worker
from sockplay.server import ServerSettings
from sockplay.server.listening import makeEndpoint
from sockplay.server.reuseport import ReusePortTCP, canSpreadConnections, perWorkerEndpoint
from sockplay.server.tap import Options
from sockplay.server.worker import FIRST_FD, AdoptedEndpoint, decodeSettings, encodeSettings
from sockplay.server.workers import (
    MAX_WORKERS,
    WORKER_MODULE,
    SpawnFailed,
    WorkerPoolService,
)

DEADLINE = 20.0


def test_settingsRoundTrip() -> None:
    """
    Settings reach the workers unchanged, bytes included.
    """
    settings = serverSettings(
        "line", True, prefix=b"\xff{pid} ", banner=b"hi\x00", delay=0.5, maxPerPeer=3,
        jitter=0.25, throttle=1000,
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


@implementer(IProcessTransport)
class FakeProcess:
    """
    A worker process that a L{SpawningReactor} pretends to have started.

    @ivar signals: the names of the signals sent to it, in order.
    """

    def __init__(
        self,
        pid: int,
        protocol: IProcessProtocol,
        args: Sequence[str],
        childFDs: Mapping[int, int | str] | None = None,
    ) -> None:
        self.pid = pid
        self.protocol = protocol
        self.args = list(args)
        self.childFDs = dict(childFDs or {})
        self.signals: list[str] = []

    def signalProcess(self, signalID: str | int) -> None:
        self.signals.append(str(signalID))

    def end(self, status: int = 0) -> None:
        """
        The process exits with C{status}.
        """
        reason = ProcessDone(status) if status == 0 else ProcessTerminated(status)
        self.protocol.processEnded(Failure(reason))


@implementer(IReactorProcess)
class SpawningReactor(MemoryReactorClock):
    """
    A memory reactor that starts pretend processes, and fails to start
    those whose attempt numbers (counted from 1) are in C{failing}, as fork
    does at the process limit.

    @ivar processes: the processes started.
    @ivar attempts: how many starts were asked for.
    """

    def __init__(
        self, failing: Sequence[int] = (), error: OSError | None = None
    ) -> None:
        super().__init__()
        self.failing = set(failing)
        self.error = error or OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        self.processes: list[FakeProcess] = []
        self.attempts = 0

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Sequence[bytes | str],
        env: Mapping[Any, Any] | None = None,
        path: bytes | str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, int | str] | None = None,
    ) -> IProcessTransport:
        self.attempts += 1
        if self.attempts in self.failing:
            raise self.error
        process = FakeProcess(
            1000 + self.attempts, processProtocol, [str(a) for a in args], childFDs
        )
        processProtocol.makeConnection(process)
        self.processes.append(process)
        return process


def workerPool(count: int, reactor: SpawningReactor) -> WorkerPoolService:
    """
    A pool of C{count} workers on C{reactor}, with no listeners (binding is
    not what these tests are about).
    """
    return WorkerPoolService(count, [], ServerSettings(), 1.0, reactor)


def test_workerRunsTheTetheredEntryPoint() -> None:
    """
    A worker is started as C{python -m sockplay._worker PARENT}: the entry
    point that ties its life to this process's, named by pid.
    """
    reactor = SpawningReactor()
    workerPool(2, reactor).startService()
    assert [p.args for p in reactor.processes] == [
        [sys.executable, "-m", WORKER_MODULE, str(os.getpid())]
    ] * 2
    assert WORKER_MODULE == _worker.__name__


def test_spawnFailureStopsStartedWorkers() -> None:
    """
    A worker that cannot be started at all ends the start with one line
    (a L{SpawnFailed}, which the runners turn into that line and exit
    status 1); the workers already started are sent SIGTERM, and none is
    restarted when it ends.
    """
    reactor = SpawningReactor(failing=[3])
    pool = workerPool(4, reactor)
    with pytest.raises(SpawnFailed) as info:
        pool.startService()
    assert str(info.value) == (
        "Error: cannot start worker 3 of 4: too many processes (the limit is ulimit -u); "
        "lower --workers or raise that limit"
    )
    assert isinstance(info.value, SystemExit)
    assert reactor.attempts == 3
    assert [p.signals for p in reactor.processes] == [["TERM"], ["TERM"]]
    for process in reactor.processes:
        process.end()
    assert reactor.getDelayedCalls() == []
    assert pool.processes == {}
    assert not pool.ready.called


class CaughtSignals:
    """
    Stands in for L{sockplay.server.lifecycle.SecondSignal} with its
    handlers installed.
    """

    caught = True

    def whenSecond(self, callback: object) -> None:
        pass


def test_spawnFailureStopsWithoutCtrlCHint(logged: list[str]) -> None:
    """
    Stopping after a failed start says how many workers it stops, but not
    to press Ctrl-C again: no signal is being handled.
    """
    reactor = SpawningReactor(failing=[3])
    pool = WorkerPoolService(4, [], ServerSettings(), 1.0, reactor, signals=CaughtSignals())
    with pytest.raises(SpawnFailed):
        pool.startService()
    pool.stopService()
    assert any(line == "Stopping 2 workers" for line in logged), logged


def test_spawnFailureOtherError() -> None:
    """
    A start that fails for another reason than the process limit says why
    in the system's words.
    """
    reactor = SpawningReactor(failing=[1], error=OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)))
    with pytest.raises(SpawnFailed) as info:
        workerPool(2, reactor).startService()
    assert str(info.value) == "Error: cannot start worker 1 of 2: Cannot allocate memory"


def test_restartThatFailsIsTriedAgain(logged: list[str]) -> None:
    """
    Once serving, a worker that dies and cannot be started again (the
    process limit may be reached only for a while) is tried again later,
    with the restart backoff, and one log line each time; the server goes
    on with the workers it has.
    """
    reactor = SpawningReactor(failing=[3])
    pool = workerPool(2, reactor)
    pool.startService()
    reactor.processes[0].end(1)
    # A worker that dies at once is restarted after 0.2 s...
    reactor.advance(0.2)
    assert reactor.attempts == 3
    # ...and when that fails, tried again after twice as long.
    assert "Cannot restart worker 1: Resource temporarily unavailable; trying again in 0.4 s" in (
        logged
    )
    [retry] = reactor.getDelayedCalls()
    assert retry.getTime() - reactor.seconds() == pytest.approx(0.4)
    reactor.advance(0.4)
    assert reactor.attempts == 4
    assert sorted(pool.processes) == [1, 2]
    assert pool.transports[1] is reactor.processes[-1]


@pytest.mark.parametrize("count", ["0", str(MAX_WORKERS + 1), "100000"])
def test_workersBounded(count: str) -> None:
    """
    An absurd C{--workers} is a usage error that names the bound, rather
    than a start that exhausts the process limit.
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(["--workers", count])
    assert str(info.value) == (
        f"--workers must be a whole number from 1 to {MAX_WORKERS}, not '{count}'"
    )


def test_workersBoundAccepted() -> None:
    """
    The bound itself is accepted, and C{--help} names it.
    """
    config = Options()
    config.parseOptions(["--workers", str(MAX_WORKERS)])
    assert config["workers"] == MAX_WORKERS
    assert f"at most {MAX_WORKERS}" in " ".join(str(config).split())


@serverCommands
def test_absurdWorkersIsOneLine(command: list[str], tmp_path: Path) -> None:
    """
    C{--workers 100000} ends at once with one error line and exit status 2,
    before anything is started.
    """
    # The bad --listen after it stops a server that would accept the count
    # (such as an older one) before it starts 100000 processes.
    result = run([*command, "--workers", "100000", "--listen", "nonsense:"], tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines()[0] == (
        f"Error: --workers must be a whole number from 1 to {MAX_WORKERS}, not '100000'"
    )
    assert "Traceback" not in result.stderr


def test_tieToParentSetsTheSignalFirst() -> None:
    """
    The death signal is set before the parent is looked at: a parent that
    dies after the look is then reported by the signal.
    """
    calls: list[str] = []

    def setDeathSignal() -> None:
        calls.append("set")

    def getppid() -> int:
        calls.append("getppid")
        return 42

    assert _worker.tieToParent(42, setDeathSignal, getppid)
    assert calls == ["set", "getppid"]


def test_tieToParentSeesAnOrphan() -> None:
    """
    A worker whose parent died before the death signal was set has been
    handed to another parent: it is told so.
    """
    assert not _worker.tieToParent(42, lambda: None, lambda: 1)


def test_orphanExitsBeforeServing(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A worker that finds itself an orphan exits at once, with status 0,
    before it imports the server.
    """
    monkeypatch.setattr(_worker, "tieToParent", lambda parent: False)
    # Importing the server now would raise ImportError.
    monkeypatch.setitem(sys.modules, "sockplay.server.worker", None)
    with pytest.raises(SystemExit) as info:
        _worker.main(["42"])
    assert info.value.code == 0


@pytest.mark.parametrize("argv", [[], ["x"], ["1", "2"]])
def test_workerEntryPointNeedsItsParent(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """
    Run by hand, the worker's entry point says what it is, exit status 2.
    """
    with pytest.raises(SystemExit) as info:
        _worker.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "Error: this is a sockplay worker, started by `twistd sockplay --workers N`\n"
    )


def test_workerEntryPointImportsNothingSlow() -> None:
    """
    Importing the worker's entry point imports neither Twisted nor the
    server: the death signal is set before anything slow.
    """
    code = (
        "import sys, sockplay._worker; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'sockplay')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=DEADLINE
    ).stdout
    assert out.strip() == "['sockplay', 'sockplay._worker']"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_dieWithParentSetsTheSignal() -> None:
    """
    On Linux, L{_worker.dieWithParent} sets the parent-death signal to
    SIGTERM (read back with C{PR_GET_PDEATHSIG}, in a child process so that
    the test runner keeps its own).
    """
    code = (
        "import ctypes, sockplay._worker as w; "
        "ok = w.dieWithParent(); "
        "value = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0); "
        "print(ok, value.value)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=DEADLINE
    ).stdout
    assert out.split() == ["True", str(int(signal.SIGTERM))]


class BindingReactor(SpawningReactor):
    """
    A L{SpawningReactor} whose TCP and UNIX ports are real sockets, bound
    and listening, that nothing ever reads: what the parent of the workers
    makes of its listeners.

    @ivar bound: every port it made.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bound: list[Any] = []

    def listenTCP(
        self, port: Any, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        listening = tcp.Port(port, factory, backlog, interface, reactor=self)
        listening.startListening()
        self.bound.append(listening)
        return listening

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666,
        wantPID: bool = False,
    ) -> Any:
        listening = unix.Port(address, factory, backlog, mode, self, wantPID)
        listening.startListening()
        self.bound.append(listening)
        return listening

    def close(self) -> None:
        """
        Close every socket it made.
        """
        for port in self.bound:
            port.socket.close()


@pytest.fixture
def bindingReactor() -> Iterator[BindingReactor]:
    """
    A L{BindingReactor} whose sockets are closed after the test.
    """
    reactor = BindingReactor()
    try:
        yield reactor
    finally:
        reactor.close()


def socketOf(fd: int) -> socket.socket:
    """
    A socket object for a duplicate of C{fd}, to look at.
    """
    return socket.socket(fileno=os.dup(fd))


def reusesPort(sock: socket.socket) -> bool:
    """
    Whether C{sock} was bound with C{SO_REUSEPORT}.
    """
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def workerSocketFDs(reactor: SpawningReactor) -> list[int]:
    """
    The descriptor each started worker got as its first listener, in the
    order they were started.
    """
    return [int(process.childFDs[FIRST_FD]) for process in reactor.processes]


EPHEMERAL_TCP = "tcp:0:interface=127.0.0.1"


def test_canSpreadConnections() -> None:
    """
    Linux spreads connections over a group of C{SO_REUSEPORT} sockets; other
    platforms (where the option does not balance), and a Python without the
    option, do not.
    """
    withOption = types.SimpleNamespace(SO_REUSEPORT=15)
    without = types.SimpleNamespace()
    assert canSpreadConnections("linux", withOption)  # type: ignore[arg-type]
    assert not canSpreadConnections("darwin", withOption)  # type: ignore[arg-type]
    assert not canSpreadConnections("freebsd14", withOption)  # type: ignore[arg-type]
    assert not canSpreadConnections("linux", without)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:0:interface=127.0.0.1", True),
        ("tcp6:0:interface=\\:\\:1", True),
        ("haproxy:tcp:0:interface=127.0.0.1", True),
        ("unix:/tmp/sockplay-test.sock", False),
    ],
)
def test_perWorkerEndpoint(description: str, expected: bool) -> None:
    """
    TCP listeners, also behind C{haproxy:}, can be a socket per worker;
    UNIX sockets cannot.
    """
    assert perWorkerEndpoint(makeEndpoint(MemoryReactor(), description)) is expected


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_reusePortGroupSharesOnePort(bindingReactor: BindingReactor) -> None:
    """
    Each C{listenTCP} of a L{ReusePortTCP} is another listening socket,
    bound with C{SO_REUSEPORT} to the port that the first one got for
    port 0.
    """
    group = ReusePortTCP(bindingReactor)
    first = group.listenTCP(0, Factory(), 10, "127.0.0.1")
    second = group.listenTCP(0, Factory(), 10, "127.0.0.1")
    port = first.getHost().port  # type: ignore[attr-defined]
    assert port != 0
    assert group.portNumber == port
    assert second.getHost().port == port  # type: ignore[attr-defined]
    sockets = [cast(Any, p).socket for p in (first, second)]
    assert sockets[0].fileno() != sockets[1].fileno()
    assert [reusesPort(s) for s in sockets] == [True, True]


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_reusePortGroupRefusesATakenPort(bindingReactor: BindingReactor) -> None:
    """
    A group asked for a port on which another socket listens fails as a
    port in use does, even when that socket allows C{SO_REUSEPORT}: a second
    server on the same port must not quietly share it with the first.
    """
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(CannotListenError) as info:
            ReusePortTCP(bindingReactor).listenTCP(taken, Factory(), 10, "127.0.0.1")
    assert info.value.socketError.errno == errno.EADDRINUSE  # type: ignore[attr-defined]
    assert bindingReactor.bound == []


def boundPool(
    reactor: BindingReactor, description: str, reusePort: bool, count: int = 2
) -> WorkerPoolService:
    """
    A started pool of C{count} workers on one listener, C{description}.
    """
    pool = WorkerPoolService(
        count,
        [(description, makeEndpoint(reactor, description))],
        ServerSettings(),
        1.0,
        reactor,
        reusePort=reusePort,
    )
    pool.privilegedStartService()
    pool.startService()
    return pool


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_poolGivesEachWorkerASocket(bindingReactor: BindingReactor) -> None:
    """
    With C{reusePort}, each worker gets a listening socket of its own for a
    TCP listener, all bound with C{SO_REUSEPORT} to the same port, which
    the parent keeps but does not read.
    """
    pool = boundPool(bindingReactor, EPHEMERAL_TCP, reusePort=True, count=3)
    fds = workerSocketFDs(bindingReactor)
    assert len(set(fds)) == 3
    [listener] = pool.listening
    assert [port.fileno() for port in listener.ports] == fds
    sockets = [socketOf(fd) for fd in fds]
    try:
        assert {s.getsockname() for s in sockets} == {sockets[0].getsockname()}
        assert all(reusesPort(s) for s in sockets)
    finally:
        for s in sockets:
            s.close()
    assert not any(bindingReactor.readers)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_restartedWorkerGetsItsSocketBack(bindingReactor: BindingReactor) -> None:
    """
    A worker that dies is restarted on the socket it had, so that the
    connections queued on it are not stranded.
    """
    boundPool(bindingReactor, EPHEMERAL_TCP, reusePort=True)
    fds = workerSocketFDs(bindingReactor)
    bindingReactor.processes[0].end(1)
    bindingReactor.advance(1.0)
    assert len(bindingReactor.processes) == 3
    assert int(bindingReactor.processes[2].childFDs[FIRST_FD]) == fds[0]


def test_poolSharesWithoutReusePort(bindingReactor: BindingReactor) -> None:
    """
    Without C{reusePort} (a platform that does not spread connections over
    a group), every worker gets the one listening socket.
    """
    pool = boundPool(bindingReactor, EPHEMERAL_TCP, reusePort=False)
    fds = workerSocketFDs(bindingReactor)
    [listener] = pool.listening
    assert len(listener.ports) == 1
    assert fds == [listener.ports[0].fileno()] * 2
    with socketOf(fds[0]) as sock:
        assert not reusesPort(sock)


def test_poolSharesAUnixListener(bindingReactor: BindingReactor, tmp_path: Path) -> None:
    """
    A UNIX socket listener is shared even with C{reusePort}:
    C{SO_REUSEPORT} does not spread a UNIX socket's connections.
    """
    path = tmp_path / "sockplay.sock"
    boundPool(bindingReactor, f"unix:{path}", reusePort=True)
    fds = workerSocketFDs(bindingReactor)
    assert len(bindingReactor.bound) == 1
    assert fds == [bindingReactor.bound[0].fileno()] * 2


def test_poolReusesPortWhereSpread() -> None:
    """
    By default, a pool gives each worker a socket where the platform
    spreads connections over them.
    """
    pool = WorkerPoolService(2, [], ServerSettings(), 1.0, SpawningReactor())
    assert pool.reusePort is canSpreadConnections()


def listeningSockets(port: int) -> int:
    """
    How many sockets listen on TCP C{port} of 127.0.0.1 (from
    /proc/net/tcp: state 0A is LISTEN).
    """
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[1] == local and row[3] == "0A")


linuxOnly = pytest.mark.skipif(
    not canSpreadConnections(), reason="a socket per worker is Linux's (SO_REUSEPORT)"
)


@linuxOnly
def test_workersEachServeTheirOwnSocket(servers: ServerPool, workerPids: set[int]) -> None:
    """
    With C{--workers 2} on Linux, the port has two listening sockets, one
    per worker, and one-shot clients are answered correctly by both
    workers, never by the parent.
    """
    server = servers.start(TWISTD, "--workers", "2", "--prefix", "{pid} ")
    assert listeningSockets(server.port) == 2
    pids = pidsServing(server.port, 60)
    workerPids.update(pids)
    assert len(set(pids)) == 2, pids
    assert server.process.pid not in pids


@linuxOnly
def test_workersEachKeepTheirConnections(servers: ServerPool, workerPids: set[int]) -> None:
    """
    With C{--workers 2} on Linux, keep-open connections are spread over
    both workers' sockets, and each is answered, message after message, by
    the one worker that accepted it.
    """
    server = servers.start(
        TWISTD, "--workers", "2", "--framing", "line", "--keep-open", "--prefix", "{pid} "
    )
    assert listeningSockets(server.port) == 2
    connections = [connect(server.port) for _ in range(30)]
    owners: list[set[int]] = []
    try:
        for sock in connections:
            seen = set()
            for n in range(3):
                message = f"message {n}\n".encode()
                sock.sendall(message)
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = sock.recv(1024)
                    assert chunk, reply
                    reply += chunk
                pid, _, rest = reply.partition(b" ")
                assert rest == message, reply
                seen.add(int(pid))
            owners.append(seen)
    finally:
        for sock in connections:
            sock.close()
    workerPids.update(pid for seen in owners for pid in seen)
    assert all(len(seen) == 1 for seen in owners), owners
    assert len(set().union(*owners)) == 2, owners
    assert server.process.pid not in set().union(*owners)


def test_workersRunOnTheParentsReactor() -> None:
    """
    Each worker is told to run on the kind of reactor its parent runs on
    (sockplay's by default, or the one --reactor or twistd chose).
    """
    from twisted.internet.epollreactor import EPollReactor

    from sockplay.server.reactor import SockplayReactor

    for kind, name in ((SockplayReactor, "sockplay"), (EPollReactor, "epoll")):
        pool = WorkerPoolService(2, [], ServerSettings(), 1.0, kind.__new__(kind))
        assert json.loads(pool._spec(0))["reactor"] == name
