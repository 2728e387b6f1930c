"""
Tests for L{sockplay.client.reply}: where a reply ends, with no I/O; and
that both client protocols settle a reply by that one rule.
"""

from __future__ import annotations

import struct

import pytest
from support.client import HELLO, REPLY, fired
from support.fakes import HalfCloseableTransport
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from sockplay.client.failures import NoReply
from sockplay.client.protocol import KeepOpenClientProtocol, ReplyClientProtocol
from sockplay.client.reply import ReplyReader
from sockplay.framing import MessageTooLong, TruncatedMessage, makeFramer

DONE = Failure(error.ConnectionDone())
LOST = Failure(error.ConnectionLost())


def reader(framing: str, maxReply: int = 1024) -> ReplyReader:
    return ReplyReader(makeFramer(framing, maxReply), HELLO, maxReply)


def test_lineReplyEndsAtLF() -> None:
    """
    In line framing the reply is complete at its LF, without its LF.
    """
    r = reader("line")
    assert r.feed(REPLY[:5]) is None
    assert r.feed(REPLY[5:] + b"\n") == REPLY


def test_rawEchoIsComplete() -> None:
    """
    In raw framing a reply that ends with the message sent is complete at
    once.
    """
    r = reader("raw")
    assert r.feed(b"Message received: ") is None
    assert r.feed(HELLO) == REPLY


def test_eofReplyWaitsForTheEnd() -> None:
    """
    In eof framing even an echo is complete only when the server is done.
    """
    r = reader("eof")
    assert r.feed(REPLY) is None
    assert r.end() == REPLY


def test_feedOverTheLimit() -> None:
    """
    A reply that grows past the limit is a L{MessageTooLong} failure, not
    an exception.
    """
    outcome = reader("raw", maxReply=10).feed(b"x" * 11)
    assert isinstance(outcome, Failure) and outcome.check(MessageTooLong)


@pytest.mark.parametrize("reason", [None, DONE, LOST], ids=["half-close", "done", "lost"])
def test_endWithHeldBytesIsTheReply(reason: Failure | None) -> None:
    """
    What the server sent before it finished is the reply, however the
    connection ended: a line without its LF, or raw bytes that do not echo
    the message.
    """
    line = reader("line")
    line.feed(REPLY)
    assert line.end(reason) == REPLY
    raw = reader("raw")
    raw.feed(b"Error: nope\n")
    assert raw.end(reason) == b"Error: nope\n"


def test_endInsideAFrame() -> None:
    """
    An end in the middle of an int32 frame is a L{TruncatedMessage}
    failure, even on a clean close.
    """
    r = reader("int32")
    r.feed(struct.pack(">I", len(REPLY)) + REPLY[:-1])
    outcome = r.end(DONE)
    assert isinstance(outcome, Failure) and outcome.check(TruncatedMessage)


@pytest.mark.parametrize("reason", [None, DONE], ids=["half-close", "done"])
def test_cleanEndWithoutReply(reason: Failure | None) -> None:
    """
    A server that finished cleanly without sending anything gave
    L{NoReply}.
    """
    outcome = reader("line").end(reason)
    assert isinstance(outcome, Failure) and outcome.check(NoReply)


def test_lostWithoutReply() -> None:
    """
    A connection lost uncleanly before any reply is that loss, as it came.
    """
    assert reader("line").end(LOST) is LOST


def _oneShot(framing: str, received: bytes, reason: Failure) -> bytes | Failure:
    protocol = ReplyClientProtocol(HELLO, framing)
    protocol.makeConnection(HalfCloseableTransport())
    protocol.dataReceived(received)
    protocol.connectionLost(reason)
    return fired(protocol.reply)


def _keepOpen(framing: str, received: bytes, reason: Failure) -> bytes | Failure:
    protocol = KeepOpenClientProtocol(framing)
    protocol.makeConnection(HalfCloseableTransport())
    reply: Deferred[bytes] = protocol.ask(HELLO)
    protocol.dataReceived(received)
    protocol.connectionLost(reason)
    return fired(reply)


@pytest.mark.parametrize(
    "framing, received, reason",
    [
        ("line", b"", DONE),
        ("line", b"", LOST),
        ("line", b"Message received", DONE),
        ("int32", b"\x00\x00\x00\x09abc", DONE),
        ("raw", b"Error: nope", LOST),
    ],
)
def test_bothProtocolsEndAlike(framing: str, received: bytes, reason: Failure) -> None:
    """
    The one-shot and the keep-open protocols settle a reply that the close
    ends by the same rule: the same reply, or the same kind of failure.
    """
    oneShot = _oneShot(framing, received, reason)
    keepOpen = _keepOpen(framing, received, reason)
    if isinstance(oneShot, Failure):
        assert isinstance(keepOpen, Failure) and keepOpen.type is oneShot.type
    else:
        assert keepOpen == oneShot


@pytest.mark.parametrize("framing", ["line", "int32"])
def test_bannerToldFromReply(framing: str) -> None:
    """
    In line and int32 framing, a message that is neither an echo nor an
    error, followed by another, was the server's banner: the reply is the
    next one, and the banner is kept apart, not shown as the reply.
    """
    framer = makeFramer(framing)
    r = ReplyReader(framer, HELLO)
    assert r.feed(framer.encode(b"Welcome", b"\n")) is None
    assert r.feed(framer.encode(REPLY, b"\n")) == REPLY
    assert r.banners == [b"Welcome"]


def test_heldMessageIsTheReplyAtTheEnd() -> None:
    """
    A message that is not an echo, with nothing after it before the server
    closes, is the reply (not a banner).
    """
    r = reader("line")
    assert r.feed(b"olleH\n") is None
    assert r.held == b"olleH"
    assert r.end(DONE) == b"olleH"
    assert r.banners == []


def test_errorReplyIsNotHeld() -> None:
    """
    An error reply (a busy server's, which sends no banner) is the reply at
    once.
    """
    assert reader("line").feed(b"Error: server busy\n") == b"Error: server busy"


def test_oneShotProtocolBanners() -> None:
    """
    The one-shot protocol exposes the banner it read before the reply.
    """
    protocol = ReplyClientProtocol(HELLO, "line")
    protocol.makeConnection(HalfCloseableTransport())
    protocol.dataReceived(b"Welcome\n" + REPLY + b"\n")
    assert fired(protocol.reply) == REPLY
    assert protocol.banners == (b"Welcome",)
