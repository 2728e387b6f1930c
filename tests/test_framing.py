"""
Tests for L{sockplay.framing}: what one message is, for each framing.
"""

from __future__ import annotations

import struct

import pytest

from sockplay.framing import (
    FRAMINGS,
    Message,
    MessageTooLong,
    TruncatedMessage,
    makeFramer,
)


def feedAll(name: str, chunks: list[bytes], limit: int = 65536) -> list[Message]:
    """
    Feed C{chunks} to a new framer, then end the input.
    """
    framer = makeFramer(name, limit)
    messages: list[Message] = []
    for chunk in chunks:
        messages.extend(framer.feed(chunk))
    last = framer.finish()
    if last is not None:
        messages.append(last)
    return messages


def int32(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# A stream of several messages per framing (raw has one message per read, so
# it is not split-invariant and is tested separately), and what it decodes to.
STREAMS = {
    "line": (
        b"hello\nwith cr\r\n\n\xff\x00binary\nlast",
        [
            Message(b"hello", b"\n"),
            Message(b"with cr", b"\r\n"),
            Message(b"", b"\n"),
            Message(b"\xff\x00binary", b"\n"),
            Message(b"last", b""),
        ],
    ),
    "int32": (
        int32(b"hello") + int32(b"") + int32(b"\x00\xff\n\r") + int32(b"x" * 300),
        [Message(b"hello", b""), Message(b"", b""), Message(b"\x00\xff\n\r", b""),
         Message(b"x" * 300, b"")],
    ),
    "eof": (
        b"all\nof\r\nit \x00\xff",
        [Message(b"all\nof\r\nit \x00\xff", b"")],
    ),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_splitAtEveryByteBoundary(name: str) -> None:
    """
    However a stream is split into two reads, it decodes to the same
    messages.
    """
    stream, expected = STREAMS[name]
    for cut in range(len(stream) + 1):
        assert feedAll(name, [stream[:cut], stream[cut:]]) == expected, cut


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_byteByByte(name: str) -> None:
    """
    A stream delivered one byte per read decodes to the same messages.
    """
    stream, expected = STREAMS[name]
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feedAll(name, chunks) == expected


def test_rawOneReadOneMessage() -> None:
    """
    In raw framing each read is one message, whatever it contains.
    """
    framer = makeFramer("raw")
    assert framer.feed(b"a\nb") == [Message(b"a\nb", b"")]
    assert framer.feed(b"\xff") == [Message(b"\xff", b"")]
    assert framer.finish() is None


def test_rawTooLong() -> None:
    """
    A raw read longer than the limit is refused.
    """
    with pytest.raises(MessageTooLong) as info:
        makeFramer("raw", 4).feed(b"12345")
    assert info.value.limit == 4


def test_lineCRBeforeLFIsDelimiter() -> None:
    """
    A CR right before the LF is part of the delimiter; a CR elsewhere is
    payload.
    """
    framer = makeFramer("line")
    assert framer.feed(b"a\rb\r\n") == [Message(b"a\rb", b"\r\n")]
    assert framer.feed(b"\r\r\n") == [Message(b"\r", b"\r\n")]


def test_lineCRLFSplitBetweenReads() -> None:
    """
    A CRLF delimiter split across two reads is still one delimiter.
    """
    framer = makeFramer("line")
    assert framer.feed(b"abc\r") == []
    assert framer.feed(b"\n") == [Message(b"abc", b"\r\n")]


@pytest.mark.parametrize("name", ["line", "eof", "raw"])
def test_exactlyAtLimitAccepted(name: str) -> None:
    """
    A message of exactly the limit is accepted.
    """
    framer = makeFramer(name, 5)
    data = b"12345" + (b"\r\n" if name == "line" else b"")
    messages = framer.feed(data)
    last = framer.finish()
    assert [m.payload for m in messages + ([last] if last else [])] == [b"12345"]


def test_lineTooLongWithoutDelimiter() -> None:
    """
    An unterminated line is refused as soon as it grows past the limit,
    without waiting for its end.
    """
    framer = makeFramer("line", 5)
    assert framer.feed(b"12345") == []
    # A trailing CR may still be the start of the delimiter.
    assert framer.feed(b"\r") == []
    with pytest.raises(MessageTooLong):
        framer.feed(b"x")


def test_lineTooLongAfterGoodLines() -> None:
    """
    The messages before an over-long one in the same read are returned with
    the error, so they can still be answered.
    """
    framer = makeFramer("line", 3)
    messages, error = framer.feedUntilError(b"ab\nabcd\nzz\n")
    assert messages == [Message(b"ab", b"\n")]
    assert isinstance(error, MessageTooLong)


def test_lineTooLongTrailingPartial() -> None:
    """
    An over-long unterminated tail after complete lines is an error too.
    """
    framer = makeFramer("line", 3)
    messages, error = framer.feedUntilError(b"ab\nabcdef")
    assert messages == [Message(b"ab", b"\n")]
    assert isinstance(error, MessageTooLong)


def test_eofTooLong() -> None:
    """
    eof framing refuses input that grows past the limit.
    """
    framer = makeFramer("eof", 4)
    assert framer.feed(b"12") == []
    with pytest.raises(MessageTooLong):
        framer.feed(b"345")


def test_int32LengthOverLimitRefusedEarly() -> None:
    """
    An int32 header announcing more than the limit is refused at once,
    before any payload arrives.
    """
    framer = makeFramer("int32", 10)
    with pytest.raises(MessageTooLong):
        framer.feed(struct.pack(">I", 11))


def test_int32TruncatedAtEnd() -> None:
    """
    Input that ends inside an int32 frame is reported as truncated.
    """
    framer = makeFramer("int32")
    assert framer.feed(int32(b"hello")[:-1]) == []
    with pytest.raises(TruncatedMessage):
        framer.finish()


def test_int32PartialHeaderTruncated() -> None:
    """
    Two bytes of a four-byte header at the end of input are a truncation.
    """
    framer = makeFramer("int32")
    framer.feed(b"\x00\x00")
    assert framer.buffered == 2
    with pytest.raises(TruncatedMessage):
        framer.finish()


@pytest.mark.parametrize(
    "name, payload, delimiter, wire",
    [
        ("raw", b"hi", b"", b"hi"),
        ("eof", b"hi", b"", b"hi"),
        ("line", b"hi", b"\r\n", b"hi\r\n"),
        ("line", b"hi", b"\n", b"hi\n"),
        ("line", b"hi", b"", b"hi"),
        ("int32", b"hi", b"", b"\x00\x00\x00\x02hi"),
    ],
)
def test_encode(name: str, payload: bytes, delimiter: bytes, wire: bytes) -> None:
    """
    A reply is framed so that the peer finds its end.
    """
    assert makeFramer(name).encode(payload, delimiter) == wire


def test_everyByteValueRoundTrips() -> None:
    """
    No byte value is special in payloads (besides LF in line framing).
    """
    payload = bytes(range(256))
    for name in ("eof", "int32"):
        framer = makeFramer(name)
        assert feedAll(name, [framer.encode(payload)]) == [Message(payload, b"")]
    linePayload = payload.replace(b"\n", b"")
    assert feedAll("line", [linePayload + b"\n"]) == [Message(linePayload, b"\n")]


def test_unknownFraming() -> None:
    """
    Only the documented framings exist.
    """
    assert sorted(FRAMINGS) == ["eof", "int32", "line", "raw"]
    with pytest.raises(KeyError):
        makeFramer("xml")


def test_lineLimitPlusCRAtEndOfInput() -> None:
    """
    A line of limit + 1 bytes ending in CR is held while its LF may still
    come; if the input ends instead, it is too long, not a message.
    """
    framer = makeFramer("line", 3)
    assert framer.feed(b"abc\r") == []
    with pytest.raises(MessageTooLong):
        framer.finish()


def test_feedRepliesLimitAnswersOnlyTheFirst() -> None:
    """
    With a limit (a one-shot server), only that many messages are answered,
    and what follows them, a limit overrun included, is dropped.
    """
    for framing, data in (("line", b"one\ntwo\n" + b"x" * 20), ("raw", b"one")):
        framer = makeFramer(framing, 10)
        out, count, error = framer.feedReplies(data, b"> ", 1)
        assert (count, error) == (1, None)
        assert out == (b"> one\n" if framing == "line" else b"> one")
