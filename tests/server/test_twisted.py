"""
Tests for L{sockplay.server._twisted}: every private Twisted name it reaches
for is still there (a test per name, failing with the name), and every
reach falls back to Twisted's public API where the name is missing, so that
a Twisted upgrade costs speed, never correctness.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.realreactor import globalReactor, resultOf, spinUntil
from twisted.internet import abstract, tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from sockplay.server import EchoReplyFactory, ServerSettings, _twisted, proxy
from sockplay.server import reactor as sockplayReactor
from sockplay.server._twisted import (
    PRIVATE_NAMES,
    forgetExitSignal,
    isPlainSocket,
    sendNow,
    shutDownWriteNow,
)

# Classes whose private names are instance attributes, set in __init__:
# how to make one to look at.
_INSTANCES: dict[type, Callable[[], object]] = {
    abstract.FileDescriptor: lambda: abstract.FileDescriptor(reactor=MemoryReactor()),
    EPollReactor: lambda: _closing(EPollReactor()),
}


def _closing(made: EPollReactor) -> EPollReactor:
    """
    A new reactor, looked at only: its poller and waker closed at once.
    """
    made._poller.close()
    made.waker.connectionLost(None)
    return made


def resolve(name: str) -> object:
    """
    Look C{name} (a dotted path to a module, class or attribute) up in the
    installed Twisted; an attribute that a class sets on its instances is
    looked up on a new instance.

    @raise AttributeError: if it is not there.
    """
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            thing: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        break
    else:
        raise AttributeError(name)
    for part in parts[split:]:
        if not hasattr(thing, part) and thing in _INSTANCES:
            thing = _INSTANCES[thing]()  # type: ignore[index]
        thing = getattr(thing, part)
    return thing


@pytest.mark.parametrize(
    ("module", "name"),
    [("_twisted.py", name) for name in PRIVATE_NAMES]
    + [("reactor.py", name) for name in sockplayReactor.PRIVATE_NAMES],
)
def test_privateNameStillThere(module: str, name: str) -> None:
    """
    Each private name that sockplay reaches for (in its two modules that
    reach under Twisted's API) exists in the installed Twisted; if an
    upgrade renames one, this fails naming it.
    """
    try:
        resolve(name)
    except AttributeError:
        pytest.fail(
            f"Twisted no longer has {name}: update sockplay/server/{module} "
            "(its public-API fallback keeps sockplay correct meanwhile)"
        )


def test_resolveFailsForMissingNames() -> None:
    """
    The check above can fail: a name that is not there is reported.
    """
    with pytest.raises(AttributeError):
        resolve("twisted.internet.abstract.FileDescriptor._noSuchBuffer")


def test_fastPathAvailableOnThisTwisted() -> None:
    """
    On the installed Twisted the fast path is on for TCP server connections.
    """
    assert _twisted._hasFastPath()
    assert tcp.Server in _twisted._PLAIN_SOCKETS


def test_fastPathOffWithoutItsNames(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A Twisted without the direct half-close turns the fast path off.
    """
    monkeypatch.delattr(tcp.Connection, "_closeWriteConnection")
    monkeypatch.delattr(abstract.FileDescriptor, "_closeWriteConnection")
    assert not _twisted._hasFastPath()


def test_fastPathOffWithoutWriteBuffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A Twisted that no longer keeps C{_tempDataBuffer} turns it off too.
    """
    original = abstract.FileDescriptor.__init__

    def withoutBuffer(self: abstract.FileDescriptor, reactor: object = None) -> None:
        original(self, reactor)  # type: ignore[arg-type]
        del self._tempDataBuffer

    monkeypatch.setattr(abstract.FileDescriptor, "__init__", withoutBuffer)
    assert not _twisted._hasFastPath()


class _MovedBuffers:
    """
    A transport of a Twisted whose write buffers have moved.
    """

    dataBuffer = b""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    @property
    def socket(self) -> Any:
        return self

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


def test_sendNowFallsBackWithoutBuffer() -> None:
    """
    Without C{_tempDataBuffer}, L{sendNow} sends nothing itself and hands
    everything back to the public C{write}.
    """
    transport = _MovedBuffers()
    assert sendNow(transport, b"reply") == b"reply"  # type: ignore[arg-type]
    assert transport.sent == []


def test_shutDownWriteNowFallsBack() -> None:
    """
    Without C{_closeWriteConnection}, L{shutDownWriteNow} says it did
    nothing, so that the caller uses the public C{loseWriteConnection}.
    """
    transport = _MovedBuffers()
    transport._tempDataBuffer = []  # type: ignore[attr-defined]
    assert shutDownWriteNow(transport) is False  # type: ignore[arg-type]


def test_forgetExitSignal() -> None:
    """
    The recorded exit signal is forgotten; a reactor without one is left
    alone.
    """
    reactor = MemoryReactor()
    reactor._exitSignal = 15  # type: ignore[attr-defined]
    forgetExitSignal(reactor)
    assert reactor._exitSignal is None  # type: ignore[attr-defined]
    plain = object()
    forgetExitSignal(plain)
    assert not hasattr(plain, "_exitSignal")


@pytest.fixture
def slowPath(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """
    Serve as if the installed Twisted lacked every name of the fast path.
    """
    monkeypatch.setattr(_twisted, "_PLAIN_SOCKETS", ())
    yield


@pytest.mark.parametrize("keepOpen", [False, True], ids=["one-shot", "keep-open"])
def test_publicPathServesCorrectly(slowPath: None, keepOpen: bool) -> None:
    """
    With the fast path off, a real loopback connection still gets every
    reply and the half-close after a one-shot reply: only speed is lost.
    """
    reactor = globalReactor()
    factory = EchoReplyFactory(ServerSettings("line", keepOpen, quiet=True), clock=reactor)
    port = resultOf(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory), "listen")
    assert port is not None
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as sock:
            sock.setblocking(False)
            sock.sendall(b"one\ntwo\n")
            received = bytearray()
            ended: list[bool] = []

            def replied() -> bool:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    return False
                if not chunk:
                    ended.append(True)
                    return True
                received.extend(chunk)
                return received.count(b"\n") == 2

            spinUntil(replied, "the replies")
            assert not any(isPlainSocket(c.transport) for c in factory.connections)
            if keepOpen:
                assert bytes(received) == b"Message received: one\nMessage received: two\n"
            else:
                assert (bytes(received), ended) == (b"Message received: one\n", [True])
    finally:
        resultOf(port.stopListening(), "stop listening")


class _RecordingEndpoint:
    """
    A server endpoint that records the factory it is asked to listen with.
    """

    def __init__(self) -> None:
        self.factories: list[object] = []

    def listen(self, factory: object) -> Deferred[object]:
        self.factories.append(factory)
        return succeed(None)


def test_proxyUsesOwnWrapper() -> None:
    """
    C{haproxy:} listeners use sockplay's wrapper, on Twisted's public
    L{ProtocolWrapper}: no private name of Twisted's PROXY support is used.
    """
    inner = _RecordingEndpoint()
    proxy.ProxiedEndpoint(inner).listen(Factory())  # type: ignore[arg-type]
    [wrapping] = inner.factories
    assert isinstance(wrapping, proxy.ProxyWrappingFactory)
