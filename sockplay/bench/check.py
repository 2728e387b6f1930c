"""
What the load generator sends and what it must get back, byte for byte.

The framing of requests and expected replies is written out here on purpose
instead of being borrowed from L{sockplay.framing}: the generator checks the
server, so it must not share the server's encoder (a bug there would then
go unnoticed on both sides).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from sockplay.stickiness import ConnectionWatch, Stickiness
from sockplay.tally import identityOf

__all__ = [
    "ERROR_KINDS",
    "SYMPTOMS",
    "Exchange",
    "ReplyChecker",
    "ReplyError",
    "TallyChecker",
    "describeMismatch",
    "makeExchange",
]

# Every way an exchange can fail, in the order summaries list them:
#  - connect: the connection could not be made;
#  - reset: a socket error (ECONNRESET, EPIPE, ...) in the middle of a
#    conversation;
#  - early-close: the server closed before every reply it owed was in;
#  - mismatch: a reply byte differs from the expected one;
#  - extra: the server sent more than the replies it owed;
#  - timeout: the server kept an exchange waiting longer than the exchange
#    timeout, or it was still unanswered at the hard deadline;
#  - worker: a load process died without reporting (--processes).
ERROR_KINDS = ("connect", "reset", "early-close", "mismatch", "extra", "timeout", "worker")

# What a failed exchange looked like, where that points at a setting of the
# bench or the server that does not match the other's (see
# L{sockplay.bench.diagnosis}):
#  - closed-after-reply: a connection kept open got one right reply, then
#    the server closed it (a one-shot server);
#  - closed-without-reply: the server closed before the first byte of the
#    first reply (a TLS listener, or a framing error on its side);
#  - open-after-reply: a one-shot exchange got its whole reply, but the
#    server kept the connection open (a keep-open server);
#  - no-reply: not one byte of a reply within the exchange timeout (the
#    server waits for the rest of a message framed otherwise);
#  - no-delimiter: a line reply came whole but for its LF (not a line
#    server);
#  - reply-unfinished: a reply began, then stopped within the timeout;
#  - stalled: a connection that had replies stopped getting them.
SYMPTOMS = (
    "closed-after-reply",
    "closed-without-reply",
    "open-after-reply",
    "no-reply",
    "no-delimiter",
    "reply-unfinished",
    "stalled",
)

# How much of a wrong reply is kept, as received, for the diagnosis.
RECEIVED_KEPT = 256

_INT32 = struct.Struct(">I")

# How much of a reply a mismatch report shows.
_SHOW = 80

# With --tally, the longest identity a reply may carry in front of the
# message: a server's rendered prefix is a few dozen bytes; a reply that
# runs this far past the message without ending is not an echo, and the
# bench stops buffering it.
LONGEST_IDENTITY = 64 * 1024


@dataclass(frozen=True)
class Exchange:
    """
    One request and the reply it must get, both framed.

    @ivar framing: C{raw}, C{line}, C{int32} or C{eof}.
    @ivar request: the bytes of one request.
    @ivar reply: the bytes of the one reply it must get.
    @ivar halfClose: whether the request ends with a half-close (C{eof}
        framing: the message ends where the client's input does).
    @ivar message: the message itself, unframed (what a reply must end
        with, whatever its prefix, with C{--tally}).
    """

    framing: str
    request: bytes
    reply: bytes
    halfClose: bool
    message: bytes


def makeExchange(framing: str, message: bytes, prefix: bytes) -> Exchange:
    """
    The request that carries C{message} in C{framing}, and the reply a
    sockplay server with C{prefix} answers it with (see docs/protocol.md).

    @raise ValueError: for an unknown framing.
    """
    payload = prefix + message
    if framing == "line":
        return Exchange(framing, message + b"\n", payload + b"\n", False, message)
    if framing == "int32":
        return Exchange(
            framing,
            _INT32.pack(len(message)) + message,
            _INT32.pack(len(payload)) + payload,
            False,
            message,
        )
    if framing in ("raw", "eof"):
        return Exchange(framing, message, payload, framing == "eof", message)
    raise ValueError(f"unknown framing {framing!r}")


class ReplyError(Exception):
    """
    A conversation went wrong.

    @ivar kind: one of L{ERROR_KINDS}.
    @ivar detail: what went wrong (for a mismatch, what was expected and
        what came instead).
    @ivar done: replies that the same data completed, correctly, before the
        error.
    @ivar received: for a mismatch, the wrong reply as received, from its
        first byte (at most L{RECEIVED_KEPT} bytes).
    @ivar symptom: one of L{SYMPTOMS}, when the failure looks like one.
    """

    def __init__(
        self,
        kind: str,
        detail: str | None = None,
        done: int = 0,
        received: bytes | None = None,
        symptom: str | None = None,
    ) -> None:
        super().__init__(kind if detail is None else f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.done = done
        self.received = received
        self.symptom = symptom


def describeMismatch(expected: bytes, received: bytes) -> str:
    """
    One line that shows where C{received}, the start of a reply, departs
    from the C{expected} reply.
    """
    at = 0
    for want, got in zip(expected, received, strict=False):
        if want != got:
            break
        at += 1
    return (
        f"byte {at} of a reply: expected {expected[:_SHOW]!r}, "
        f"received {received[:_SHOW]!r}"
    )


class _OwedReplies:
    """
    What the two reply checkers share: the replies a connection is owed,
    and what the end of its input means.

    @ivar owed: replies owed, including one partly received.
    @ivar offset: bytes of the current reply received so far.
    """

    owed: int
    offset: int

    def expect(self, count: int) -> None:
        """
        C{count} more requests went out: as many more replies are owed.
        """
        self.owed += count

    def endOfInput(self) -> None:
        """
        The server closed (or half-closed) the connection.

        @raise ReplyError: C{early-close} if a reply is still owed.
        """
        if self.owed:
            raise ReplyError(
                "early-close",
                f"{self.owed} replies owed, {self.offset} bytes of the next received",
            )


class ReplyChecker(_OwedReplies):
    """
    Checks the bytes a connection receives against the replies it is owed:
    every request sent adds one expected reply, and every byte received must
    be the next byte of those replies.

    Because every reply is the same, the expected stream is one reply
    repeated, and a received chunk is checked with a single comparison
    against that repetition, without copying it.

    @ivar owed: replies owed, including one partly received.
    @ivar offset: bytes of the current reply received so far.
    """

    def __init__(self, reply: bytes, readSize: int) -> None:
        """
        @param reply: the expected reply to every request.
        @param readSize: the most bytes one L{feed} can get.
        """
        if not reply:
            raise ValueError("an expected reply cannot be empty")
        self.reply = reply
        self.replyLength = len(reply)
        # Long enough for any chunk to start anywhere inside the first reply.
        self._stream = reply * (readSize // len(reply) + 2)
        self.owed = 0
        self.offset = 0

    def fresh(self) -> ReplyChecker:
        """
        A checker for another connection, owed nothing yet, that shares
        this one's expected stream (a few hundred kilobytes, built once).
        """
        checker = ReplyChecker.__new__(ReplyChecker)
        checker.reply = self.reply
        checker.replyLength = self.replyLength
        checker._stream = self._stream
        checker.owed = 0
        checker.offset = 0
        return checker

    def feed(self, data: bytes | memoryview) -> int:
        """
        Check bytes just received (a memoryview of a read buffer will do:
        nothing is kept or copied).

        @return: how many replies they complete.
        @raise ReplyError: C{mismatch} if a byte differs, C{extra} if there
            are more bytes than the replies owed; its C{done} counts the
            replies that were whole and right before that.
        """
        offset = self.offset
        size = len(data)
        room = self.owed * self.replyLength - offset
        if size > room:
            owedPart = data[:room] if room > 0 else b""
            if self._stream.startswith(owedPart, offset):
                done = self.feed(owedPart) if room > 0 else 0
                raise ReplyError("extra", f"{size - room} bytes after the last reply owed", done)
            # A byte of the replies owed is wrong: that is the error, and
            # the bytes after it show what the server sent instead.
            at = self._firstDifference(owedPart)
        elif self._stream.startswith(data, offset):
            total = offset + size
            done = total // self.replyLength
            self.offset = total - done * self.replyLength
            self.owed -= done
            return done
        else:
            at = self._firstDifference(data)
        # The replies before the one that differs are whole and right.
        done = (offset + at) // self.replyLength
        received = self._received(data, at)
        detail = describeMismatch(self.reply, received[: self.replyLength])
        self.owed -= done
        raise ReplyError("mismatch", detail, done, received)

    def _firstDifference(self, data: bytes | memoryview) -> int:
        """
        Where in C{data}, which does not match, the first wrong byte is.
        """
        expected = self._stream[self.offset : self.offset + len(data)]
        pairs = enumerate(zip(expected, data, strict=False))
        return next(i for i, (want, got) in pairs if want != got)

    def _received(self, data: bytes | memoryview, at: int) -> bytes:
        """
        The reply in C{data} whose byte C{at} is wrong, from its first byte
        (taken from the expected reply if it began in an earlier, matching,
        chunk) to the end of C{data}, at most L{RECEIVED_KEPT} bytes.
        """
        start = at - (self.offset + at) % self.replyLength
        if start < 0:
            return self.reply[:-start] + bytes(data[:RECEIVED_KEPT])
        return bytes(data[start : start + RECEIVED_KEPT])


class TallyChecker(_OwedReplies):
    """
    Checks the bytes a connection receives, for C{--tally}: each reply must
    be a framed echo of the message with any identity in front (the
    backend's rendered prefix); the message part is checked byte for byte.
    It has L{ReplyChecker}'s interface, so that the load and the worker
    use either alike, and it is used only with C{--tally}, so that the
    default checks stay one comparison per read.

    Where a reply ends is found from the framing, as the prefix is not
    known: at the LF (C{line}), after its length (C{int32}); in C{raw} and
    C{eof} framing, where the bytes received end with the message (only one
    reply is ever owed on a raw connection).

    @ivar owed: replies owed, including one partly received.
    @ivar offset: bytes of the current reply received so far.
    @ivar answered: whole, right replies so far.
    @ivar identities: the identity of each whole reply whose latency the
        worker has not yet recorded, oldest first.
    """

    def __init__(self, framing: str, message: bytes, stickiness: Stickiness) -> None:
        """
        @param framing: C{raw}, C{line}, C{int32} or C{eof}.
        @param message: the message every reply must echo.
        @param stickiness: where each connection's changes of identity are
            told.
        """
        self._framing = framing
        self._message = message
        self._stickiness = stickiness
        self._longest = len(message) + LONGEST_IDENTITY
        self._watch: ConnectionWatch = stickiness.watch()
        self._buffer = bytearray()
        self.owed = 0
        self.offset = 0
        self.answered = 0
        self.identities: deque[bytes] = deque()

    @property
    def replyLength(self) -> int:
        """
        The length the reply being received has when whole, where it can be
        told before its end: a line that holds the whole echo but for its
        LF is one byte short; else 0.
        """
        if self._framing == "line" and self._buffer.endswith(self._message):
            return len(self._buffer) + 1
        return 0

    def fresh(self) -> TallyChecker:
        """
        A checker for another connection, owed nothing yet, whose
        stickiness is checked on its own.
        """
        return TallyChecker(self._framing, self._message, self._stickiness)

    def feed(self, data: bytes | memoryview) -> int:
        """
        Check bytes just received.

        @return: how many replies they complete; each one's identity is
            added to L{identities}.
        @raise ReplyError: C{mismatch} if a reply is not an echo of the
            message, C{extra} if there are more bytes than the replies
            owed; its C{done} counts the replies that were whole and right
            before that.
        """
        buffer = self._buffer
        buffer += data
        done = 0
        while self.owed:
            try:
                reply = self._take()
            except ReplyError as e:
                e.done = done
                raise
            if reply is None:
                break
            identity = identityOf(reply, self._message)
            if identity is None:
                raise ReplyError(
                    "mismatch",
                    f"a reply that is not an echo of the message: received {reply[:_SHOW]!r}",
                    done,
                    self._framed(reply)[:RECEIVED_KEPT],
                )
            self.owed -= 1
            done += 1
            self.answered += 1
            self.identities.append(identity)
            self._watch.saw(identity, self.answered)
        if buffer and not self.owed:
            raise ReplyError("extra", f"{len(buffer)} bytes after the last reply owed", done)
        self.offset = len(buffer)
        return done

    def _take(self) -> bytes | None:
        """
        The next whole reply's payload, taken from the buffer, or C{None}
        if it is not whole yet.

        @raise ReplyError: C{mismatch} if it has run past any echo's length.
        """
        buffer = self._buffer
        framing = self._framing
        if framing == "line":
            end = buffer.find(b"\n")
            if end >= 0:
                reply = bytes(buffer[:end])
                del buffer[: end + 1]
                return reply
        elif framing == "int32":
            if len(buffer) >= _INT32.size:
                (length,) = _INT32.unpack_from(buffer)
                if not len(self._message) <= length <= self._longest:
                    raise self._tooLong(f"a reply of {length:,} bytes, not an echo")
                if len(buffer) >= _INT32.size + length:
                    reply = bytes(buffer[_INT32.size : _INT32.size + length])
                    del buffer[: _INT32.size + length]
                    return reply
        elif buffer.endswith(self._message):
            reply = bytes(buffer)
            buffer.clear()
            return reply
        if len(buffer) > self._longest:
            raise self._tooLong(f"{len(buffer):,} bytes without the end of a reply")
        return None

    def _framed(self, reply: bytes) -> bytes:
        """
        C{reply}'s payload framed again, as it was received.
        """
        if self._framing == "line":
            return reply + b"\n"
        if self._framing == "int32":
            return _INT32.pack(len(reply)) + reply
        return reply

    def _tooLong(self, detail: str) -> ReplyError:
        """
        The mismatch of a reply that cannot be an echo of the message with
        an identity of at most L{LONGEST_IDENTITY} bytes in front.
        """
        return ReplyError("mismatch", detail, 0, bytes(self._buffer[:RECEIVED_KEPT]))
