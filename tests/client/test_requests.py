"""
Tests for L{sockplay.client.requests}: one request on a memory reactor
whose clock the tests move.
"""

from __future__ import annotations

from support.client import fired
from support.fakes import HalfCloseableTransport
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from sockplay.client.failures import describeFailure
from sockplay.client.options import Options
from sockplay.client.requests import request


def test_requestTimesOut() -> None:
    """
    The timeout bounds connect plus reply: a server that accepts and stays
    silent makes the request fail after C{--timeout} seconds, and the
    connection is aborted.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", "tcp:host=127.0.0.1:port=12345", "--timeout", "3"])
    d = Deferred.fromCoroutine(request(reactor, config))
    host, port, factory, _, _ = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 12345)
    protocol = factory.buildProtocol(None)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    reactor.advance(2.9)
    assert not d.called
    reactor.advance(0.1)
    failure = fired(d)
    assert isinstance(failure, Failure) and failure.check(TimeoutError)
    assert transport.aborted
    assert describeFailure(failure, config) == (
        "no reply from tcp:host=127.0.0.1:port=12345 within 3 s: is the server's framing "
        "line, not raw? try --framing line (it must match the server's)"
    )


def test_requestConnectTimesOut() -> None:
    """
    The timeout covers the connect too.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--timeout", "2"])
    d = Deferred.fromCoroutine(request(reactor, config))
    reactor.advance(2)
    failure = fired(d)
    assert isinstance(failure, Failure)
    assert describeFailure(failure, config, hint=False) == (
        "no reply from 127.0.0.1:12345 within 2 s"
    )

