"""
Tests for L{sockplay.server.protocol}: the server side of the conversation, driven
through in-memory transports and a fake clock.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from support.fakes import LOOPBACK_PEER, FakeSendQueue, HalfCloseableTransport, serverSettings
from twisted.internet.interfaces import IHalfCloseableDescriptor, INegotiated
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from sockplay.server import EchoReplyFactory, EchoReplyProtocol
from sockplay.server.settings import (
    DEFAULT_LINGER,
    DEFAULT_PREFIX,
    ServerSettings,
)

P = DEFAULT_PREFIX

# How often the sweep looks, with the default settings: a tenth of the linger.
SWEEP = DEFAULT_LINGER / 10


def int32(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def connect(
    framing: str = "raw",
    keepOpen: bool = False,
    clock: Clock | None = None,
    **settings: Any,
) -> tuple[EchoReplyProtocol, HalfCloseableTransport, Clock]:
    """
    A server protocol built by its factory, connected to a half-closeable
    in-memory transport.

    @param settings: more L{ServerSettings}.
    """
    clock = clock or Clock()
    factory = EchoReplyFactory(serverSettings(framing, keepOpen, **settings), clock=clock)
    protocol = factory.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


# For each framing: a stream of two messages, and the replies to each.
CONVERSATIONS = {
    "line": (b"one\ntwo\r\n", [P + b"one\n", P + b"two\r\n"]),
    "int32": (int32(b"one") + int32(b"two"), [int32(P + b"one"), int32(P + b"two")]),
}


@pytest.mark.parametrize("framing", sorted(CONVERSATIONS))
def test_keepOpenAnswersEveryMessageInOrder(framing: str) -> None:
    """
    With keep-open, every message gets exactly one reply, in order, and the
    connection stays open.
    """
    stream, replies = CONVERSATIONS[framing]
    protocol, transport, _ = connect(framing, keepOpen=True)
    protocol.dataReceived(stream)
    assert transport.value() == b"".join(replies)
    assert not transport.writeClosed and not transport.disconnecting
    assert protocol.messages == 2


@pytest.mark.parametrize("framing", sorted(CONVERSATIONS))
def test_oneShotAnswersFirstMessageThenHalfCloses(framing: str) -> None:
    """
    By default only the first message is answered; the server then closes
    its write side, and what follows is discarded.
    """
    stream, replies = CONVERSATIONS[framing]
    protocol, transport, _ = connect(framing)
    protocol.dataReceived(stream)
    assert transport.value() == replies[0]
    assert transport.writeClosed
    assert not transport.disconnecting
    protocol.dataReceived(stream)
    assert transport.value() == replies[0]


@pytest.mark.parametrize("framing", sorted(CONVERSATIONS))
def test_keepOpenSplitAtEveryByteBoundary(framing: str) -> None:
    """
    However the input is split into reads, the replies are the same.
    """
    stream, replies = CONVERSATIONS[framing]
    for cut in range(len(stream) + 1):
        protocol, transport, _ = connect(framing, keepOpen=True)
        protocol.dataReceived(stream[:cut])
        protocol.dataReceived(stream[cut:])
        assert transport.value() == b"".join(replies), cut


@pytest.mark.parametrize("framing", sorted(CONVERSATIONS))
def test_oneShotSplitAtEveryByteBoundary(framing: str) -> None:
    """
    One-shot: however the first message is split, it gets its one reply.
    """
    stream, replies = CONVERSATIONS[framing]
    for cut in range(len(stream) + 1):
        protocol, transport, _ = connect(framing)
        protocol.dataReceived(stream[:cut])
        protocol.dataReceived(stream[cut:])
        assert transport.value() == replies[0], cut


def test_rawOneShotTutorial() -> None:
    """
    The tutorial: whatever one read delivers is the message; the reply is
    the prefix and the message; then the server is done.
    """
    protocol, transport, _ = connect()
    protocol.dataReceived(b"Hello Server !")
    assert transport.value() == b"Message received: Hello Server !"
    assert transport.writeClosed


def test_rawKeepOpenEachReadIsAMessage() -> None:
    """
    raw with keep-open answers every read.
    """
    protocol, transport, _ = connect(keepOpen=True)
    protocol.dataReceived(b"a")
    protocol.dataReceived(b"b\n")
    assert transport.value() == P + b"a" + P + b"b\n"


def test_clientCloseAfterReplyClosesConnection() -> None:
    """
    After the one-shot reply, the connection closes when the client closes
    its side.
    """
    protocol, transport, clock = connect()
    protocol.dataReceived(b"x")
    protocol.readConnectionLost()
    assert transport.disconnecting and not transport.aborted
    protocol.connectionLost()
    assert clock.getDelayedCalls() == []
    assert protocol.outcome == "ok"


def test_lingerBoundAbortsSilentClient() -> None:
    """
    A client that never closes after its reply is aborted after the linger
    bound, and not before.
    """
    protocol, transport, clock = connect()
    protocol.dataReceived(b"x")
    clock.advance(DEFAULT_LINGER - 0.1)
    assert not transport.aborted
    clock.advance(0.1)
    assert transport.aborted


def test_lingerTimerCancelledOnConnectionLost() -> None:
    """
    The linger timer never outlives its connection.
    """
    protocol, _, clock = connect(idleTimeout=0)
    protocol.dataReceived(b"x")
    assert len(clock.getDelayedCalls()) == 1
    protocol.connectionLost()
    assert clock.getDelayedCalls() == []


def test_transportWithoutHalfCloseClosesAfterReply() -> None:
    """
    On a transport that cannot half-close (TLS), the server closes once the
    reply is written.
    """
    clock = Clock()
    factory = EchoReplyFactory(clock=clock)
    protocol = factory.buildProtocol(LOOPBACK_PEER)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"x")
    assert transport.value() == P + b"x"
    assert transport.disconnecting
    protocol.connectionLost()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "framing, message, reply",
    [
        ("line", b"\n", P + b"\n"),
        ("line", b"\r\n", P + b"\r\n"),
        ("int32", int32(b""), int32(P)),
    ],
)
def test_emptyMessage(framing: str, message: bytes, reply: bytes) -> None:
    """
    An empty message is a message: it gets the bare prefix back.
    """
    protocol, transport, _ = connect(framing)
    protocol.dataReceived(message)
    assert transport.value() == reply


def test_eofEmptyMessage() -> None:
    """
    In eof framing, a client that half-closes without sending anything gets
    the bare prefix back.
    """
    protocol, transport, _ = connect("eof")
    protocol.readConnectionLost()
    assert transport.value() == P
    assert transport.disconnecting


def test_eofRepliesAtHalfClose() -> None:
    """
    eof framing collects every read and replies when the client half-closes,
    then closes.
    """
    protocol, transport, _ = connect("eof")
    protocol.dataReceived(b"part one,")
    protocol.dataReceived(b" part two\n")
    assert transport.value() == b""
    protocol.readConnectionLost()
    assert transport.value() == P + b"part one, part two\n"
    assert transport.disconnecting


@pytest.mark.parametrize("framing", ["raw", "line", "eof", "int32"])
def test_binaryRoundTrips(framing: str) -> None:
    """
    Every byte value comes back unchanged: the server never decodes.
    """
    payload = bytes(range(256))
    if framing == "line":
        payload = payload.replace(b"\n", b"")
    protocol, transport, _ = connect(framing)
    wire = {"line": payload + b"\n", "int32": int32(payload)}.get(framing, payload)
    protocol.dataReceived(wire)
    if framing == "eof":
        protocol.readConnectionLost()
    expected = {"line": P + payload + b"\n", "int32": int32(P + payload)}.get(
        framing, P + payload
    )
    assert transport.value() == expected


def test_customPrefix() -> None:
    """
    The reply prefix comes from the factory, as bytes, and may be empty.
    """
    protocol, transport, _ = connect(prefix="Reçu : ".encode())
    protocol.dataReceived(b"x")
    assert transport.value() == "Reçu : x".encode()
    protocol, transport, _ = connect(prefix=b"")
    protocol.dataReceived(b"x")
    assert transport.value() == b"x"


@pytest.mark.parametrize(
    "framing, message, error",
    [
        ("raw", b"x" * 11, b"Error: message too long (limit 10 bytes)\n"),
        ("line", b"x" * 11, b"Error: message too long (limit 10 bytes)\n"),
        ("int32", struct.pack(">I", 11), int32(b"Error: message too long (limit 10 bytes)")),
        ("eof", b"x" * 11, b"Error: message too long (limit 10 bytes)\n"),
    ],
)
def test_maxMessageError(framing: str, message: bytes, error: bytes) -> None:
    """
    A message that grows past the limit gets a framed error naming the
    limit, then the server is done with the connection.
    """
    protocol, transport, _ = connect(framing, maxMessage=10)
    protocol.dataReceived(message)
    assert transport.value() == error
    assert transport.writeClosed
    assert protocol.outcome == "too-long"


def test_maxMessageAfterGoodMessagesKeepOpen() -> None:
    """
    With keep-open, the messages before the over-long one in the same read
    are answered first, in order; nothing after it is.
    """
    protocol, transport, _ = connect("line", keepOpen=True, maxMessage=3)
    protocol.dataReceived(b"ab\nabcd\nzz\n")
    assert transport.value() == P + b"ab\n" + b"Error: message too long (limit 3 bytes)\n"
    protocol.dataReceived(b"more\n")
    assert transport.value().count(P) == 1


def test_maxMessageOneConnectionOnly() -> None:
    """
    One connection's error leaves the others of the same factory untouched.
    """
    clock = Clock()
    factory = EchoReplyFactory(ServerSettings("line", True, maxMessage=3), clock=clock)
    bad, good = factory.buildProtocol(None), factory.buildProtocol(None)
    badTransport, goodTransport = HalfCloseableTransport(), HalfCloseableTransport()
    bad.makeConnection(badTransport)
    good.makeConnection(goodTransport)
    bad.dataReceived(b"toolong\n")
    good.dataReceived(b"ok\n")
    assert goodTransport.value() == P + b"ok\n"
    assert not goodTransport.writeClosed


def test_lineUnterminatedLastLineAnsweredAtHalfClose() -> None:
    """
    A last line without LF is still answered when the client half-closes;
    its reply has no delimiter, since the request had none.
    """
    protocol, transport, _ = connect("line", keepOpen=True)
    protocol.dataReceived(b"a\nb")
    protocol.readConnectionLost()
    assert transport.value() == P + b"a\n" + P + b"b"
    assert transport.disconnecting


def test_int32TruncatedAtHalfClose() -> None:
    """
    Input that ends inside an int32 frame gets a framed error.
    """
    protocol, transport, _ = connect("int32", keepOpen=True)
    protocol.dataReceived(int32(b"hello")[:-2])
    protocol.readConnectionLost()
    assert transport.value().startswith(b"\x00\x00\x00")
    assert transport.value()[4:].startswith(b"Error: input ended inside a frame")
    assert protocol.outcome == "truncated"


def test_halfCloseWithoutMessage() -> None:
    """
    A one-shot client that half-closes without sending a byte gets no reply
    and the connection closes; it was a probe (a health check).
    """
    protocol, transport, _ = connect("line")
    protocol.readConnectionLost()
    assert transport.value() == b""
    assert transport.disconnecting
    assert protocol.outcome == "probe"


def test_keepOpenWithEOFRefused() -> None:
    """
    eof framing cannot keep the connection open: a message ends only when
    the client can send no more.
    """
    with pytest.raises(ValueError):
        ServerSettings("eof", keepOpen=True)


def test_unknownFramingRefused() -> None:
    """
    The factory refuses a framing that does not exist.
    """
    with pytest.raises(ValueError):
        ServerSettings("xml")


def test_lineLimitPlusCRThenHalfClose() -> None:
    """
    The bytes held for a possible CRLF are not answered when the client
    half-closes instead: they are over the limit.
    """
    protocol, transport, _ = connect("line", maxMessage=3)
    protocol.dataReceived(b"abc\r")
    protocol.readConnectionLost()
    assert transport.value() == b"Error: message too long (limit 3 bytes)\n"
    assert protocol.outcome == "too-long"


def test_tlsTransportIsNotHalfClosed() -> None:
    """
    A TLS transport looks half-closeable (it copies the TCP transport's
    interfaces) but half-closing under TLS breaks the session: the server
    closes it instead, after the reply.
    """
    protocol, transport, clock = connect()
    directlyProvides(transport, INegotiated, IHalfCloseableDescriptor)
    protocol.dataReceived(b"x")
    assert not transport.writeClosed
    assert transport.disconnecting
    protocol.connectionLost()
    assert clock.getDelayedCalls() == []


def test_lingerRestartsWhenHalfCloseIsSent() -> None:
    """
    The linger bound restarts once the half-close is actually sent (every
    reply byte flushed), so a slow reader of a large reply is not cut off
    while it reads.
    """
    protocol, transport, clock = connect()
    protocol.dataReceived(b"x")
    clock.advance(DEFAULT_LINGER - 1)
    protocol.writeConnectionLost()
    clock.advance(DEFAULT_LINGER - 1)
    assert not transport.aborted
    clock.advance(1)
    assert transport.aborted


def elapse(clock: Clock, seconds: float) -> None:
    """
    Let C{seconds} pass a sweep at a time, as on a real clock (one big step
    would run the sweeps it skips at its end).
    """
    clock.pump([SWEEP] * round(seconds / SWEEP))


def slowReader(
    unsent: int, **settings: Any
) -> tuple[EchoReplyProtocol, HalfCloseableTransport, Clock, FakeSendQueue]:
    """
    A one-shot line connection whose reply is answered and half-closed, with
    C{unsent} of its bytes not yet received by the client, as a fake send
    queue says.
    """
    protocol, transport, clock = connect("line", **settings)
    queue = FakeSendQueue()
    queue.unsent[transport] = unsent
    protocol.factory.unsentBytes = queue
    protocol.dataReceived(b"x\n")
    protocol.writeConnectionLost()
    assert transport.writeClosed
    return protocol, transport, clock, queue


def test_slowReaderKeptWhileItReads(logged: list[str]) -> None:
    """
    A client that reads a large reply slowly is kept for as long as the
    reply makes progress, well past the linger period, and the connection
    closes cleanly when the client does.
    """
    protocol, transport, clock, queue = slowReader(60000)
    for _ in range(int(4 * DEFAULT_LINGER)):
        elapse(clock, 1)
        queue.unsent[transport] -= 1000
        assert not transport.aborted
    protocol.readConnectionLost()
    assert transport.disconnecting and not transport.aborted
    protocol.connectionLost()
    assert protocol.outcome == "ok"
    assert clock.getDelayedCalls() == []


def test_stalledReaderCutOff(logged: list[str]) -> None:
    """
    A client that stops reading (the reply makes no progress) is aborted
    once the linger period passes without progress, not before, and its
    log says C{aborted}.
    """
    protocol, transport, clock, queue = slowReader(60000)
    for _ in range(3):
        elapse(clock, 1)
        queue.unsent[transport] -= 1000
    stalledAt = clock.seconds()
    elapse(clock, DEFAULT_LINGER - SWEEP)
    assert not transport.aborted
    elapse(clock, 2 * SWEEP)
    assert transport.aborted
    assert clock.seconds() - stalledAt <= DEFAULT_LINGER + SWEEP
    protocol.connectionLost()
    assert protocol.outcome == "aborted"
    assert any("Connection closed: " in line and ", aborted, " in line for line in logged)


def test_readerThatNeverReadsCutOff() -> None:
    """
    A client that reads nothing of a reply still on its way is aborted
    after the linger period, counted from the sweep's first look at it
    (within one sweep of the last reply).
    """
    _, transport, clock, _ = slowReader(60000)
    elapse(clock, DEFAULT_LINGER)
    assert not transport.aborted
    elapse(clock, 2 * SWEEP)
    assert transport.aborted


def test_readEverythingButNeverClosesCutOff() -> None:
    """
    A client that has received the whole reply but never closes is aborted
    after the linger period, counted from the last progress.
    """
    protocol, transport, clock, queue = slowReader(3000)
    for _ in range(3):
        elapse(clock, 1)
        queue.unsent[transport] -= 1000
    assert queue.unsent[transport] == 0
    elapse(clock, DEFAULT_LINGER - SWEEP)
    assert not transport.aborted
    elapse(clock, 2 * SWEEP)
    assert transport.aborted
    protocol.connectionLost()
    assert protocol.outcome == "aborted"


def test_deliveredReplyLingersAsBefore() -> None:
    """
    A reply the client already has (nothing unsent) leaves the client the
    linger period from the half-close to close, as without progress checks;
    and the sweep stops asking about it.
    """
    protocol, transport, clock, queue = slowReader(0)
    elapse(clock, DEFAULT_LINGER - SWEEP)
    assert not transport.aborted and not protocol.delivering
    looks = queue.looks
    elapse(clock, SWEEP)
    assert transport.aborted
    assert queue.looks == looks == 1


def test_lingerFixedWhereSendQueueUnknown() -> None:
    """
    Where the transport cannot tell how much the client has received (no
    socket beneath it), the linger is the fixed period from the half-close,
    and the sweep asks only once.
    """
    protocol, transport, clock = connect("line")
    queue = FakeSendQueue()
    protocol.factory.unsentBytes = queue
    protocol.dataReceived(b"x\n")
    elapse(clock, DEFAULT_LINGER - SWEEP)
    assert not transport.aborted and not protocol.delivering
    elapse(clock, SWEEP)
    assert transport.aborted
    assert queue.looks == 1


def test_unsentBytesReadsNoSocketAsUnknown() -> None:
    """
    By default, a connection asks the real send queue, which an in-memory
    transport does not have: the fixed linger applies.
    """
    protocol, transport, clock = connect("line")
    protocol.dataReceived(b"x\n")
    assert protocol.delivering
    elapse(clock, SWEEP)
    assert not protocol.delivering and not transport.aborted
