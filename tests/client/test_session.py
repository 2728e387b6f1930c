"""
Tests for L{sockplay.client.session}: the keep-open session on a memory
reactor whose clock the tests move, with the real server protocol on the
other end of an L{twisted.test.iosim} pump.
"""

from __future__ import annotations

from support.client import HELLO, REPLY, fired
from support.fakes import HalfCloseableTransport, acceptLatest, refuseLatest
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from sockplay.client.session import KeepOpenSession
from sockplay.server import EchoReplyFactory, ServerSettings


class Session:
    """
    A keep-open session in line framing, on a memory reactor that is also
    its clock.
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 12345)
        self.session = KeepOpenSession(endpoint, "line", self.reactor)

    @property
    def attempts(self) -> int:
        """
        How many connections the session has asked for.
        """
        return len(self.reactor.tcpClients)

    def ask(self) -> Deferred[tuple[bytes, float]]:
        return Deferred.fromCoroutine(self.session.ask(HELLO))

    def server(self) -> Protocol:
        """
        The real keep-open server's protocol, on the test's clock.
        """
        factory = EchoReplyFactory(ServerSettings("line", keepOpen=True), clock=self.reactor)
        return factory.buildProtocol(None)


def test_connectsOnFirstAskOnly() -> None:
    """
    Nothing connects until the first message; every message then goes over
    that one connection, its round-trip time running from sending it.
    """
    s = Session()
    assert s.attempts == 0
    first = s.ask()
    assert s.attempts == 1
    pump = acceptLatest(s.reactor, s.server())
    s.reactor.advance(0.5)
    pump.flush()
    assert fired(first) == (REPLY, 0.5)
    second = s.ask()
    pump.flush()
    assert fired(second) == (REPLY, 0.0)
    assert s.attempts == 1


def test_serverCloseReconnectsOnNextAsk() -> None:
    """
    A connection that the server closed is opened again by the next
    message, and not before: an idle timeout between messages does not
    turn into connections that carry nothing.
    """
    s = Session()
    first = s.ask()
    server = s.server()
    pump = acceptLatest(s.reactor, server)
    pump.flush()
    fired(first)
    assert server.transport is not None
    server.transport.loseConnection()
    pump.flush()
    s.reactor.advance(60)
    assert s.attempts == 1
    second = s.ask()
    assert s.attempts == 2
    acceptLatest(s.reactor, s.server()).flush()
    assert fired(second) == (REPLY, 0.0)


def test_dropAbortsAndNextAskReconnects() -> None:
    """
    After a failure the connection is in an unknown state: L{drop} aborts
    it, and the next message opens a new one.
    """
    s = Session()
    s.ask()
    _, _, factory, _, _ = s.reactor.tcpClients[-1]
    transport = HalfCloseableTransport()
    factory.buildProtocol(None).makeConnection(transport)
    assert transport.value() == HELLO + b"\n"
    s.session.drop()
    assert transport.aborted
    s.ask()
    assert s.attempts == 2


def test_refusedAskFails() -> None:
    """
    A refused connection fails the message with the reason, and the next
    message tries to connect again.
    """
    s = Session()
    d = s.ask()
    refuseLatest(s.reactor)
    failure = fired(d)
    assert isinstance(failure, Failure) and failure.check(error.ConnectionRefusedError)
    s.ask()
    assert s.attempts == 2


def test_closeWaitsForTheClose() -> None:
    """
    L{close} closes the connection and fires once it is closed; with no
    connection, at once.
    """
    assert fired(Session().session.close()) is None
    s = Session()
    s.ask()
    pump = acceptLatest(s.reactor, s.server())
    pump.flush()
    closed = s.session.close()
    assert pump.clientIO.disconnecting
    assert not closed.called
    pump.flush()
    assert fired(closed) is None
