"""
Tests for L{sockplay.client.verdict}: telling an echo from an error reply
or another reply, with the exit status of each, and the hint for a cut
echo.
"""

from __future__ import annotations

import pytest
from support.client import HELLO, REPLY

from sockplay.client.verdict import ReplyKind, classify, echoedPrefix, problem

TARGET = "127.0.0.1:12345"


@pytest.mark.parametrize(
    "reply, kind",
    [
        (REPLY, ReplyKind.ECHO),
        (b"Hi from a server with another --prefix: " + HELLO, ReplyKind.ECHO),
        (b"Error: server busy\n", ReplyKind.ERROR),
        (b"Welcome", ReplyKind.OTHER),
        (b"! revreS olleH", ReplyKind.OTHER),
    ],
)
def test_classify(reply: bytes, kind: ReplyKind) -> None:
    """
    A reply that ends with the message is an echo, whatever the server's
    prefix; one that starts with C{Error: } is an error; the rest is not an
    echo.
    """
    assert classify(reply, HELLO) is kind


def test_echoIsNoProblem() -> None:
    """
    An echo has no problem: exit status 0.
    """
    assert problem(REPLY, HELLO, "raw", TARGET) is None


def test_errorReplyExitsThree() -> None:
    """
    An error reply (such as a full server's) is exit status 3, with the
    server's text, so that a health check that gets it fails.
    """
    assert problem(b"Error: server busy\n", HELLO, "raw", TARGET) == (
        3, f"{TARGET} answered with an error instead of an echo: server busy"
    )


def test_otherReplyExitsFour() -> None:
    """
    A reply that is not an echo is exit status 4; one that starts like a
    TLS alert says to try C{--tls}.
    """
    assert problem(b"Welcome", HELLO, "line", TARGET) == (
        4, f"the reply from {TARGET} is not an echo of the message"
    )
    assert problem(b"\x15\x03\x03\x00\x02\x02\x46", HELLO, "raw", TARGET) == (
        4, f"the reply from {TARGET} is not an echo of the message "
        "(it looks like a TLS alert: is it a TLS listener? try --tls)"
    )


def test_cutRawEcho() -> None:
    """
    A raw echo of only the first 65536 of 70000 bytes (the server's one
    read) is exit status 4, saying how much came back and which framing to
    use instead.
    """
    message = bytes(range(256)) * 273 + b"x" * 112
    assert len(message) == 70000
    reply = b"Message received: " + message[:65536]
    assert problem(reply, message, "raw", TARGET) == (
        4,
        f"{TARGET} echoed only the first 65536 of the 70000 bytes sent: in raw framing the "
        "server takes one read as the message, so a long one is cut; use --framing line or "
        "--framing int32 (and the same on the server)",
    )


@pytest.mark.parametrize(
    "reply, message, expected",
    [
        (b"Message received: abc", b"abc", 3),
        (b"xxab", b"abc", 2),
        (b"aab", b"aabaab", 3),
        (b"abcabc", b"abcd", 3),
        (b"", b"abc", 0),
        (b"zzz", b"abc", 0),
        (b"abc", b"", 0),
    ],
)
def test_echoedPrefix(reply: bytes, message: bytes, expected: int) -> None:
    """
    L{echoedPrefix} is the length of the longest start of the message that
    the reply ends with.
    """
    assert echoedPrefix(reply, message) == expected
