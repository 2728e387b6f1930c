"""
Tests for L{sockplay.server.reactor}: sockplay's reactor serves sockets as
Twisted's epoll reactor does, a protocol that raises is still logged and
disconnected without the stock reactor's C{callWithLogger}, its connections
look to the rest of Twisted as Twisted's own, and it is the servers'
default, with a way back to the stock reactor.

The reactor tests use a new L{SockplayReactor} of their own on real loopback
sockets, iterated by hand (never run), and bounded in time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.servers import TWISTD
from twisted.internet import error, tcp
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from sockplay.server import _twisted
from sockplay.server.reactor import (
    SockplayPort,
    SockplayReactor,
    SockplayServer,
    available,
)

# Seconds a test may wait for its reactor to do one thing.
DEADLINE = 10.0


@pytest.fixture
def fresh() -> Iterator[Any]:
    """
    A new L{SockplayReactor}, not installed; its sockets closed afterwards.
    """
    made = SockplayReactor()
    yield made
    for selectable in set(made.getReaders()) | set(made.getWriters()):
        try:
            selectable.connectionLost(Failure(error.ConnectionDone()))
        except KeyError:  # the protocol that raises on purpose
            pass
    made._poller.close()


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    """
    Every log event published while the test runs.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def failures(events: list[LogEvent]) -> list[tuple[type, str | None]]:
    """
    The type of each failure logged in C{events} (through the legacy log,
    as Twisted's reactor logs one, or L{twisted.logger}), with its system.
    """
    found = []
    for event in events:
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            found.append((failure.type, event.get("log_system")))
    return found


def spin(made: Any, condition: Callable[[], bool], what: str) -> None:
    """
    Iterate C{made} until C{condition()} holds, at most L{DEADLINE} seconds.
    """
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {DEADLINE} s for {what}")
        made.iterate(0.01)


class Recorder(Protocol):
    """
    Keeps what it received and whether it was disconnected; answers each
    read with C{b"ok:"} and the data. Raises from C{dataReceived} if its
    factory says so.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if data.startswith(b"raise"):
            raise ZeroDivisionError("a protocol bug")
        assert self.transport is not None
        self.transport.write(b"ok:" + data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        if getattr(self.factory, "raiseOnLost", False):
            raise KeyError("a bug in connectionLost")


def listen(made: Any, raiseOnLost: bool = False) -> tuple[Factory, list[Recorder], int]:
    """
    Listen on an ephemeral loopback port of C{made} with L{Recorder}s.
    """
    built: list[Recorder] = []

    class Recording(Factory):
        protocol = Recorder

        def buildProtocol(self, addr: Any) -> Recorder:
            protocol = Recorder()
            protocol.factory = self
            built.append(protocol)
            return protocol

    factory = Recording()
    factory.raiseOnLost = raiseOnLost  # type: ignore[attr-defined]
    port = made.listenTCP(0, factory, interface="127.0.0.1")
    return factory, built, port.getHost().port


def readAll(sock: socket.socket, made: Any, size: int) -> bytes:
    """
    Read C{size} bytes from C{sock}, iterating C{made} meanwhile.
    """
    sock.setblocking(False)
    data = b""

    def enough() -> bool:
        nonlocal data
        try:
            data += sock.recv(65536)
        except BlockingIOError:
            pass
        return len(data) >= size

    spin(made, enough, f"{size} bytes")
    return data


def test_servesAsTwistedDoes(fresh: Any) -> None:
    """
    Connections are made on L{SockplayServer}s, read and written, and the
    client's close reaches the protocol as a clean close.
    """
    _, built, port = listen(fresh)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"hello")
        assert readAll(sock, fresh, 8) == b"ok:hello"
    spin(fresh, lambda: built[0].lost is not None, "the close")
    assert type(built[0].transport) is SockplayServer
    assert built[0].lost is not None and built[0].lost.check(error.ConnectionDone)


def test_raisingProtocolIsLoggedAndDisconnected(fresh: Any, logged: list[LogEvent]) -> None:
    """
    A protocol that raises in C{dataReceived} is logged, with its
    connection's log prefix as C{system} as the stock reactor logs it, and
    disconnected; the server goes on serving other connections.
    """
    _, built, port = listen(fresh)
    with socket.create_connection(("127.0.0.1", port)) as bad:
        bad.sendall(b"raise")
        spin(fresh, lambda: bool(built) and built[0].lost is not None, "the disconnect")
        assert bad.recv(100) == b""
    assert failures(logged) == [(ZeroDivisionError, "Recorder,0,127.0.0.1")]
    assert built[0].lost is not None
    with socket.create_connection(("127.0.0.1", port)) as good:
        good.sendall(b"again")
        assert readAll(good, fresh, 8) == b"ok:again"


def test_raisingConnectionLostIsLogged(fresh: Any, logged: list[LogEvent]) -> None:
    """
    What C{connectionLost} raises, which Twisted's handler does not catch,
    is logged by the guard that C{callWithLogger} gave, and the reactor goes
    on serving.
    """
    _, built, port = listen(fresh, raiseOnLost=True)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"x")
        readAll(sock, fresh, 4)
    spin(fresh, lambda: built[0].lost is not None, "the close")
    spin(fresh, lambda: bool(failures(logged)), "the log")
    assert [kind for kind, _ in failures(logged)] == [KeyError]
    with socket.create_connection(("127.0.0.1", port)) as again:
        again.sendall(b"y")
        assert readAll(again, fresh, 4) == b"ok:y"


def test_serverLooksLikeTwistedsOwn() -> None:
    """
    A L{SockplayServer} has the log prefix and C{repr} that Twisted's own
    server connection has, formatted only when asked for, and is a plain
    socket for sockplay's direct writes.
    """
    memory = MemoryReactor()
    port = tcp.Port(0, Factory.forProtocol(Protocol), reactor=memory)
    port._realPortNumber = 4321
    made = []
    for kind in (tcp.Server, SockplayServer):
        left, right = socket.socketpair()
        made.append((kind(left, Recorder(), ("127.0.0.1", 5555), port, 7, memory), right))
    stock, lean = (transport for transport, _ in made)
    assert lean.logPrefix() == stock.logPrefix() == "Recorder,7,127.0.0.1"
    assert repr(lean) == repr(stock) == "<Recorder #7 on 4321>"
    assert "logstr" not in vars(lean) and "repstr" not in vars(lean)
    # Every other attribute Twisted's __init__ sets is set: an upgrade that
    # sets more fails here, naming them.
    assert set(vars(stock)) - set(vars(lean)) == {"logstr", "repstr"}
    assert _twisted.isPlainSocket(lean)
    for transport, other in made:
        transport.socket.close()
        other.close()


def test_listenAndAdoptMakeSockplayPorts(fresh: Any, tmp_path: Any) -> None:
    """
    TCP listeners, made or adopted (as workers do), are L{SockplayPort}s;
    a UNIX socket is adopted as Twisted adopts it.
    """
    port = fresh.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    assert type(port) is SockplayPort
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(5)
    adopted = fresh.adoptStreamPort(listening.fileno(), socket.AF_INET, Factory())
    listening.close()
    assert type(adopted) is SockplayPort
    unixSocket = socket.socket(socket.AF_UNIX)
    unixSocket.bind(str(tmp_path / "sock"))
    unixSocket.listen(5)
    unixPort = fresh.adoptStreamPort(unixSocket.fileno(), socket.AF_UNIX, Factory())
    unixSocket.close()
    assert not isinstance(unixPort, SockplayPort)
    for p in (port, adopted, unixPort):
        p.stopListening()


def test_unavailableWithoutItsNames(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A Twisted without one of those names makes the reactor unavailable, and
    the servers then run on Twisted's own.
    """
    assert available()
    monkeypatch.delattr(tcp.Port, "_fromListeningDescriptor")
    assert not available()


def run(*command: str) -> subprocess.CompletedProcess[str]:
    """
    Run a short Python program, bounded in time.
    """
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("name", "expected"), [(None, "SockplayReactor"), ("epoll", "EPollReactor")]
)
def test_chooseReactor(name: str | None, expected: str) -> None:
    """
    With no reactor installed, C{chooseReactor} installs sockplay's by
    default, or the one named.
    """
    result = run(
        "-c",
        "from sockplay.server.reactor import chooseReactor; "
        f"print(type(chooseReactor({name!r})).__name__)",
    )
    assert result.stdout.strip() == expected, result.stderr


def test_chooseReactorKeepsAnInstalledOne() -> None:
    """
    A reactor already installed is kept, whatever the default.
    """
    result = run(
        "-c",
        "from twisted.internet import pollreactor; pollreactor.install(); "
        "from sockplay.server.reactor import chooseReactor; "
        "print(type(chooseReactor(None)).__name__)",
    )
    assert result.stdout.strip() == "PollReactor", result.stderr


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([], [], "sockplay.server.reactor.SockplayReactor"),
        (["--reactor", "epoll"], [], "twisted.internet.epollreactor.EPollReactor"),
        ([], ["--reactor", "poll"], "twisted.internet.pollreactor.PollReactor"),
    ],
)
def test_twistdReactor(before: list[str], after: list[str], expected: str) -> None:
    """
    C{twistd -n sockplay} runs on sockplay's reactor; twistd's own
    C{--reactor}, or sockplay's, chooses another.
    """
    command = [*TWISTD]
    at = command.index("sockplay")
    command[at:at] = before
    result = subprocess.run(
        [*command, *after, "--port", "0", "--help"], capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    started = subprocess.Popen(
        [*command, *after, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert started.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        for line in started.stdout:
            lines.append(line)
            if "reactor class:" in line or time.monotonic() > deadline:
                break
        assert f"reactor class: {expected}." in "".join(lines)
    finally:
        started.terminate()
        started.wait(timeout=30)


def test_twistdReactorChosenTwice() -> None:
    """
    Naming the reactor both to twistd and to sockplay is a usage error.
    """
    command = [*TWISTD]
    at = command.index("sockplay")
    command[at:at] = ["--reactor", "epoll"]
    result = subprocess.run(
        [*command, "--reactor", "poll", "--port", "0"], capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "Error: the reactor is chosen twice: give either twistd's --reactor (before "
        "'sockplay') or sockplay's --reactor, not both"
    )


def test_unknownReactorIsAUsageError() -> None:
    """
    A reactor Twisted does not know is named in one line, exit status 2.
    """
    result = run("-m", "sockplay.server", "--reactor", "nosuch")
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: --reactor must be one of ")
    assert "epoll" in first and "sockplay" in first and first.endswith("not 'nosuch'")


def test_nameOf() -> None:
    """
    A reactor's kind is named as C{--reactor} names it, so that workers run
    on the reactor their parent runs on; a reactor no plugin installs has
    no name.
    """
    from twisted.internet.epollreactor import EPollReactor

    from sockplay.server.reactor import nameOf

    assert nameOf(SockplayReactor.__new__(SockplayReactor)) == "sockplay"
    assert nameOf(EPollReactor.__new__(EPollReactor)) == "epoll"
    assert nameOf(MemoryReactor()) is None
