"""
The echo-reply server: a L{Protocol} per connection and the L{Factory} that
holds what the connections share.

Every message (as the factory's framing defines it) gets one reply: the
prefix, then the message's bytes, framed the same way. By default the server
answers one message and closes, as the socket tutorial does; with
C{keepOpen} it answers every message, in order, until the client closes.

The server is built to be put under load and hostile input: every limit is
enforced per connection, a client that stops reading stops being read
(backpressure), timers never outlive their connection, and a graceful drain
answers what was read before closing.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.framing import (
    DEFAULT_MAX_MESSAGE,
    FRAMINGS,
    Framer,
    Message,
    MessageTooLong,
    TruncatedMessage,
    makeFramer,
)
from sockplay.server._twisted import (
    asStream,
    canHalfClose,
    isPlainSocket,
    sendNow,
    shutDownWriteNow,
)
from sockplay.server.address import describeAddress, hostOf
from sockplay.server.proxy import localAddress

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PREFIX",
    "ConnectionRecord",
    "EchoReplyFactory",
    "EchoReplyProtocol",
    "ServerSettings",
    "renderProcessTemplate",
    "renderTemplate",
]

# The tutorial's reply prefix.
DEFAULT_PREFIX = b"Message received: "

# Long enough for any interactive client to type a line; short enough that
# slowloris clients (who trickle a message that never ends) do not pile up.
DEFAULT_IDLE_TIMEOUT = 30.0

# Far above what a test endpoint normally sees, low enough to keep the
# server's file descriptors and memory bounded under a connection flood.
DEFAULT_MAX_CONNECTIONS = 10000

# After its last reply, how long the server waits for the client to close.
# A well-behaved client closes as soon as it has read its reply.
DEFAULT_LINGER = 5.0

# Placeholders a prefix (or banner) may hold, rendered once per connection.
PLACEHOLDERS = (b"{hostname}", b"{listener}", b"{peer}", b"{pid}")


@dataclass(frozen=True)
class ServerSettings:
    """
    What every connection of one server shares: framing, lifecycle, reply
    prefix, limits and test-endpoint knobs.

    @ivar framing: a key of L{sockplay.framing.FRAMINGS}.
    @ivar keepOpen: answer every message until the client closes, instead of
        one message and close.
    @ivar prefix: put before each message in its reply; may hold the
        placeholders C{{hostname}}, C{{listener}}, C{{peer}} and C{{pid}}
        (the serving process, which tells C{--workers} apart).
    @ivar maxMessage: the largest message accepted, in bytes.
    @ivar idleTimeout: seconds a connection may go without completing a
        message; 0 turns the limit off.
    @ivar maxConnections: most connections open at once; 0 for no limit.
    @ivar maxPerPeer: most connections open at once from one IP address; 0
        for no limit.
    @ivar lingerTimeout: seconds to wait for the client to close after the
        server's last reply (and the grace given to a client that does not
        read its error), before aborting.
    @ivar quiet: no per-connection log events.
    @ivar banner: sent on connect, before anything is read; C{None} for none.
    @ivar delay: seconds to wait before each reply (a timer, never blocking).
    @ivar dropRate: probability that a message is answered by closing the
        connection without a reply.
    @ivar resetRate: probability that a message is answered by resetting
        the connection (RST) without a reply.
    """

    framing: str = "raw"
    keepOpen: bool = False
    prefix: bytes = DEFAULT_PREFIX
    maxMessage: int = DEFAULT_MAX_MESSAGE
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT
    maxConnections: int = DEFAULT_MAX_CONNECTIONS
    maxPerPeer: int = 0
    lingerTimeout: float = DEFAULT_LINGER
    quiet: bool = False
    banner: bytes | None = None
    delay: float = 0.0
    dropRate: float = 0.0
    resetRate: float = 0.0

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"unknown framing {self.framing!r}")
        if self.keepOpen and FRAMINGS[self.framing].needsEndOfInput:
            raise ValueError(f"{self.framing} framing cannot keep the connection open")
        if not 0 <= self.dropRate + self.resetRate <= 1:
            raise ValueError("drop and reset rates must be probabilities that add up to 1 at most")


@dataclass(frozen=True)
class ConnectionRecord:
    """
    What happened on one connection, made when it closes: the connection
    log event and the metrics come from it.

    @ivar outcome: why it ended: C{ok}, C{no-message}, C{too-long},
        C{truncated}, C{idle-timeout}, C{busy}, C{peer-limit}, C{reset} (by
        the client), C{aborted} (the client did not close in time),
        C{shutdown}, C{dropped} or C{reset-injected}.
    """

    peer: str
    listener: str
    framing: str
    messages: int
    bytesIn: int
    bytesOut: int
    duration: float
    outcome: str


def renderProcessTemplate(template: bytes, hostname: bytes, pid: int | None = None) -> bytes:
    """
    Fill in the placeholders that do not depend on a connection
    (C{{hostname}}, C{{pid}}); replies without a connection (UDP) get only
    these.
    """
    if b"{" not in template:
        return template
    return template.replace(b"{hostname}", hostname).replace(
        b"{pid}", str(os.getpid() if pid is None else pid).encode("ascii")
    )


def renderTemplate(
    template: bytes,
    hostname: bytes,
    listener: IAddress | None,
    peer: IAddress | None,
    pid: int | None = None,
) -> bytes:
    """
    Fill in the placeholders of a prefix or banner for one connection.

    Only the placeholders are replaced; any other brace is kept as it is,
    so a prefix never needs escaping.
    """
    if b"{" not in template:
        return template
    return (
        renderProcessTemplate(template, hostname, pid)
        .replace(b"{listener}", describeAddress(listener).encode("utf-8", "backslashreplace"))
        .replace(b"{peer}", hostOf(peer).encode("utf-8", "backslashreplace"))
    )


def _tooLongText(error: MessageTooLong) -> str:
    return f"message too long (limit {error.limit} bytes)"


@implementer(IHalfCloseableProtocol, IPushProducer)
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

    @ivar messages: messages answered on this connection.
    @ivar bytesIn: bytes received.
    @ivar bytesOut: bytes written.
    @ivar outcome: why the conversation ended, or C{None} while it goes on.
    @ivar admitted: whether the connection got past the connection limits.
    """

    log = Logger()
    factory: EchoReplyFactory

    def __init__(self) -> None:
        # Every attribute is set here, always in the same order, so that all
        # connections share one attribute layout: the interpreter's fast
        # paths for attribute access, and key-sharing dictionaries, depend
        # on it (setting only what differs from class-level defaults was
        # measurably slower on the keep-open hot path).
        self.messages = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.outcome: str | None = None
        self.admitted = False
        self.startedAt = 0.0
        # Kept from the start: a closed TCP transport cannot tell them.
        self.peerAddress: IAddress | None = None
        self.hostAddress: IAddress | None = None
        # Watched by the factory's sweep: for the idle timeout while
        # idleWatched, and once the conversation is over, until lingerDeadline.
        self.idleWatched = False
        self.lastMessageAt = 0.0
        self.lingerDeadline = 0.0
        self._framer: Framer | None = None
        self._prefix = b""
        self._done = False
        self._closed = False
        self._producing = False
        self._paused = False
        # Replies waiting for --delay; made only when needed (a deque costs over
        # 600 bytes, a third of an idle connection).
        self._pending: deque[tuple[float, bytes]] | None = None
        self._pendingTimer: IDelayedCall | None = None
        self._closeWhenReplied = False
        self._direct = False
        self._batch = False
        self._delay = 0.0
        self._readClosed = False
        self._writeClosed = False
        self._seconds: Callable[[], float] = time.time

    # Connection lifecycle

    def connectionMade(self) -> None:
        factory = self.factory
        settings = factory.settings
        transport = self.transport
        assert transport is not None
        self.startedAt = factory.clock.seconds()
        self.peerAddress = transport.getPeer()
        if factory.needsLocalAddress:
            # Behind the PROXY protocol getHost() is the load balancer's
            # frontend; {listener} and the logs name this server's own socket.
            self.hostAddress = factory.intern(localAddress(transport))
        self._framer = factory.makeFramer()
        # Every connection that will be reported closed is reported opened,
        # refused ones included, so that observers' counts balance.
        for observer in factory.openedObservers:
            observer()
        refusal = factory.admit(self)
        if refusal is not None:
            outcome, text = refusal
            self.outcome = outcome
            self._done = True
            self.sendError(text)
            transport.loseConnection()
            return
        self.admitted = True
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
            self._producing = True
        # A plain TCP or UNIX socket (not TLS, not a wrapper) can be written
        # to directly; see _write.
        self._direct = isPlainSocket(transport)
        self._prefix = factory.render(settings.prefix, self)
        self._delay = settings.delay
        self._seconds = factory.clock.seconds
        self._batch = settings.keepOpen and not (settings.dropRate or settings.resetRate)
        if settings.banner is not None:
            self._send(self._framer.encode(factory.render(settings.banner, self), b"\n"))
        if settings.idleTimeout > 0:
            self.lastMessageAt = self.startedAt
            self.idleWatched = True
            factory.watch()

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        if self._done:
            # Already said all there is to say: drain and discard.
            return
        assert self._framer is not None
        if self._batch:
            # Keep-open without fault injection: frame, reply and count in
            # one pass over the read (the hot path).
            out, count, error = self._framer.feedReplies(data, self._prefix)
            if count:
                if self.idleWatched:
                    self.lastMessageAt = self._seconds()
                self.messages += count
                if self._delay or self._pending:
                    self._send(out, self._delay)
                else:
                    self.bytesOut += len(out)
                    self._write(out)
            if error is not None and not self._done:
                self._tooLong(error)
            return
        messages, error = self._framer.feedUntilError(data)
        if messages:
            factory = self.factory
            if self.idleWatched:
                self.lastMessageAt = factory.clock.seconds()
            if not factory.settings.keepOpen:
                # One-shot: answer the first message; anything after it is
                # discarded, including a limit overrun later in the read.
                self._answer(messages[:1])
                if not self._done:
                    self._stop("ok")
                return
            self._answer(messages)
        if error is not None and not self._done:
            self._tooLong(error)

    def readConnectionLost(self) -> None:
        """
        The client half-closed: answer what its input completes, then close.
        """
        if not self._done:
            assert self._framer is not None
            try:
                last = self._framer.finish()
            except TruncatedMessage as e:
                self._stop("truncated", str(e))
            except MessageTooLong as e:
                self._stop("too-long", _tooLongText(e))
            else:
                if last is not None:
                    self._answer([last])
                if not self._done:
                    self._stop("ok" if self.messages else "no-message")
        # Nothing more can arrive: close once the replies are written.
        self._readClosed = True
        self._closeWhenReplied = True
        self._closeIfReplied()

    def writeConnectionLost(self) -> None:
        """
        Our half-close went out, so the client has every reply byte: give it
        a fresh linger period to close its side (a slow reader of a large
        reply is not cut off while it is still reading).
        """
        if self.lingerDeadline:
            self.lingerDeadline = self.factory.clock.seconds() + self.factory.settings.lingerTimeout

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self.idleWatched = False
        self.lingerDeadline = 0.0
        timer = self._pendingTimer
        if timer is not None and timer.active():
            timer.cancel()
        self._pendingTimer = None
        self._pending = None
        if self.outcome is None:
            self.outcome = "ok" if reason.check(error.ConnectionDone) else "reset"
        self.factory.connectionClosed(self)

    # IPushProducer: the transport tells us when its write buffer is full.

    def pauseProducing(self) -> None:
        self._paused = True
        assert self.transport is not None
        asStream(self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        assert self.transport is not None
        asStream(self.transport).resumeProducing()

    def stopProducing(self) -> None:
        """
        The connection is going away; connectionLost does the clean-up.
        """

    # Replies

    def _answer(self, messages: list[Message]) -> None:
        """
        Reply to each message, in order, as a single write where possible.
        """
        assert self._framer is not None
        settings = self.factory.settings
        if settings.dropRate or settings.resetRate:
            self._answerWithFaults(messages)
            return
        out = self._framer.encodeReplies(self._prefix, messages)
        self.messages += len(messages)
        self._send(out, settings.delay)

    def _answerWithFaults(self, messages: list[Message]) -> None:
        """
        Fault injection: each message may instead end the connection.
        """
        assert self._framer is not None
        factory = self.factory
        settings = factory.settings
        for message in messages:
            draw = factory.random.random()
            if draw < settings.dropRate:
                self._fault("dropped", reset=False)
                return
            if draw < settings.dropRate + settings.resetRate:
                self._fault("reset-injected", reset=True)
                return
            self.messages += 1
            self._send(self._framer.encodeReplies(self._prefix, [message]), settings.delay)

    def _fault(self, outcome: str, reset: bool) -> None:
        self._done = True
        self.outcome = outcome
        self._pending = None
        transport = self.transport
        assert transport is not None
        self._unregister()
        if reset:
            handle = getattr(transport, "getHandle", None)
            sock = handle() if handle is not None else None
            if isinstance(sock, socket.socket):
                # Linger on, timeout 0: close() sends a RST.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            asStream(transport).abortConnection()
        else:
            transport.loseConnection()

    def _send(self, data: bytes, delay: float = 0.0) -> None:
        """
        Write C{data} now, or after C{delay} seconds, never before what was
        queued earlier.
        """
        self.bytesOut += len(data)
        if not self._pending and delay <= 0:
            self._write(data)
            return
        due = self.factory.clock.seconds() + delay
        if self._pending:
            due = max(due, self._pending[-1][0])
        else:
            self._pending = deque()
        self._pending.append((due, data))
        if self._pendingTimer is None:
            first = self._pending[0][0]
            self._pendingTimer = self.factory.clock.callLater(
                max(0.0, first - self.factory.clock.seconds()), self._sendDue
            )

    def _write(self, data: bytes) -> None:
        """
        Write C{data}; on a plain TCP socket whose write buffer is empty, try
        the socket at once.

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

    def _sendDue(self) -> None:
        self._pendingTimer = None
        now = self.factory.clock.seconds()
        ready = []
        pending = self._pending
        while pending and pending[0][0] <= now:
            ready.append(pending.popleft()[1])
        if ready and self.transport is not None:
            self._write(b"".join(ready))
        if pending:
            self._pendingTimer = self.factory.clock.callLater(pending[0][0] - now, self._sendDue)
        else:
            self._closeIfReplied()

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

    def _tooLong(self, error: MessageTooLong) -> None:
        self._stop("too-long", _tooLongText(error))

    def idleExpired(self) -> None:
        """
        No complete message within the idle timeout (the factory's sweep
        found it): say so and end.
        """
        if not self._done:
            timeout = self.factory.settings.idleTimeout
            self._stop("idle-timeout", f"idle timeout ({timeout:g} s)")

    def shutdown(self) -> None:
        """
        The server is draining: answer nothing more (what was already read
        has its reply, or has it queued), then close as after a last reply.
        """
        if not self._done:
            self._stop("shutdown")

    def _stop(self, outcome: str, errorText: str | None = None) -> None:
        """
        Answer nothing more: send the error, if any, and close the write side
        once every queued reply is written.
        """
        self._done = True
        self.outcome = outcome
        self.idleWatched = False
        if errorText is not None:
            self.sendError(errorText)
        # Bound the wait for the queued replies to flush and for the client
        # to close (the factory's sweep enforces it); restarted once our
        # half-close has gone out.
        linger = self.factory.settings.lingerTimeout
        self.lingerDeadline = self.factory.clock.seconds() + linger + self._queuedFor()
        self.factory.watch()
        self._closeWhenReplied = True
        self._closeIfReplied()

    def _queuedFor(self) -> float:
        if not self._pending:
            return 0.0
        return max(0.0, self._pending[-1][0] - self.factory.clock.seconds())

    def _closeIfReplied(self) -> None:
        """
        If every reply is written and nothing more will be, close our side:
        a half-close where the transport can, else a full close.
        """
        if self._pending or not self._closeWhenReplied or self._closed:
            return
        self._closeWhenReplied = False
        transport = self.transport
        assert transport is not None
        self._unregister()
        if self._readClosed or not canHalfClose(transport):
            transport.loseConnection()
        elif not self._writeClosed:
            self._writeClosed = True
            if not (self._direct and shutDownWriteNow(transport)):
                asStream(transport).loseWriteConnection()

    def _unregister(self) -> None:
        """
        Stop being the transport's producer (before closing), and read again
        if paused, so that the client's close is seen.
        """
        if not self._producing:
            return
        self._producing = False
        transport = asStream(self.transport)
        transport.unregisterProducer()
        if self._paused:
            self._paused = False
            transport.resumeProducing()

    def lingerExpired(self) -> None:
        """
        The client did not close its side in time after the last reply.
        """
        self.lingerDeadline = 0.0
        if self.outcome in (None, "ok", "shutdown"):
            self.outcome = "aborted"
        assert self.transport is not None
        asStream(self.transport).abortConnection()

    def abort(self) -> None:
        """
        Drop the connection now (the drain timeout ran out).
        """
        if self._closed:
            return
        # Whatever the conversation's end was (shutdown, typically), the
        # connection itself ended by force.
        self.outcome = "aborted"
        assert self.transport is not None
        asStream(self.transport).abortConnection()


class EchoReplyFactory(Factory[EchoReplyProtocol]):
    """
    What the connections of one server share: the settings, the clock, the
    connection accounting and the observers of closed connections.

    @ivar settings: the L{ServerSettings}.
    @ivar clock: the time source for timers.
    @ivar connections: the admitted connections now open.
    @ivar observers: called with a L{ConnectionRecord} when a connection
        closes (metrics subscribe here).
    @ivar openedObservers: called with no argument when a connection is
        made (before admission: each is later reported to C{observers}).
    @ivar random: the source of fault-injection draws (seed it in tests).
    """

    noisy = False
    log = Logger()

    def __init__(
        self,
        settings: ServerSettings | None = None,
        clock: IReactorTime | None = None,
        hostname: str | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.settings = settings if settings is not None else ServerSettings()
        self.clock = clock
        self.hostname = (hostname or socket.gethostname()).encode("utf-8", "backslashreplace")
        self.connections: set[EchoReplyProtocol] = set()
        self.observers: list[Callable[[ConnectionRecord], object]] = []
        self.openedObservers: list[Callable[[], object]] = []
        self.random = random.Random()
        self.draining = False
        self.drained = 0
        self.aborted = 0
        self._perPeer: dict[str, int] = {}
        self._draining: set[EchoReplyProtocol] = set()
        self._idleSweep: LoopingCall | None = None
        self._addresses: dict[IAddress, IAddress] = {}
        self._drainDone: Deferred[None] | None = None
        self._drainTimer: IDelayedCall | None = None

    def buildProtocol(self, addr: IAddress | None) -> EchoReplyProtocol:
        protocol = EchoReplyProtocol()
        protocol.factory = self
        return protocol

    @property
    def needsLocalAddress(self) -> bool:
        """
        Whether connections must learn their local address (a system call):
        for the connection log, the observers, or a C{{listener}} template.
        """
        settings = self.settings
        return bool(
            not settings.quiet
            or self.observers
            or b"{listener}" in settings.prefix
            or (settings.banner is not None and b"{listener}" in settings.banner)
        )

    def makeFramer(self) -> Framer:
        """
        A new framer for one connection.
        """
        return makeFramer(self.settings.framing, self.settings.maxMessage)

    def render(self, template: bytes, protocol: EchoReplyProtocol) -> bytes:
        """
        Fill in a template's placeholders for C{protocol}'s connection.
        """
        return renderTemplate(
            template, self.hostname, protocol.hostAddress, protocol.peerAddress
        )

    def intern(self, address: IAddress) -> IAddress:
        """
        One shared object per distinct local address: every connection of a
        listener has the same one, and need not keep its own copy.
        """
        if len(self._addresses) > 1024:  # bounded whatever the host does
            self._addresses.clear()
        return self._addresses.setdefault(address, address)

    # Idle timeout

    def sweepInterval(self) -> float:
        """
        How often the sweep looks for idle and lingering connections: a tenth
        of the idle timeout and of the linger period, at most a second. A
        connection is ended within that long after its time is up.
        """
        settings = self.settings
        periods = [1.0, settings.lingerTimeout / 10]
        if settings.idleTimeout > 0:
            periods.append(settings.idleTimeout / 10)
        return min(periods)

    def watch(self) -> None:
        """
        Make sure the sweep runs while there are connections.

        One timer for all connections, rather than a timer per connection
        reset at every message: a message only notes the time, which is
        cheap at a million messages a second, and a connection costs no timer
        to make or to cancel.
        """
        if self._idleSweep is None:
            sweep = LoopingCall(self._sweep)
            sweep.clock = self.clock
            sweep.start(self.sweepInterval(), now=False)
            self._idleSweep = sweep

    def _sweep(self) -> None:
        now = self.clock.seconds()
        idleDeadline = now - self.settings.idleTimeout
        for protocol in list(self.connections):
            if protocol.idleWatched and protocol.lastMessageAt <= idleDeadline:
                protocol.idleExpired()
            elif protocol.lingerDeadline and protocol.lingerDeadline <= now:
                protocol.lingerExpired()
        self._stopIdleSweepIfUnused()

    def _stopIdleSweepIfUnused(self) -> None:
        if self._idleSweep is not None and not self.connections:
            if self._idleSweep.running:
                self._idleSweep.stop()
            self._idleSweep = None

    # Admission

    def admit(self, protocol: EchoReplyProtocol) -> tuple[str, str] | None:
        """
        Count a new connection in, or say why it is refused: a pair of the
        outcome and the error text.
        """
        settings = self.settings
        if settings.maxConnections and len(self.connections) >= settings.maxConnections:
            return "busy", "server busy"
        key = _peerKey(protocol.peerAddress)
        if key is not None and settings.maxPerPeer:
            if self._perPeer.get(key, 0) >= settings.maxPerPeer:
                return "peer-limit", f"too many connections from {key}"
        if key is not None:
            self._perPeer[key] = self._perPeer.get(key, 0) + 1
        self.connections.add(protocol)
        return None

    def connectionClosed(self, protocol: EchoReplyProtocol) -> None:
        """
        Account for a closed connection, log it and tell the observers.
        """
        if protocol.admitted:
            self.connections.discard(protocol)
            self._stopIdleSweepIfUnused()
            key = _peerKey(protocol.peerAddress)
            if key is not None:
                left = self._perPeer.get(key, 1) - 1
                if left > 0:
                    self._perPeer[key] = left
                else:
                    self._perPeer.pop(key, None)
        if self.settings.quiet and not self.observers:
            self._checkDrained()
            return
        record = ConnectionRecord(
            peer=describeAddress(protocol.peerAddress),
            listener=describeAddress(protocol.hostAddress),
            framing=self.settings.framing,
            messages=protocol.messages,
            bytesIn=protocol.bytesIn,
            bytesOut=protocol.bytesOut,
            duration=max(0.0, self.clock.seconds() - protocol.startedAt),
            outcome=protocol.outcome or "ok",
        )
        if not self.settings.quiet:
            # The text is made here with an f-string and given to the logger
            # as one field: Twisted formats each {field} of a format string
            # in pure Python, which cost ~25 us per connection for eight of
            # them. The fields stay in the event for structured observers.
            self.log.info(
                "Connection closed: {summary}",
                summary=(
                    f"{record.peer} on {record.listener}, {record.outcome}, "
                    f"{record.messages} messages, {record.bytesIn} bytes in, "
                    f"{record.bytesOut} bytes out, {record.duration:.3f} s"
                ),
                event="connection",
                peer=record.peer,
                listener=record.listener,
                framing=record.framing,
                messages=record.messages,
                bytesIn=record.bytesIn,
                bytesOut=record.bytesOut,
                duration=record.duration,
                outcome=record.outcome,
            )
        for observer in self.observers:
            observer(record)
        self._checkDrained()

    # Graceful shutdown

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Stop answering on every connection, let each close cleanly, and
        abort whatever is still open after C{timeout} seconds.

        @return: fires when no connection is left.
        """
        self.draining = True
        open_ = list(self.connections)
        self.drained = self.aborted = 0
        self._draining = set(open_)
        if not open_:
            return succeed(None)
        self._drainDone = Deferred()
        self._drainTimer = self.clock.callLater(timeout, self._drainExpired)
        for protocol in open_:
            protocol.shutdown()
        return self._drainDone

    def _drainExpired(self) -> None:
        self._drainTimer = None
        for protocol in list(self.connections):
            self.aborted += 1
            self._draining.discard(protocol)
            protocol.abort()

    def _checkDrained(self) -> None:
        if self._drainDone is None:
            return
        for protocol in list(self._draining):
            if protocol not in self.connections:
                self._draining.discard(protocol)
                self.drained += 1
        if not self.connections:
            if self._drainTimer is not None and self._drainTimer.active():
                self._drainTimer.cancel()
            self._drainTimer = None
            done, self._drainDone = self._drainDone, None
            done.callback(None)


def _peerKey(peer: object) -> str | None:
    """
    The per-peer limit's key: the client's IP address. Connections without
    one (UNIX sockets) are not limited per peer.
    """
    host = getattr(peer, "host", None)
    return host if isinstance(host, str) else None
