"""
Tests for L{sockplay.server.sendqueue}: how much of a connection's output
its client has not yet received, read from Twisted's write buffer and the
kernel's send queue of a real loopback socket (no reactor), and C{None}
wherever it cannot be told.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from support.servers import LOOPBACK, SOCKET_TIMEOUT
from twisted.internet import abstract
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from sockplay.server import sendqueue
from sockplay.server.sendqueue import socketSendQueue, unsentBytes

pytestmark = pytest.mark.skipif(
    sendqueue._SIOCOUTQ is None, reason="no SIOCOUTQ on this system"
)

# Sent to a peer that does not read, with small socket buffers: more than
# both buffers hold, so that some of it waits in the sender's send queue.
BLOCK = 256 * 1024


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """
    A connected loopback TCP pair, the sender non-blocking, the receiver
    with a small receive buffer.
    """
    with socket.create_server((LOOPBACK, 0)) as listener:
        receiver = socket.socket()
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.settimeout(SOCKET_TIMEOUT)
        receiver.connect(listener.getsockname())
        sender, _ = listener.accept()
    sender.setblocking(False)
    with sender, receiver:
        yield sender, receiver


def fill(sock: socket.socket) -> int:
    """
    Send to C{sock} until it takes no more.

    @return: how many bytes it took.
    """
    sent = 0
    try:
        while True:
            sent += sock.send(b"x" * BLOCK)
    except BlockingIOError:
        return sent


def waitFor(condition: object, what: str) -> None:
    """
    Poll C{condition} (a callable) until true, failing after a bound.
    """
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in time")


class SocketDescriptor(abstract.FileDescriptor):
    """
    A Twisted file descriptor over a real socket, as Twisted's TCP
    connection is, with nothing to do on the wire: writes stay buffered.
    """

    connected = True

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(reactor=MemoryReactor())
        self.socket = sock

    def getHandle(self) -> socket.socket:
        return self.socket


def wrap(transport: object) -> ProtocolWrapper:
    """
    A protocol wrapper (as TLS and the PROXY protocol are) connected to
    C{transport}.
    """
    wrapper = ProtocolWrapper(WrappingFactory(Factory.forProtocol(Protocol)), Protocol())
    wrapper.makeConnection(transport)
    return wrapper


def test_sendQueueCountsWhatThePeerHasNotReceived(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """
    The send queue holds what a peer that does not read has not received;
    it shrinks as the peer reads, down to nothing once it has read it all.
    """
    sender, receiver = pair
    assert socketSendQueue(sender) == 0
    sent = fill(sender)
    queued = socketSendQueue(sender)
    assert queued is not None and 0 < queued <= sent
    received = 0
    while received < sent:
        received += len(receiver.recv(65536))
        current = socketSendQueue(sender)
        assert current is not None and current <= queued
    waitFor(lambda: socketSendQueue(sender) == 0, "the queue emptying")


def test_sendQueueOfAClosedSocketIsUnknown(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, _ = pair
    sender.close()
    assert socketSendQueue(sender) is None


def test_sendQueueUnknownWithoutTheIoctl(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    On a system without C{SIOCOUTQ}, the count is unknown.
    """
    monkeypatch.setattr(sendqueue, "_SIOCOUTQ", None)
    assert socketSendQueue(pair[0]) is None


def test_unsentBytesAddsTwistedsBuffer(pair: tuple[socket.socket, socket.socket]) -> None:
    """
    A transport's unsent bytes are its write buffer plus its socket's send
    queue.
    """
    sender, _ = pair
    transport = SocketDescriptor(sender)
    assert unsentBytes(transport) == 0
    transport.write(b"abc")
    assert unsentBytes(transport) == 3
    sender.send(b"defg")
    waitFor(lambda: unsentBytes(transport) == 3, "the peer's kernel taking the bytes")


def test_unsentBytesLooksThroughWrappers(pair: tuple[socket.socket, socket.socket]) -> None:
    """
    A wrapper (TLS, the PROXY protocol) is looked through to the socket
    transport beneath it.
    """
    transport = SocketDescriptor(pair[0])
    transport.write(b"abc")
    inner = wrap(transport)
    assert unsentBytes(wrap(inner)) == 3


def test_unsentBytesUnknownWithoutASocket() -> None:
    """
    An in-memory transport, or a wrapper of one, has no send queue to read.
    """
    assert unsentBytes(StringTransport()) is None
    assert unsentBytes(wrap(StringTransport())) is None
    assert unsentBytes(None) is None
    assert unsentBytes(abstract.FileDescriptor(reactor=MemoryReactor())) is None


def test_unsentBytesUnknownWithoutTwistedsBuffer(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Where Twisted's write buffer cannot be read (a Twisted that moved it),
    the count is unknown rather than short: the linger then stays fixed.
    """
    transport = SocketDescriptor(pair[0])
    monkeypatch.delattr(transport, "_tempDataLen")
    assert unsentBytes(transport) is None
