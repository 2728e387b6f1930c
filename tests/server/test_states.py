"""
Tests for a server connection's named states (L{ConnectionState}) and for
the fault strategy chosen when the protocol is built.
"""

from __future__ import annotations

from random import Random
from typing import Any

from support.fakes import LOOPBACK_PEER, HalfCloseableTransport, serverSettings
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from sockplay.framing import LineFramer, Message
from sockplay.server import ConnectionState, EchoReplyFactory, EchoReplyProtocol
from sockplay.server.faults import FaultyEchoReplyProtocol, FaultyFramer, InjectedFault
from sockplay.server.faultsettings import Faults

READING = ConnectionState.READING
REPLYING = ConnectionState.REPLYING
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED


def connect(
    framing: str = "line", keepOpen: bool = False, **settings: Any
) -> tuple[EchoReplyProtocol, HalfCloseableTransport, Clock, EchoReplyFactory]:
    """
    A server connection built by its factory on an in-memory transport.
    """
    clock = Clock()
    factory = EchoReplyFactory(
        serverSettings(framing, keepOpen, quiet=True, **settings), clock=clock
    )
    protocol = factory.buildProtocol(LOOPBACK_PEER)
    assert protocol.state is ConnectionState.ADMITTING
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock, factory


def test_oneShotLifecycle() -> None:
    """
    One-shot: READING until the message, then CLOSING once the reply is
    written and the write side shut, then CLOSED when the client closes.
    """
    protocol, transport, _, _ = connect()
    assert protocol.state is READING
    protocol.dataReceived(b"hel")
    assert protocol.state is READING
    protocol.dataReceived(b"lo\n")
    assert (protocol.state, transport.writeClosed) == (CLOSING, True)
    protocol.dataReceived(b"ignored\n")
    assert transport.value() == b"Message received: hello\n"
    protocol.readConnectionLost()
    assert transport.disconnecting
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert (protocol.state, protocol.outcome) == (CLOSED, "ok")


def test_keepOpenStaysReading() -> None:
    """
    Keep-open: every message is answered and the connection keeps READING;
    the client's end of input leads to a full close.
    """
    protocol, transport, _, _ = connect(keepOpen=True)
    protocol.dataReceived(b"a\nb\n")
    assert (protocol.state, protocol.messages) == (READING, 2)
    protocol.readConnectionLost()
    assert (protocol.state, transport.disconnecting, transport.writeClosed) == (
        CLOSING,
        True,
        False,
    )


def test_refusedState() -> None:
    """
    A connection over the limit is REFUSED: its error goes out and it closes.
    """
    _, _, _, factory = connect(maxConnections=1)
    second = factory.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    second.makeConnection(transport)
    assert (second.state, second.admitted, transport.disconnecting) == (
        ConnectionState.REFUSED,
        False,
        True,
    )
    second.dataReceived(b"ignored\n")
    assert transport.value() == b"Error: server busy\n"


def test_delayedReplyIsReplying() -> None:
    """
    While a one-shot reply waits for C{--delay}, the connection is REPLYING;
    it half-closes once the reply is out.
    """
    protocol, transport, clock, _ = connect(delay=1.0)
    protocol.dataReceived(b"hi\n")
    assert (protocol.state, transport.value(), transport.writeClosed) == (REPLYING, b"", False)
    clock.advance(1.0)
    assert (protocol.state, transport.value(), transport.writeClosed) == (
        CLOSING,
        b"Message received: hi\n",
        True,
    )


def test_factoryChoosesFaultStrategy() -> None:
    """
    The plain protocol serves unless a fault is asked for; then the
    fault-injecting subclass does.
    """
    assert type(connect()[0]) is EchoReplyProtocol
    for fault in ({"delay": 0.1}, {"dropRate": 0.5}, {"resetRate": 0.5}):
        assert type(connect(**fault)[0]) is FaultyEchoReplyProtocol


class Source:
    """
    Where a L{FaultyFramer} reads the faults in force: a factory's stand-in.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults


def test_faultyFramerReadsFaultsInForce() -> None:
    """
    Each message is drawn by the faults in force when it is read: a change
    applies to the next message, not to those before it.
    """
    source = Source(Faults())
    framer = FaultyFramer(LineFramer(), Random(0), source)
    assert framer.feedReplies(b"a\n", b"> ") == (b"> a\n", 1, None)
    source.faults = Faults(dropRate=1.0)
    out, count, failure = framer.feedReplies(b"b\n", b"> ")
    assert (out, count) == (b"", 0)
    assert isinstance(failure, InjectedFault)


def test_faultyFramerDrawsPerMessage() -> None:
    """
    The fault strategy's framer answers the messages before the first that
    draws a fault, and reports that fault in place of the rest.
    """
    random = Random(0)
    draws = [random.random() for _ in range(3)]
    dropAt = next(i for i, draw in enumerate(draws) if draw < 0.5)
    framer = FaultyFramer(LineFramer(), Random(0), Source(Faults(dropRate=0.5)))
    out, count, failure = framer.feedReplies(b"a\nb\nc\n", b"> ")
    assert count == dropAt
    assert out == b"".join(b"> " + m + b"\n" for m in [b"a", b"b", b"c"][:dropAt])
    assert isinstance(failure, InjectedFault)
    assert (failure.outcome, failure.reset) == ("dropped", False)


def test_faultyFramerWithoutFaultsIsTheFramer() -> None:
    """
    Drawing nothing (only a delay asked for), it frames as the wrapped
    framer does, the end of input included.
    """
    framer = FaultyFramer(LineFramer(), Random(0), Source(Faults()))
    assert framer.feedReplies(b"a\nb", b"") == (b"a\n", 1, None)
    assert framer.buffered == 1
    assert framer.finish() == Message(b"b", b"")


def test_faultyFramerFaultAtEndOfInput() -> None:
    """
    The last message, completed by the end of input, draws a fault too.
    """
    framer = FaultyFramer(LineFramer(), Random(0), Source(Faults(resetRate=1.0)))
    framer.feedReplies(b"tail", b"")
    try:
        framer.finish()
    except InjectedFault as fault:
        assert (fault.outcome, fault.reset) == ("reset-injected", True)
    else:
        raise AssertionError("no fault drawn")
