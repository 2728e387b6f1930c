"""
Message framing: what one message is on the wire, for the server and the client.

A framer is per-connection state. It is fed bytes as they arrive and returns
the complete messages they finish, each as a L{Message}: the payload and the
delimiter that ended it (only line framing has one). It also encodes a reply
so that the peer can find its end.

The four framings:

  - C{raw}: whatever one read delivers is one message (the socket tutorial).
  - C{line}: up to LF; a CR just before the LF is part of the delimiter.
  - C{eof}: every byte until the peer half-closes.
  - C{int32}: a 4-byte big-endian length prefix, then the payload.

Everything here is bytes: nothing is ever decoded.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "FRAMINGS",
    "Framer",
    "Message",
    "MessageError",
    "MessageTooLong",
    "TruncatedMessage",
    "WrappingFramer",
    "checkKeepOpen",
    "framingOption",
    "makeFramer",
]

# 64 KiB: one read's worth on most stacks, and large enough for any greeting.
DEFAULT_MAX_MESSAGE = 65536

LF = b"\n"
CRLF = b"\r\n"
_INT32 = struct.Struct(">I")


class Message(NamedTuple):
    """
    One complete message.

    @ivar payload: the message bytes, without framing.
    @ivar delimiter: the bytes that ended it (C{b"\\n"} or C{b"\\r\\n"} in
        line framing, C{b""} otherwise). A reply ends with the same one.
    """

    payload: bytes
    delimiter: bytes


class MessageError(Exception):
    """
    The input cannot be answered as a message: the base of the framing
    errors, which end a conversation with an error reply.
    """


class MessageTooLong(MessageError):
    """
    A message grew past the framer's limit.

    @ivar limit: the limit, in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"message exceeds {limit} bytes")
        self.limit = limit


class TruncatedMessage(MessageError):
    """
    The input ended in the middle of a framed message.
    """


class Framer:
    """
    Base framer: splits a byte stream into messages and encodes replies.

    @cvar name: the C{--framing} value that selects this framer.
    @cvar needsEndOfInput: C{True} if messages end only at end of input.
    @ivar maxLength: the largest payload accepted, in bytes.
    """

    name = ""
    needsEndOfInput = False

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE) -> None:
        self.maxLength = maxLength

    def feed(self, data: bytes) -> list[Message]:
        """
        Take newly received bytes.

        @return: the messages that C{data} completes, in order.
        @raise MessageTooLong: if a message is or would become longer than
            C{maxLength}. The messages completed before it are lost to the
            caller, so callers that care use L{feedUntilError}.
        """
        messages, error = self.feedUntilError(data)
        if error is not None:
            raise error
        return messages

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        """
        Like L{feed}, but return the messages completed before an over-long
        one together with the error, so that they can still be answered.
        """
        raise NotImplementedError()

    def finish(self) -> Message | None:
        """
        The input has ended.

        @return: a last message made of the bytes still buffered, if this
            framing treats them as one, else C{None}.
        @raise TruncatedMessage: if the buffered bytes are an incomplete frame.
        @raise MessageTooLong: if the buffered bytes are over the limit.
        """
        return None

    @property
    def buffered(self) -> int:
        """
        How many received bytes are held waiting for the end of a message.
        """
        return 0

    def encode(self, payload: bytes, delimiter: bytes = b"") -> bytes:
        """
        Frame C{payload} for sending.

        @param delimiter: in line framing, the delimiter to end it with.
        """
        return payload

    def encodeReplies(self, prefix: bytes, messages: list[Message]) -> bytes:
        """
        The replies to C{messages}, each C{prefix} + payload, framed, as one
        string: one write for a whole batch.
        """
        encode = self.encode
        return b"".join([encode(prefix + payload, delimiter) for payload, delimiter in messages])

    def feedReplies(
        self, data: bytes, prefix: bytes, limit: int = 0
    ) -> tuple[bytes, int, MessageError | None]:
        """
        L{feedUntilError} and L{encodeReplies} in one step, for the server's
        one read path: the replies to every message that C{data} completes,
        how many there are, and the error that stopped them.

        @param limit: answer at most this many messages (0: all). Whatever
            follows the last one answered, a limit overrun included, is
            dropped, and the framer is not to be fed again (a one-shot
            server answers the first message and stops reading).
        """
        messages, error = self.feedUntilError(data)
        if limit and len(messages) >= limit:
            messages, error = messages[:limit], None
        if not messages:
            return b"", 0, error
        return self.encodeReplies(prefix, messages), len(messages), error


class WrappingFramer(Framer):
    """
    A framer that adds to another (fault injection, tracing): everything is
    the wrapped framer's but what a subclass overrides. L{feedReplies} is
    the general one, through this framer's own L{feedUntilError}, so that
    what a subclass adds there is not bypassed.
    """

    def __init__(self, framer: Framer) -> None:
        super().__init__(framer.maxLength)
        self.name = framer.name
        self.needsEndOfInput = framer.needsEndOfInput
        self._framer = framer

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        return self._framer.feedUntilError(data)

    def finish(self) -> Message | None:
        return self._framer.finish()

    @property
    def buffered(self) -> int:
        return self._framer.buffered

    def encode(self, payload: bytes, delimiter: bytes = b"") -> bytes:
        return self._framer.encode(payload, delimiter)

    def encodeReplies(self, prefix: bytes, messages: list[Message]) -> bytes:
        return self._framer.encodeReplies(prefix, messages)


class RawFramer(Framer):
    """
    One read is one message: the tutorial's C{recv(1024)} semantics.
    """

    name = "raw"

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        if len(data) > self.maxLength:
            return [], MessageTooLong(self.maxLength)
        return [Message(data, b"")], None

    def feedReplies(
        self, data: bytes, prefix: bytes, limit: int = 0
    ) -> tuple[bytes, int, MessageError | None]:
        # The read is the message, unframed: its reply is prefix + read.
        if len(data) > self.maxLength:
            return b"", 0, MessageTooLong(self.maxLength)
        return prefix + data, 1, None


class LineFramer(Framer):
    """
    LF-terminated lines; a CR right before the LF belongs to the delimiter.

    Each read is split once (no re-scanning of the buffer per line), which
    keeps pipelined input linear.
    """

    name = "line"

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE) -> None:
        super().__init__(maxLength)
        self._buffer = b""

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        if LF not in data:
            self._buffer += data
            if self._tooLong(self._buffer):
                self._buffer = b""
                return [], MessageTooLong(self.maxLength)
            return [], None
        lines = (self._buffer + data).split(LF)
        rest = lines.pop()
        return self._linesUntilTooLong(lines, rest)

    def _tooLong(self, unterminated: bytes) -> bool:
        """
        Whether an unterminated line is already over the limit. One byte
        more is allowed if it is a CR: it may begin the CRLF delimiter.
        """
        limit = self.maxLength
        return len(unterminated) > limit and not (
            len(unterminated) == limit + 1 and unterminated.endswith(b"\r")
        )

    def feedReplies(
        self, data: bytes, prefix: bytes, limit: int = 0
    ) -> tuple[bytes, int, MessageError | None]:
        if limit:
            return Framer.feedReplies(self, data, prefix, limit)
        # The reply to a line is prefix + line + LF whether the line ended in
        # LF or CRLF (its CR is still on it), so a batch of replies is one
        # join, with no per-line work in Python unless a line is too long.
        if LF not in data:
            return b"", 0, self.feedUntilError(data)[1]
        lines = (self._buffer + data).split(LF)
        rest = lines.pop()
        limit = self.maxLength
        if max(map(len, lines)) > limit:
            messages, error = self._linesUntilTooLong(lines, rest)
            return self.encodeReplies(prefix, messages), len(messages), error
        self._buffer = rest
        error = MessageTooLong(limit) if rest and self._tooLong(rest) else None
        if len(lines) == 1:
            # One request in flight: the usual case, spared the join.
            return prefix + lines[0] + LF, 1, error
        return prefix + (LF + prefix).join(lines) + LF, len(lines), error

    def _linesUntilTooLong(
        self, lines: list[bytes], rest: bytes
    ) -> tuple[list[Message], MessageTooLong | None]:
        messages: list[Message] = []
        for line in lines:
            if line.endswith(b"\r"):
                payload, delimiter = line[:-1], CRLF
            else:
                payload, delimiter = line, LF
            if len(payload) > self.maxLength:
                self._buffer = b""
                return messages, MessageTooLong(self.maxLength)
            messages.append(Message(payload, delimiter))
        self._buffer = rest
        if self._tooLong(rest):
            return messages, MessageTooLong(self.maxLength)
        return messages, None

    def finish(self) -> Message | None:
        # An unterminated last line is still a message: nothing is dropped.
        if self._buffer:
            payload, self._buffer = self._buffer, b""
            if len(payload) > self.maxLength:
                # Held only because its last byte could have begun a CRLF.
                raise MessageTooLong(self.maxLength)
            return Message(payload, b"")
        return None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def encode(self, payload: bytes, delimiter: bytes = LF) -> bytes:
        return payload + delimiter

    def encodeReplies(self, prefix: bytes, messages: list[Message]) -> bytes:
        parts: list[bytes] = []
        append = parts.append
        for payload, delimiter in messages:
            append(prefix)
            append(payload)
            append(delimiter)
        return b"".join(parts)


class EOFFramer(Framer):
    """
    The whole input, up to the peer's half-close, is one message.
    """

    name = "eof"
    needsEndOfInput = True

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE) -> None:
        super().__init__(maxLength)
        self._chunks: list[bytes] = []
        self._size = 0

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        self._size += len(data)
        if self._size > self.maxLength:
            self._chunks = []
            return [], MessageTooLong(self.maxLength)
        self._chunks.append(data)
        return [], None

    def finish(self) -> Message | None:
        payload = b"".join(self._chunks)
        self._chunks = []
        self._size = 0
        return Message(payload, b"")

    @property
    def buffered(self) -> int:
        return self._size


class Int32Framer(Framer):
    """
    A 4-byte big-endian unsigned length, then that many payload bytes (the
    format of Twisted's C{Int32StringReceiver}).
    """

    name = "int32"
    prefixLength = _INT32.size

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE) -> None:
        super().__init__(maxLength)
        self._buffer = b""

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[Message] = []
        offset = 0
        end = len(buffer)
        prefix = self.prefixLength
        limit = self.maxLength
        unpack = _INT32.unpack_from
        while end - offset >= prefix:
            (length,) = unpack(buffer, offset)
            if length > limit:
                self._buffer = b""
                return messages, MessageTooLong(limit)
            stop = offset + prefix + length
            if stop > end:
                break
            messages.append(Message(buffer[offset + prefix : stop], b""))
            offset = stop
        self._buffer = buffer[offset:]
        return messages, None

    def finish(self) -> Message | None:
        if self._buffer:
            have = len(self._buffer)
            self._buffer = b""
            raise TruncatedMessage(f"input ended inside a frame ({have} bytes of it received)")
        return None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def encode(self, payload: bytes, delimiter: bytes = b"") -> bytes:
        return _INT32.pack(len(payload)) + payload


FRAMINGS: dict[str, type[Framer]] = {
    cls.name: cls for cls in (RawFramer, LineFramer, EOFFramer, Int32Framer)
}


def framingOption(value: str) -> str:
    """
    Check a C{--framing} value, for L{twisted.python.usage} coerce functions.

    @raise ValueError: naming the choices, if C{value} is not one of them.
    """
    if value not in FRAMINGS:
        raise ValueError(f"--framing must be one of {', '.join(FRAMINGS)}, not {value!r}")
    return value


framingOption.coerceDoc = f"One of: {', '.join(FRAMINGS)}."  # type: ignore[attr-defined]


def checkKeepOpen(name: str) -> None:
    """
    Check that a connection in framing C{name} can stay open for several
    messages: the rule behind every C{--keep-open}.

    @raise ValueError: saying why not, for a framing whose message ends only
        at the end of input (C{eof}).
    """
    if FRAMINGS[name].needsEndOfInput:
        raise ValueError(
            f"--keep-open cannot be used with --framing {name}: "
            "the message ends only when the client half-closes"
        )


def makeFramer(name: str, maxLength: int = DEFAULT_MAX_MESSAGE) -> Framer:
    """
    Make a new framer for one connection.

    @param name: one of L{FRAMINGS}.
    @raise KeyError: for an unknown name.
    """
    return FRAMINGS[name](maxLength)
