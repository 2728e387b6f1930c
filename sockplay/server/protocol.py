"""
One connection of the echo-reply server: L{EchoReplyProtocol}, whose
lifecycle is a set of named L{ConnectionState}s.

Every message (as the server's framing defines it) gets one reply: the
prefix, then the message's bytes, framed the same way. By default the server
answers one message and closes, as the socket tutorial does; with
C{keepOpen} it answers every message, in order, until the client closes.

A connection's life::

    ADMITTING --over a limit--> REFUSED (error sent, closing)
        |
        v
    READING --one-shot reply, error, idle timeout, drain, client's EOF-->
    REPLYING (queued replies still going out)
        |
        v
    CLOSING (our half-close sent: input discarded until the client closes,
        |    within the linger period, which restarts while the reply is read)
        v
    CLOSED  (also straight from any state: abort, reset, lost connection)

Fault injection (C{--delay}, C{--drop-rate}, C{--cut-after}...) is a subclass
(L{sockplay.server.faults}), chosen when the protocol is built, so that this
plain path carries no fault checks.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from random import Random
from typing import TYPE_CHECKING

from twisted.internet import error
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.framing import Framer, MessageError, MessageTooLong, TruncatedMessage
from sockplay.server._twisted import (
    asStream,
    canHalfClose,
    isPlainSocket,
    sendNow,
    shutDownWriteNow,
)
from sockplay.server.faultsettings import Faults
from sockplay.server.proxy import acceptedAt, localAddress
from sockplay.server.sendqueue import unsentBytes
from sockplay.server.settings import ServerSettings
from sockplay.server.tls import describeHandshakeFailure, isHandshakeFailure

if TYPE_CHECKING:
    from sockplay.server.tracer import Tracer

__all__ = ["ConnectionOwner", "ConnectionState", "EchoReplyProtocol"]


class ConnectionState(enum.Enum):
    """
    Where a server connection is in its life.

    @cvar ADMITTING: just made, not yet counted against the limits.
    @cvar REFUSED: over a limit: its error is sent and the connection closes.
    @cvar READING: reading messages and answering each.
    @cvar REPLYING: the conversation is over (one-shot reply sent, an error,
        the idle timeout, a drain, or the client's end of input); replies
        still queued are going out.
    @cvar CLOSING: our side is closed (a half-close where the transport can,
        so that the client reads every reply); whatever the client still
        sends is discarded until it closes, within the linger period.
    @cvar CLOSED: the connection is gone.
    """

    ADMITTING = "admitting"
    REFUSED = "refused"
    READING = "reading"
    REPLYING = "replying"
    CLOSING = "closing"
    CLOSED = "closed"


# The hot path compares against these module globals.
_READING = ConnectionState.READING
_REPLYING = ConnectionState.REPLYING
_CLOSING = ConnectionState.CLOSING
_CLOSED = ConnectionState.CLOSED


def _tooLongText(error: MessageTooLong) -> str:
    return f"message too long (limit {error.limit} bytes)"


@implementer(IHalfCloseableProtocol, IPushProducer, IHandshakeListener)
class EchoReplyProtocol(Protocol):
    """
    One client connection: frame its input, answer each message.

    Once it has nothing more to say (one-shot reply sent, an error, or a
    shutdown), it half-closes its write side instead of closing outright,
    discards whatever the client still sends, and closes when the client
    does. Closing a socket with unread input makes the kernel send a RST,
    which can destroy a reply that the client has not read yet.

    It is the streaming producer of its own transport: while the transport's
    write buffer is full (a client that sends without reading), it stops
    reading, so memory stays bounded.

    @ivar state: the L{ConnectionState}.
    @ivar messages: messages answered on this connection.
    @ivar bytesIn: bytes received.
    @ivar bytesOut: bytes written.
    @ivar outcome: why the conversation ended, or C{None} while it goes on.
    @ivar detail: what the outcome alone does not say, for the log (why a
        TLS handshake failed), or C{""}.
    @ivar lastMessageAt: when a message last completed (or the connection
        began): the idle timeout counts from here.
    @ivar overTLS: whether the connection is over TLS (known only where the
        local address is, for the logs and templates).
    @ivar lingerDeadline: once the conversation is over, when the client must
        have closed, unless its reply makes progress meanwhile; 0 before.
    @ivar delivering: the conversation is over and its replies may still be
        on their way to the client: the sweep calls L{checkDelivery}.
    """

    log = Logger()
    factory: ConnectionOwner

    def __init__(self) -> None:
        # Every attribute is set here, always in the same order, so that all
        # connections share one attribute layout: the interpreter's fast
        # paths for attribute access, and key-sharing dictionaries, depend
        # on it (setting only what differs from class-level defaults was
        # measurably slower on the keep-open hot path).
        self.state = ConnectionState.ADMITTING
        self.messages = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.outcome: str | None = None
        # What the outcome alone does not say (why a TLS handshake failed).
        self.detail = ""
        self.startedAt = 0.0
        # Kept from the start: a closed TCP transport cannot tell them.
        self.peerAddress: IAddress | None = None
        self.hostAddress: IAddress | None = None
        # Over TLS, which the logs and {listener} name as ssl:.
        self.overTLS = False
        self.lastMessageAt = 0.0
        self.lingerDeadline = 0.0
        self.delivering = False
        # What the client had not received when checkDelivery last looked;
        # -1 before it first looks.
        self._unsent = -1
        self._framer: Framer | None = None
        self._prefix = b""
        # Most messages answered before closing: 1 one-shot, 0 for no limit.
        self._limit = 0
        # A plain TCP or UNIX socket, which _write may send on directly.
        self._direct = False
        # Registered as the transport's producer, and paused by it.
        self._registered = False
        self._paused = False
        # The client half-closed: our side then closes fully.
        self._readClosed = False
        # Directly over TLS, and the handshake is not done yet.
        self._handshaking = False
        self._seconds: Callable[[], float] = time.time

    @property
    def stateName(self) -> str:
        """
        The name of its L{ConnectionState}, for the playground's list.
        """
        return self.state.value

    @property
    def admitted(self) -> bool:
        """
        Whether the connection got past the limits and is still counted.
        """
        return self.state in (_READING, _REPLYING, _CLOSING)

    # Connection lifecycle

    def connectionMade(self) -> None:
        factory = self.factory
        settings = factory.settings
        transport = self.transport
        assert transport is not None
        self._seconds = factory.clock.seconds
        self.startedAt = self.lastMessageAt = acceptedAt(transport, self._seconds())
        self.peerAddress = transport.getPeer()
        if factory.needsLocalAddress:
            # Behind the PROXY protocol getHost() is the load balancer's
            # frontend; {listener} and the logs name this server's own socket.
            self.hostAddress = factory.intern(localAddress(transport))
            self.overTLS = ISSLTransport.providedBy(transport)
        self._framer = self._newFramer()
        refusal = factory.admit(self)
        if refusal is not None:
            self.state = ConnectionState.REFUSED
            self.outcome, text = refusal
            self.sendError(text)
            transport.loseConnection()
            return
        self.state = _READING
        if settings.keepOpen:
            # Replies are small and latency matters: do not wait to coalesce.
            # (A one-shot reply is the first data sent, which Nagle's
            # algorithm never holds back: no system call needed.)
            setNoDelay = getattr(transport, "setTcpNoDelay", None)
            if setNoDelay is not None:
                try:
                    setNoDelay(True)
                except OSError:  # not a TCP socket after all (UNIX)
                    pass
            # Backpressure matters only where a client can queue many
            # replies: one-shot connections send one.
            asStream(transport).registerProducer(self, True)
            self._registered = True
        else:
            self._limit = 1
        self._direct = isPlainSocket(transport)
        self._handshaking = isinstance(transport, TLSMemoryBIOProtocol)
        self._prefix = factory.render(settings.prefix, self)
        if settings.banner is not None:
            self._send(self._framer.encode(factory.render(settings.banner, self), b"\n"))
        if settings.idleTimeout > 0:
            factory.watch()

    def _newFramer(self) -> Framer:
        """
        This connection's framer: the factory's; the fault-injecting and
        traced connections wrap it.
        """
        return self.factory.makeFramer()

    def dataReceived(self, data: bytes) -> None:
        """
        Frame what arrived and answer the messages it completes, in one
        write; past the conversation's end, discard it.
        """
        self.bytesIn += len(data)
        if self.state is not _READING:
            return
        assert self._framer is not None
        out, count, failure = self._framer.feedReplies(data, self._prefix, self._limit)
        if count:
            self.lastMessageAt = self._seconds()
            self.messages += count
            # _send, inlined: one call less per read on the hot path.
            self.bytesOut += len(out)
            self._write(out)
            if self.messages == self._limit:
                self._stop("ok")
        if failure is not None and self.state is _READING:
            self.messageFailed(failure)

    def readConnectionLost(self) -> None:
        """
        The client half-closed: answer what its input completes, then close.
        """
        self._readClosed = True
        state = self.state
        if state is _READING:
            assert self._framer is not None
            try:
                last = self._framer.finish()
            except MessageError as e:
                self.messageFailed(e)
            else:
                if last is not None:
                    self.messages += 1
                    self._send(self._framer.encodeReplies(self._prefix, [last]))
                if self.state is _READING:
                    self._stop(
                        "ok" if self.messages else "probe" if not self.bytesIn else "no-message"
                    )
        elif state is _CLOSING:
            # Nothing more can arrive, and our side is done: close.
            assert self.transport is not None
            self.transport.loseConnection()
        # REPLYING closes fully once its replies are out (see _closeIfReplied).

    def writeConnectionLost(self) -> None:
        """
        Our half-close went out, so Twisted's write buffer is empty: that is
        progress, and the linger period starts again.
        """
        if self.lingerDeadline:
            self.lingerDeadline = self._seconds() + self.factory.settings.lingerTimeout

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.state = _CLOSED
        self.lingerDeadline = 0.0
        self.delivering = False
        if self.outcome is None:
            if self._handshaking and isHandshakeFailure(reason):
                # TLS ate the client's bytes: say why it refused them.
                self.outcome = "tls-failed"
                self.detail = describeHandshakeFailure(reason)
            elif not self.bytesIn:
                # Connected and gone without a byte: a health check (such
                # as HAProxy's, which resets) or a port scan.
                self.outcome = "probe"
            else:
                # isinstance: Failure.check names every base class.
                self.outcome = "ok" if isinstance(reason.value, error.ConnectionDone) else "reset"
        self.factory.connectionClosed(self)

    # IPushProducer: the transport tells us when its write buffer is full.

    def pauseProducing(self) -> None:
        self._paused = True
        asStream(self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        asStream(self.transport).resumeProducing()

    def stopProducing(self) -> None:
        """
        The connection is going away; connectionLost does the clean-up.
        """

    # Writing

    def _send(self, data: bytes) -> None:
        """
        Write C{data}, counted as sent.
        """
        self.bytesOut += len(data)
        self._write(data)

    def _write(self, data: bytes) -> None:
        """
        Write C{data} (already counted as sent); on a plain TCP socket whose
        write buffer is empty, try the socket at once.

        Twisted's C{write} only buffers: it registers the socket for
        writability and sends on the next reactor turn, which for a small
        reply costs two epoll_ctl calls and a loop iteration, the bulk of a
        request's cost. Sending right away when nothing is queued keeps the
        order of bytes (nothing is ahead of them), and whatever the socket
        does not take goes through C{write} as usual.
        """
        transport = self.transport
        assert transport is not None
        if self._direct:
            data = sendNow(transport, data)
            if not data:
                return
        transport.write(data)

    def sendError(self, text: str) -> None:
        """
        Send C{Error: <text>} framed in this connection's framing, after any
        reply still queued.

        In C{raw} and C{eof} framing, which have no delimiter, the error text
        ends with a newline so that it reads well in a terminal.
        """
        assert self._framer is not None
        body = b"Error: " + text.encode("utf-8", "backslashreplace")
        if self._framer.name in ("raw", "eof"):
            body += b"\n"
        self._send(self._framer.encode(body, b"\n"))

    # Ending the conversation

    def messageFailed(self, failure: MessageError) -> None:
        """
        The input cannot be answered (too long, or cut short): say so and
        end the conversation.
        """
        if isinstance(failure, MessageTooLong):
            self._stop("too-long", _tooLongText(failure))
        elif isinstance(failure, TruncatedMessage):
            self._stop("truncated", str(failure))
        else:
            raise failure

    def idleExpired(self) -> None:
        """
        No complete message within the idle timeout (the sweep found it):
        say so and end.
        """
        if self.state is not _READING:
            return
        if self._handshaking:
            # A TLS client that never finished its handshake: nothing can
            # reach it, not even the error, and a TLS close would wait for
            # the handshake. Drop it now, not after the linger.
            self.outcome = "idle-timeout"
            asStream(self.transport).abortConnection()
            return
        timeout = self.factory.settings.idleTimeout
        self._stop("idle-timeout", f"idle timeout ({timeout:g} s)")

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done (Twisted's TLS transport calls this): from
        now on the client can be told why the connection ends.
        """
        self._handshaking = False

    def shutdown(self) -> None:
        """
        The server is draining: answer nothing more (what was already read
        has its reply, or has it queued), then close as after a last reply.

        A connection on which nothing was said either way has no reply to
        protect, so it closes at once rather than waiting, for up to the
        linger period, for its client to close.
        """
        if self.state is _READING:
            self._stop("shutdown")
            if self.state is _CLOSING and not (self.bytesIn or self.bytesOut):
                asStream(self.transport).loseConnection()

    def _stop(self, outcome: str, errorText: str | None = None) -> None:
        """
        READING to REPLYING: answer nothing more, send the error, if any, and
        close the write side once every queued reply is written.
        """
        self.state = _REPLYING
        self.outcome = outcome
        if errorText is not None:
            self.sendError(errorText)
        # Bound the wait for the replies to reach the client and for it to
        # close (the sweep enforces it); restarted whenever the replies make
        # progress (checkDelivery), and once our half-close has gone out.
        linger = self.factory.settings.lingerTimeout
        self.lingerDeadline = self._seconds() + linger + self._queuedFor()
        self.delivering = True
        self.factory.watch()
        self._closeIfReplied()

    def _queuedFor(self) -> float:
        """
        Seconds until the last reply held back is due (none here; see
        L{sockplay.server.faults}).
        """
        return 0.0

    def _hasQueued(self) -> bool:
        """
        Whether replies are held back, to be written later.
        """
        return False

    def _closeIfReplied(self) -> None:
        """
        REPLYING to CLOSING once every reply is handed to the transport:
        close our side, a half-close where the transport can, else a full
        close.
        """
        if self.state is not _REPLYING or self._hasQueued():
            return
        self.state = _CLOSING
        transport = self.transport
        assert transport is not None
        self._unregister()
        # A plain socket (_direct) can half-close, and at once if nothing is
        # queued: no need to ask its interfaces.
        if self._readClosed or not (self._direct or canHalfClose(transport)):
            transport.loseConnection()
        elif not (self._direct and shutDownWriteNow(transport)):
            asStream(transport).loseWriteConnection()

    def _unregister(self) -> None:
        """
        Stop being the transport's producer (before closing), and read again
        if paused, so that the client's close is seen.
        """
        if not self._registered:
            return
        self._registered = False
        transport = asStream(self.transport)
        transport.unregisterProducer()
        if self._paused:
            self._paused = False
            transport.resumeProducing()

    def checkDelivery(self) -> None:
        """
        The conversation is over and its replies may still be on their way
        (the sweep asks, while L{delivering}): if the client has received
        bytes since the last look, the linger period starts again, so that a
        slow reader of a large reply is kept for as long as it reads. Once
        it has every byte, the linger is only the wait for it to close, and
        the sweep stops asking.

        Where the transport cannot tell (no socket beneath it, see
        L{sockplay.server.sendqueue.unsentBytes}), the linger is a fixed
        period from the last reply, and from the half-close.
        """
        unsent = self.factory.unsentBytes(self.transport)
        if unsent is None:
            self.delivering = False
            return
        # Progress; or, at the first look, a reply still on its way, which
        # the client may have been reading since the deadline was set.
        if unsent < self._unsent or (unsent and self._unsent < 0):
            self.lingerDeadline = self._seconds() + self.factory.settings.lingerTimeout
        self._unsent = unsent
        if not unsent and self.state is _CLOSING:
            self.delivering = False

    def lingerExpired(self) -> None:
        """
        The client did not close its side in time after the last reply, and
        the reply made no progress towards it for the linger period.
        """
        self.lingerDeadline = 0.0
        self.delivering = False
        if self.outcome in (None, "ok", "shutdown"):
            self.outcome = "aborted"
        asStream(self.transport).abortConnection()

    def abort(self) -> None:
        """
        Drop the connection now (the drain timeout ran out).
        """
        if self.state is _CLOSED:
            return
        # Whatever the conversation's end was (shutdown, typically), the
        # connection itself ended by force.
        self.outcome = "aborted"
        asStream(self.transport).abortConnection()


class ConnectionOwner(Factory[EchoReplyProtocol]):
    """
    What a connection needs from the server that owns it: the abstract base
    of L{sockplay.server.factory.EchoReplyFactory}, so that this module
    need not import the factory.

    @ivar settings: the L{ServerSettings}.
    @ivar clock: the time source for timers.
    @ivar random: the source of fault-injection draws.
    @ivar faults: the L{Faults} in force, read for each message by a
        connection that injects faults.
    @ivar unsentBytes: how many bytes written to a transport its client has
        not yet received, or C{None} where that cannot be told: by default
        L{sockplay.server.sendqueue.unsentBytes}; a test puts a fake here.
    @ivar tracer: where traced connections record their events (C{--web},
        C{--trace}), or C{None}.
    @ivar injectedObservers: called with a kind of fault and a count each
        time a connection that injects faults injects some (see
        L{sockplay.server.faults.INJECTED_KINDS}).
    """

    settings: ServerSettings
    clock: IReactorTime
    random: Random
    faults: Faults = Faults()
    injectedObservers: Sequence[Callable[[str, int], object]] = ()
    tracer: Tracer | None = None
    unsentBytes: Callable[[object], int | None] = staticmethod(unsentBytes)

    @property
    def needsLocalAddress(self) -> bool:
        """
        Whether the connection must learn its own local address.
        """
        raise NotImplementedError()

    def intern(self, address: IAddress) -> IAddress:
        """
        One shared object per distinct local address.
        """
        raise NotImplementedError()

    def makeFramer(self) -> Framer:
        """
        A new framer for one connection.
        """
        raise NotImplementedError()

    def render(self, template: bytes, protocol: EchoReplyProtocol) -> bytes:
        """
        Fill in a template's placeholders for one connection.
        """
        raise NotImplementedError()

    def admit(self, protocol: EchoReplyProtocol) -> tuple[str, str] | None:
        """
        Count a connection in, or say why it is refused: the outcome and
        the error text.
        """
        raise NotImplementedError()

    def connectionClosed(self, protocol: EchoReplyProtocol) -> None:
        """
        Account for a closed connection.
        """
        raise NotImplementedError()

    def watch(self) -> None:
        """
        Make sure the idle and linger sweep runs.
        """
        raise NotImplementedError()
