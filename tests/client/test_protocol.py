"""
Tests for L{sockplay.client.protocol}: the one-shot client protocol and the
keep-open one on in-memory transports, and the one-shot client with the
real server protocol through L{twisted.test.iosim}.
"""

from __future__ import annotations

import struct

import pytest
from support.client import HELLO, REPLY, fired
from support.fakes import (
    HalfCloseableTransport,
    halfCloseableClient,
    halfCloseableServer,
    pumpWithHalfClose,
)
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient

from sockplay.client.failures import NoReply
from sockplay.client.protocol import KeepOpenClientProtocol, ReplyClientProtocol
from sockplay.framing import MessageTooLong, TruncatedMessage
from sockplay.server import EchoReplyFactory, ServerSettings


def int32(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def connect(framing: str = "raw", message: bytes = HELLO) -> tuple[
    ReplyClientProtocol, HalfCloseableTransport
]:
    protocol = ReplyClientProtocol(message, framing)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport


@pytest.mark.parametrize(
    "framing, wire",
    [
        ("raw", HELLO),
        ("line", HELLO + b"\n"),
        ("eof", HELLO),
        ("int32", int32(HELLO)),
    ],
)
def test_sendsFramedMessage(framing: str, wire: bytes) -> None:
    """
    On connect, the client sends its message in the chosen framing.
    """
    _, transport = connect(framing)
    assert transport.value() == wire


def test_eofHalfClosesAfterSending() -> None:
    """
    In eof framing, the client half-closes after its message, which is how
    the server knows it has ended.
    """
    _, transport = connect("eof")
    assert transport.writeClosed


def test_otherFramingsDoNotHalfClose() -> None:
    """
    Only eof framing half-closes on its own.
    """
    _, transport = connect("line")
    assert not transport.writeClosed


def test_rawReplyEndsWhenServerCloses() -> None:
    """
    A raw reply is everything received until the server closes (here, a
    reply that does not echo the message), however many reads it takes;
    then the client closes too.
    """
    protocol, transport = connect("raw")
    protocol.dataReceived(b"Error: ")
    protocol.dataReceived(b"nope\n")
    assert not protocol.reply.called
    protocol.readConnectionLost()
    assert fired(protocol.reply) == b"Error: nope\n"
    assert transport.disconnecting


def test_rawEchoCompleteWithoutClose() -> None:
    """
    A raw reply that ends with the message sent is complete at once, so a
    keep-open server that never closes still answers; a reply split across
    reads is put back together first.
    """
    protocol, transport = connect("raw")
    protocol.dataReceived(REPLY[:-3])
    assert not protocol.reply.called
    protocol.dataReceived(REPLY[-3:])
    assert fired(protocol.reply) == REPLY
    assert transport.disconnecting


def test_rawReplyOnConnectionLost() -> None:
    """
    The tutorial's server closes outright after its reply: that ends the
    reply too.
    """
    protocol, _ = connect("raw")
    protocol.dataReceived(REPLY)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert fired(protocol.reply) == REPLY


def test_lineReplyEndsAtLF() -> None:
    """
    A line reply ends at the first LF, without waiting for the close; the
    delimiter is not part of the reply.
    """
    protocol, transport = connect("line")
    protocol.dataReceived(REPLY + b"\r")
    assert not protocol.reply.called
    protocol.dataReceived(b"\nextra\n")
    assert fired(protocol.reply) == REPLY
    assert transport.disconnecting


def test_lineUnterminatedReplyKept() -> None:
    """
    A server that closes without ending its line still gave a reply.
    """
    protocol, _ = connect("line")
    protocol.dataReceived(REPLY)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert fired(protocol.reply) == REPLY


def test_int32Reply() -> None:
    """
    An int32 reply is one length-prefixed frame, split however it arrives.
    """
    protocol, _ = connect("int32")
    wire = int32(REPLY)
    protocol.dataReceived(wire[:3])
    protocol.dataReceived(wire[3:])
    assert fired(protocol.reply) == REPLY


def test_int32TruncatedReply() -> None:
    """
    A close in the middle of an int32 frame is a failure, not a short reply.
    """
    protocol, _ = connect("int32")
    protocol.dataReceived(int32(REPLY)[:-1])
    protocol.connectionLost(Failure(error.ConnectionDone()))
    reply = fired(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(TruncatedMessage)


@pytest.mark.parametrize("framing", ["raw", "line", "eof", "int32"])
def test_closedWithoutReply(framing: str) -> None:
    """
    A server that closes without sending anything gives L{NoReply}.
    """
    protocol, _ = connect(framing)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    reply = fired(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(NoReply)


def test_connectionLostIsReported() -> None:
    """
    A reset before any reply is reported as such, not as a clean close.
    """
    protocol, _ = connect("line")
    protocol.connectionLost(Failure(error.ConnectionLost()))
    reply = fired(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(error.ConnectionLost)


def test_replyTooLong() -> None:
    """
    The client does not hold an unbounded reply in memory.
    """
    protocol = ReplyClientProtocol(HELLO, "raw", maxReply=10)
    protocol.makeConnection(HalfCloseableTransport())
    protocol.dataReceived(b"x" * 11)
    reply = fired(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(MessageTooLong)


def test_cancelAborts() -> None:
    """
    Cancelling the reply (the timeout does) aborts the connection.
    """
    protocol, transport = connect("line")
    protocol.reply.cancel()
    assert transport.aborted
    fired(protocol.reply)  # consume the CancelledError
    protocol.connectionLost(Failure(error.ConnectionAborted()))


@pytest.mark.parametrize("framing", ["raw", "line", "eof", "int32"])
@pytest.mark.parametrize("keepOpen", [False, True])
def test_clientAndServerTogether(framing: str, keepOpen: bool) -> None:
    """
    The client and the server protocols agree on every framing and
    lifecycle, and both connections end closed.
    """
    if keepOpen and framing == "eof":
        return
    clock = Clock()
    factory = EchoReplyFactory(ServerSettings(framing, keepOpen), clock=clock)
    message = b"\x00\xffHello Server !"
    client, server, pump = connectedServerAndClient(
        lambda: factory.buildProtocol(None),
        lambda: ReplyClientProtocol(message, framing),
        clientTransportFactory=halfCloseableClient,
        serverTransportFactory=halfCloseableServer,
        greet=False,
    )
    pumpWithHalfClose(pump)
    assert fired(client.reply) == b"Message received: " + message
    assert pump.clientIO.disconnecting
    assert server.messages == 1



# The keep-open protocol.


def connectKeepOpen(framing: str) -> tuple[KeepOpenClientProtocol, HalfCloseableTransport]:
    protocol = KeepOpenClientProtocol(framing)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_keepOpenProtocolRawEcho() -> None:
    """
    In raw framing a keep-open server never closes, so a reply is complete
    when it ends with the message sent; the next exchange starts afresh.
    """
    protocol, transport = connectKeepOpen("raw")
    first = protocol.ask(b"hi")
    assert transport.value() == b"hi"
    protocol.dataReceived(b"Message received: h")
    assert not first.called
    protocol.dataReceived(b"i")
    assert fired(first) == b"Message received: hi"
    second = protocol.ask(b"yo")
    protocol.dataReceived(b"Message received: yo")
    assert fired(second) == b"Message received: yo"
    assert not transport.disconnecting


def test_keepOpenProtocolInt32() -> None:
    """
    In int32 framing each reply is one frame, however it is split.
    """
    protocol, transport = connectKeepOpen("int32")
    d = protocol.ask(HELLO)
    assert transport.value() == struct.pack(">I", len(HELLO)) + HELLO
    wire = struct.pack(">I", len(REPLY)) + REPLY
    protocol.dataReceived(wire[:2])
    protocol.dataReceived(wire[2:])
    assert fired(d) == REPLY


def test_keepOpenProtocolClosedWithoutReply() -> None:
    """
    A connection closed while a reply is awaited fails that exchange with
    L{NoReply}; asking on a closed connection fails at once.
    """
    protocol, _ = connectKeepOpen("line")
    d = protocol.ask(HELLO)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    failure = fired(d)
    assert isinstance(failure, Failure) and failure.check(NoReply)
    assert not protocol.isOpen
    failure = fired(protocol.ask(HELLO))
    assert isinstance(failure, Failure) and failure.check(NoReply)


def test_keepOpenProtocolReplyTooLong() -> None:
    """
    An over-long reply fails its exchange and aborts the connection: what
    follows could not be told apart from the next reply.
    """
    protocol = KeepOpenClientProtocol("line", maxReply=10)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    d = protocol.ask(HELLO)
    protocol.dataReceived(b"x" * 11)
    failure = fired(d)
    assert isinstance(failure, Failure) and failure.check(MessageTooLong)
    assert transport.aborted


def test_keepOpenProtocolRejectsEOF() -> None:
    """
    eof framing cannot keep a connection open.
    """
    with pytest.raises(ValueError):
        KeepOpenClientProtocol("eof")

