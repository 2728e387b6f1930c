"""
Property-based tests (hypothesis): framing is independent of how the input
is split into reads, and no byte stream makes the server raise.
"""

from __future__ import annotations

import struct
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from support.fakes import LOOPBACK_PEER, HalfCloseableTransport
from twisted.internet.task import Clock

from sockplay.framing import makeFramer
from sockplay.server import EchoReplyFactory, EchoReplyProtocol, ServerSettings

LIMIT = 64

payloads = st.binary(max_size=LIMIT)
linePayloads = payloads.map(lambda b: b.replace(b"\n", b"").rstrip(b"\r"))
delimiters = st.sampled_from([b"\n", b"\r\n"])


def serve(
    framing: str, chunks: list[bytes], keepOpen: bool = True, halfClose: bool = False
) -> tuple[EchoReplyProtocol, bytes]:
    """
    Feed C{chunks} as separate reads to a new server connection.

    @return: the protocol and everything it wrote.
    """
    factory = EchoReplyFactory(
        ServerSettings(framing, keepOpen, maxMessage=LIMIT), clock=Clock()
    )
    protocol = factory.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    if halfClose:
        protocol.readConnectionLost()
    protocol.connectionLost()
    return protocol, transport.value()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} cut at the given offsets (taken modulo its length).
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(linePayloads, delimiters), max_size=8), st.lists(st.integers(0, 10**6)))
def test_lineSplitInvariant(messages: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    """
    Line framing: however the stream is split, the replies are those of the
    unsplit stream: one per line, in order, with the line's own delimiter.
    """
    stream = b"".join(p + d for p, d in messages)
    _, whole = serve("line", [stream])
    _, pieces = serve("line", split(stream, cuts))
    assert pieces == whole == b"".join(b"Message received: " + p + d for p, d in messages)


@settings(max_examples=200, deadline=None)
@given(st.lists(payloads, max_size=8), st.lists(st.integers(0, 10**6)))
def test_int32SplitInvariant(messages: list[bytes], cuts: list[int]) -> None:
    """
    int32 framing: however the stream is split, each frame gets its framed
    reply, in order.
    """
    stream = b"".join(struct.pack(">I", len(p)) + p for p in messages)
    _, whole = serve("int32", [stream])
    _, pieces = serve("int32", split(stream, cuts))
    expected = b"".join(
        struct.pack(">I", len(p) + 18) + b"Message received: " + p for p in messages
    )
    assert pieces == whole == expected


@settings(max_examples=200, deadline=None)
@given(payloads, st.lists(st.integers(0, 10**6)))
def test_eofSplitInvariant(message: bytes, cuts: list[int]) -> None:
    """
    eof framing: the reply comes at the half-close and holds every byte,
    however they were split.
    """
    _, pieces = serve("eof", split(message, cuts), keepOpen=False, halfClose=True)
    assert pieces == b"Message received: " + message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=LIMIT), max_size=8))
def test_rawOneReplyPerRead(reads: list[bytes]) -> None:
    """
    raw framing with keep-open: each read gets exactly its own reply.
    """
    _, out = serve("raw", reads)
    assert out == b"".join(b"Message received: " + r for r in reads)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["raw", "line", "eof", "int32"]),
    st.booleans(),
    st.booleans(),
    st.lists(st.binary(max_size=3 * LIMIT), max_size=10),
)
def test_arbitraryBytesNeverRaise(
    framing: str, keepOpen: bool, halfClose: bool, chunks: list[bytes]
) -> None:
    """
    Any byte stream, in any framing and lifecycle, with or without a
    half-close, is handled without an exception escaping the protocol, and
    the connection ends with an outcome.
    """
    if framing == "eof":
        keepOpen = False
    protocol, _ = serve(framing, [c for c in chunks if c], keepOpen, halfClose)
    assert protocol.outcome is not None


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["raw", "line", "eof", "int32"]),
    st.lists(
        st.lists(st.sampled_from([b"a", b"\n", b"\r", b"\x00", b"\x00\x00\x00\x03"]), max_size=30)
        .map(b"".join),
        max_size=10,
    ),
)
def test_feedRepliesMatchesMessageByMessage(framing: str, chunks: list[bytes]) -> None:
    """
    The batched hot path (C{feedReplies}) gives exactly the replies, count
    and error of framing message by message, over any reads, including
    over-long lines and a CR held at the limit.
    """
    fast, slow = makeFramer(framing, 8), makeFramer(framing, 8)
    for chunk in chunks:
        out, count, error = fast.feedReplies(chunk, b"> ")
        messages, expectedError = slow.feedUntilError(chunk)
        assert out == slow.encodeReplies(b"> ", messages)
        assert count == len(messages)
        assert type(error) is type(expectedError)
        if error is not None:
            break
