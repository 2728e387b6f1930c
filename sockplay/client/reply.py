"""
Reading the one reply to one message, as the framing defines it: the rules
of where a reply ends, with no I/O, shared by both client protocols.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet import error
from twisted.python.failure import Failure

from sockplay.client.failures import NoReply
from sockplay.client.verdict import ReplyKind, classify
from sockplay.framing import Framer, MessageTooLong, TruncatedMessage

__all__ = ["MAX_REPLY", "Reply", "ReplyReader"]

# A reply larger than this is refused rather than held in memory: it is far
# above any reply a sockplay server sends for a message within its limit.
MAX_REPLY = 16 * 1024 * 1024


class Reply(NamedTuple):
    """
    The server's answer to one message.

    @ivar payload: the reply, without its framing.
    @ivar banners: what the server sent before it, unasked (its
        C{--banner}), oldest first.
    @ivar alpn: the protocol the server selected in ALPN (C{--alpn}), or
        C{None} if none was (or the connection is not TLS).
    """

    payload: bytes
    banners: tuple[bytes, ...] = ()
    alpn: bytes | None = None


class ReplyReader:
    """
    Put together the one reply to one message, as the framing defines it.

    For C{eof} framing the reply is everything the server sends until it
    closes (or half-closes) the connection. For C{raw} it is the same, except
    that a reply that ends with the message sent is complete at once, so that
    a C{--keep-open} server, which does not close, still answers. For C{line}
    the reply ends at the first LF; for C{int32}, after its length-prefixed
    payload.

    In C{line} and C{int32} framing a server's banner (sent on connect,
    before anything is read) is told from the reply: a message that is
    neither an echo of the message sent nor an error is held, and if
    another follows, the held one was the banner (L{banners}) and the next
    is the reply, whatever it is. A held message
    that nothing follows before the end of input is the reply; L{held} is
    it, for a caller that stops waiting. (C{raw} and C{eof} have no message
    boundaries: a banner there is the start of the reply.)

    @ivar banners: the banners read so far, oldest first.

    Each method returns the outcome once it is known: the reply payload
    (without its framing), or a L{Failure} saying why there is none.
    """

    def __init__(self, framer: Framer, message: bytes, maxReply: int = MAX_REPLY) -> None:
        """
        @param framer: the connection's framer (in C{line} and C{int32}
            framing it holds the bytes of the connection's next reply).
        @param message: the message that this reply answers.
        @param maxReply: the largest reply accepted, in bytes.
        """
        self._framer = framer
        self._message = message
        self._maxReply = maxReply
        self._chunks: list[bytes] = []
        self._size = 0
        self.banners: list[bytes] = []
        self.held: bytes | None = None

    def feed(self, data: bytes) -> bytes | Failure | None:
        """
        Take received bytes.

        @return: the reply payload, once complete; a L{MessageTooLong}
            failure if the reply grows past the limit; else C{None}.
        """
        try:
            return self._feed(data)
        except MessageTooLong:
            return Failure()

    def _feed(self, data: bytes) -> bytes | None:
        if self._framer.name in ("raw", "eof"):
            self._size += len(data)
            if self._size > self._maxReply:
                raise MessageTooLong(self._maxReply)
            self._chunks.append(data)
            if self._framer.name == "raw" and self._hasEcho():
                return b"".join(self._chunks)
            return None
        for message in self._framer.feed(data):
            if self.held is not None:
                # The held message was the banner: this one is the reply.
                self.banners.append(self.held)
                self.held = None
                return message.payload
            if classify(message.payload, self._message) is not ReplyKind.OTHER:
                return message.payload
            self.held = message.payload
        return None

    def _hasEcho(self) -> bool:
        """
        Whether the raw reply received so far ends with the message we sent:
        an echo-reply is then complete, even if the server keeps the
        connection open.
        """
        size = len(self._message)
        tail = b"".join(self._chunks)[-size:] if size else b""
        return tail == self._message

    def end(self, reason: Failure | None = None) -> bytes | Failure:
        """
        The server finished sending: the end-of-reply rule of every client.

        @param reason: why the connection was lost, or C{None} if the server
            only half-closed it.
        @return: the reply payload if there is one (what a server sent
            before it closed is a reply, even without its final LF); else a
            L{TruncatedMessage} or L{MessageTooLong} failure for a reply cut
            short or over the limit; else C{reason} if the connection was
            not closed cleanly; else a L{NoReply} failure.
        """
        try:
            reply = self._finish()
        except (TruncatedMessage, MessageTooLong):
            return Failure()
        if reply is not None:
            return reply
        if reason is not None and not reason.check(error.ConnectionDone):
            return reason
        return Failure(NoReply("connection closed without a reply"))

    def _finish(self) -> bytes | None:
        """
        The reply held when the input ended, or C{None} if there was none.

        @raise TruncatedMessage: if the input ended inside a framed reply.
        @raise MessageTooLong: if the bytes held are over the limit.
        """
        if self._chunks:
            return b"".join(self._chunks)
        last = self._framer.finish()
        if last is not None and last.payload and self._framer.name == "line":
            # A reply whose line the server never terminated: keep it.
            if self.held is not None:
                self.banners.append(self.held)
            self.held = None
            return last.payload
        held, self.held = self.held, None
        return held
