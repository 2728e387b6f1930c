"""
The client's two protocols: L{ReplyClientProtocol} sends one message and
reads its reply on a connection of its own; L{KeepOpenClientProtocol} sends
one message after another on a connection that stays open. Both read the
reply with L{ReplyReader}.
"""

from __future__ import annotations

from typing import cast

from twisted.internet import error
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    INegotiated,
    ISSLTransport,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.client.failures import ClientError, ClosedAfterReply, NoReply
from sockplay.client.reply import MAX_REPLY, ReplyReader
from sockplay.framing import LF, Framer, makeFramer

__all__ = ["KeepOpenClientProtocol", "ReplyClientProtocol"]


def _negotiatedProtocol(transport: ITransport | None) -> bytes | None:
    """
    The protocol that C{transport}'s TLS handshake selected in ALPN, or
    C{None} (none selected, or not TLS).
    """
    if transport is None or not INegotiated.providedBy(transport):
        return None
    protocol = transport.negotiatedProtocol
    return protocol if isinstance(protocol, bytes) else None


def _canHalfClose(transport: ITransport | None) -> bool:
    """
    Whether C{transport} can close its write side alone (a TCP or UNIX
    socket can; TLS cannot).

    Twisted's TLS wrapper copies the interfaces of the TCP transport under
    it, so it looks half-closeable; but half-closing the TCP connection
    under TLS skips the TLS close_notify and breaks the session. Hence the
    check for TLS first.
    """
    if transport is None:
        return False
    if INegotiated.providedBy(transport) or ISSLTransport.providedBy(transport):
        return False
    return bool(IHalfCloseableDescriptor.providedBy(transport))


@implementer(IHalfCloseableProtocol)
class ReplyClientProtocol(Protocol):
    """
    Send one framed message and wait for the one framed reply (read as
    L{ReplyReader} says), then close.

    @ivar reply: fires with the reply payload (without its framing), or
        fails with L{NoReply}, L{TruncatedMessage} or L{MessageTooLong}.
        Cancelling it aborts the connection.
    @ivar negotiatedProtocol: the protocol selected in ALPN, known once the
        reply starts (the TLS handshake is then done); C{None} if none.
    """

    negotiatedProtocol: bytes | None = None

    @property
    def banners(self) -> tuple[bytes, ...]:
        """
        What the server sent before its reply, unasked (its banner), as
        L{ReplyReader} tells it apart.
        """
        return tuple(self._reader.banners)

    @property
    def held(self) -> bytes | None:
        """
        A complete message that is neither an echo nor an error, held as a
        possible banner while the next is awaited: the reply, for a caller
        that stops waiting for more.
        """
        return self._reader.held

    def __init__(self, message: bytes, framing: str = "raw", maxReply: int = MAX_REPLY) -> None:
        """
        @param message: the message payload, which this protocol frames.
        @param framing: one of L{sockplay.framing.FRAMINGS}.
        @param maxReply: the largest reply accepted, in bytes.
        """
        self.message = message
        self.framing = framing
        self.reply: Deferred[bytes] = Deferred(self._cancel)
        self._framer: Framer = makeFramer(framing, maxReply)
        self._reader = ReplyReader(self._framer, message, maxReply)

    def connectionMade(self) -> None:
        """
        Send the message; in C{eof} framing, end it by half-closing.
        """
        assert self.transport is not None
        self.transport.write(self._framer.encode(self.message, LF))
        if self._framer.needsEndOfInput:
            if _canHalfClose(self.transport):
                cast(ITCPTransport, self.transport).loseWriteConnection()
            else:
                reason = "eof framing needs a transport that can half-close"
                self._settle(Failure(ClientError(reason)))

    def dataReceived(self, data: bytes) -> None:
        """
        Read the reply; settle it once it is complete or cannot be.
        """
        if self.reply.called:
            return
        if self.negotiatedProtocol is None:
            self.negotiatedProtocol = _negotiatedProtocol(self.transport)
        outcome = self._reader.feed(data)
        if outcome is not None:
            self._settle(outcome)

    def readConnectionLost(self) -> None:
        """
        The server finished sending (a sockplay server half-closes after its
        reply): the reply is complete.
        """
        self._endOfReply()

    def writeConnectionLost(self) -> None:
        """
        Our half-close (eof framing) went out.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The connection is closed: whatever was received is the reply.
        """
        self._endOfReply(reason)

    def _endOfReply(self, reason: Failure | None = None) -> None:
        if not self.reply.called:
            self._settle(self._reader.end(reason))

    def _settle(self, outcome: bytes | Failure) -> None:
        """
        Fire L{reply} with C{outcome}, then close.
        """
        # Fire before closing: once our write side is shut (eof framing),
        # closing reports connectionLost at once, which re-enters
        # _endOfReply and would fire the reply a second time.
        if isinstance(outcome, Failure):
            self.reply.errback(outcome)
        else:
            self.reply.callback(outcome)
        if self.transport is not None:
            self.transport.loseConnection()

    def _cancel(self, reply: Deferred[bytes]) -> None:
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


class KeepOpenClientProtocol(Protocol):
    """
    Several exchanges on one connection, one at a time: send a framed
    message, wait for its framed reply (read as L{ReplyReader} says), and
    keep the connection open for the next one. For a C{--keep-open} server
    in C{line}, C{int32} or C{raw} framing (not C{eof}, whose message ends
    only when the client half-closes).

    @ivar negotiatedProtocol: the protocol selected in ALPN, known once a
        reply starts (the TLS handshake is then done); C{None} if none.
    """

    negotiatedProtocol: bytes | None = None

    def __init__(self, framing: str = "line", maxReply: int = MAX_REPLY) -> None:
        """
        @param framing: one of L{sockplay.framing.FRAMINGS}, except C{eof}.
        @param maxReply: the largest reply accepted, in bytes.
        @raise ValueError: for C{eof} framing.
        """
        self._framer = makeFramer(framing, maxReply)
        if self._framer.needsEndOfInput:
            raise ValueError(f"{framing} framing cannot keep the connection open")
        self._maxReply = maxReply
        self._reader: ReplyReader | None = None
        self._pending: Deferred[bytes] | None = None
        self._lost = False
        self._answered = 0
        self._closeWaiters: list[Deferred[None]] = []

    @property
    def isOpen(self) -> bool:
        """
        Whether the connection is made and not yet lost.
        """
        return self.transport is not None and not self._lost

    def ask(self, message: bytes) -> Deferred[bytes]:
        """
        Send C{message} and wait for its reply.

        @return: fires with the reply payload, or fails like
            L{ReplyClientProtocol.reply}, or with L{NoReply} if the
            connection is already closed. Cancelling it aborts the
            connection.
        @raise RuntimeError: if the previous exchange is not over.
        """
        if self._pending is not None:
            raise RuntimeError("one exchange at a time")
        if not self.isOpen or self.transport is None:
            return fail(NoReply("connection closed before the message was sent"))
        self._reader = ReplyReader(self._framer, message, self._maxReply)
        pending: Deferred[bytes] = Deferred(self._cancel)
        self._pending = pending
        self.transport.write(self._framer.encode(message, LF))
        return pending

    def dataReceived(self, data: bytes) -> None:
        """
        Read the reply to the pending exchange, if any.
        """
        if self.negotiatedProtocol is None:
            self.negotiatedProtocol = _negotiatedProtocol(self.transport)
        if self._reader is None:
            # Nothing asked: not a reply to anything.
            return
        outcome = self._reader.feed(data)
        if outcome is None:
            return
        self._settle(outcome)
        if isinstance(outcome, Failure):
            # Whatever follows cannot be told apart from the next reply.
            self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Settle the pending exchange as the end of its reply, and tell
        whoever waits in L{close}.
        """
        if self._reader is not None:
            outcome = self._reader.end(reason)
            if (
                self._answered
                and isinstance(outcome, Failure)
                and outcome.check(NoReply, error.ConnectionLost)
            ):
                # Closed (or reset, as the server's kernel answers a
                # message sent after its close) after answering: the server
                # keeps no connection open.
                outcome = Failure(ClosedAfterReply(self._answered))
            self._settle(outcome)
        self._lost = True
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """
        Close the connection.

        @return: fires with C{None} once it is closed.
        """
        closed: Deferred[None] = Deferred()
        if not self.isOpen or self.transport is None:
            closed.callback(None)
            return closed
        self._closeWaiters.append(closed)
        self.transport.loseConnection()
        return closed

    def abort(self) -> None:
        """
        Abort the connection, if it is open: after a failed exchange its
        state is unknown.
        """
        if self.isOpen and self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def _settle(self, outcome: bytes | Failure) -> None:
        pending, self._pending, self._reader = self._pending, None, None
        if pending is not None:
            if isinstance(outcome, Failure):
                pending.errback(outcome)
            else:
                self._answered += 1
                pending.callback(outcome)

    def _cancel(self, pending: Deferred[bytes]) -> None:
        self._pending = self._reader = None
        self.abort()
