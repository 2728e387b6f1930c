"""
Tests for L{sockplay.bench.check}: what the load generator sends, and the
byte-for-byte checking of what comes back.
"""

from __future__ import annotations

import pytest
from support.bench import PREFIX

from sockplay.bench.check import Exchange, ReplyChecker, ReplyError, makeExchange
from sockplay.bench.loop import READ_SIZE

# What goes on the wire

def test_lineExchange() -> None:
    """
    In line framing a request is the message and LF, and its reply the
    prefix, the message and LF.
    """
    assert makeExchange("line", b"hi", PREFIX) == Exchange(
        "line", b"hi\n", b"Message received: hi\n", False, b"hi"
    )


def test_int32Exchange() -> None:
    """
    In int32 framing the request and the reply each carry their own
    big-endian length.
    """
    exchange = makeExchange("int32", b"hi", PREFIX)
    assert (exchange.request, exchange.reply) == (
        b"\x00\x00\x00\x02hi",
        b"\x00\x00\x00\x14Message received: hi",
    )


@pytest.mark.parametrize("framing, halfClose", [("raw", False), ("eof", True)])
def test_unframedExchange(framing: str, halfClose: bool) -> None:
    """
    In raw and eof framing nothing frames the message; in eof the request
    ends with a half-close.
    """
    assert makeExchange(framing, b"hi", PREFIX) == Exchange(
        framing, b"hi", b"Message received: hi", halfClose, b"hi"
    )


# Checking replies


def test_repliesSplitAcrossReads() -> None:
    """
    Replies count as they complete, however the reads split them.
    """
    reply = b"Message received: hi\n"
    checker = ReplyChecker(reply, READ_SIZE)
    checker.expect(3)
    stream = reply * 3
    counts = [checker.feed(stream[start:stop]) for start, stop in
              [(0, 5), (5, 21), (21, 50), (50, 63)]]
    assert (counts, checker.owed, checker.offset) == ([0, 1, 1, 1], 0, 0)


def test_mismatchIsAnError() -> None:
    """
    A reply byte that differs from the expected one is a C{mismatch}, and
    the error shows the expected and the received reply.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"Message received: ho\n")
    assert (caught.value.kind, caught.value.done) == ("mismatch", 0)
    assert caught.value.detail == (
        "byte 19 of a reply: expected b'Message received: hi\\n', "
        "received b'Message received: ho\\n'"
    )


def test_mismatchAfterGoodReplies() -> None:
    """
    When a later reply in the same read differs, the replies before it
    still count as right, and the error shows the one that differs from its
    first byte.
    """
    reply = b"Message received: hi\n"
    checker = ReplyChecker(reply, READ_SIZE)
    checker.expect(3)
    with pytest.raises(ReplyError) as caught:
        checker.feed(reply + b"Other: hi\n")
    assert (caught.value.kind, caught.value.done, checker.owed) == ("mismatch", 1, 2)
    assert caught.value.detail is not None
    assert "received b'Other: hi\\n" in caught.value.detail


def test_mismatchInsideAReplyBegunEarlier() -> None:
    """
    A reply that began in an earlier read and goes wrong in this one is
    shown whole.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    checker.feed(b"Message ")
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"accepted: hi\n")
    assert caught.value.detail is not None
    assert "byte 8 of a reply" in caught.value.detail
    assert "received b'Message accepted: hi\\n'" in caught.value.detail


def test_mismatchKeepsTheWrongReplyWhole() -> None:
    """
    A wrong reply longer than the expected one (a server's error, say) is
    a C{mismatch}, not C{extra}, and the error keeps it whole, as received,
    for the diagnosis; the detail shows as much of it as a reply's length.
    """
    checker = ReplyChecker(b"Message received: hi", READ_SIZE)
    checker.expect(1)
    wrong = b"\x00\x00\x00+Error: message too long (limit 65536 bytes)"
    with pytest.raises(ReplyError) as caught:
        checker.feed(wrong)
    assert (caught.value.kind, caught.value.received) == ("mismatch", wrong)
    assert caught.value.detail is not None
    assert caught.value.detail.endswith("received b'\\x00\\x00\\x00+Error: message t'")


def test_mismatchKeepsARepliesStartFromAnEarlierRead() -> None:
    """
    The wrong reply kept for the diagnosis starts at its first byte, also
    when that came in an earlier read.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    checker.feed(b"Message ")
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"accepted: hi\n")
    assert caught.value.received == b"Message accepted: hi\n"


def test_extraBytesAreAnError() -> None:
    """
    Bytes past the replies owed are C{extra}; the replies before them
    count.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"Message received: hi\n!")
    assert (caught.value.kind, caught.value.done) == ("extra", 1)


def test_closeWithRepliesOwedIsEarly() -> None:
    """
    The end of input while a reply is owed is an C{early-close}.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(2)
    checker.feed(b"Message received: hi\nMess")
    with pytest.raises(ReplyError) as caught:
        checker.endOfInput()
    assert caught.value.kind == "early-close"


def test_closeWithNothingOwedIsClean() -> None:
    """
    The end of input after every reply owed is no error.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    checker.feed(b"Message received: hi\n")
    checker.endOfInput()
