"""
C{--websocket ENDPOINT}: the echo-reply server over WebSocket (RFC 6455),
on Twisted's C{twisted.web.websocket}.

Each WebSocket message is a message: a text message gets a text reply, a
binary message a binary one, the reply being the rendered C{--prefix} and
the message. A WebSocket stays open: every message is answered until the
client closes, whatever C{--keep-open} says (it is about TCP, where a
message's end and the conversation's can be the same thing).

The HTTP side (the upgrade, the frame headers read before Twisted buffers
a message, the throttle on the wire) is L{sockplay.server.websocketsite}.

A WebSocket connection is one of the server's connections like any other
(as C{--info}'s are): L{WebSocketEchoProtocol} is an
L{EchoReplyProtocol} built by L{WebSocketOwner} on behalf of the server's
L{EchoReplyFactory}, which admits it (C{--max-connections},
C{--max-per-peer}: a client over a limit gets C{503} before the upgrade),
sweeps it (C{--idle-timeout}, the linger), drains it, logs it and counts
it in the metrics. What differs is at its edges: messages arrive whole
from the WebSocket, not as bytes to frame; a message over C{--max-message}
is refused from its frame headers (L{FrameScanner}) with close code 1009
before it is buffered; and the conversation ends with a close frame, not
a half-close.

The closing codes: 1000 when the server ends the conversation otherwise
(the idle timeout, with its reason), 1009 for a message too long, 1001
(going away) at the end of a drain. A drain lets open WebSockets go on
being answered for C{--drain-timeout}, then closes them.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, cast

from twisted.internet import error
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.websocket import WebSocketTransport

from sockplay.framing import MessageTooLong
from sockplay.server._twisted import asStream
from sockplay.server.factory import EchoReplyFactory, OwnerOnBehalf
from sockplay.server.protocol import ConnectionState, EchoReplyProtocol
from sockplay.server.proxy import localAddress

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_TOO_BIG",
    "WebSocketEchoProtocol",
    "WebSocketOwner",
]

# The close codes (RFC 6455, section 7.4.1) the server ends with.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
_CLOSE_CODES = {"too-long": CLOSE_TOO_BIG, "shutdown": CLOSE_GOING_AWAY}
# A close frame's reason fits in a control frame's 125 bytes, after the code.
_MAX_REASON = 123

_READING = ConnectionState.READING
_REPLYING = ConnectionState.REPLYING
_CLOSING = ConnectionState.CLOSING


class WebSocketEchoProtocol(EchoReplyProtocol):
    """
    One WebSocket connection of the echo-reply server, from the upgrade
    request on: admitted when the request arrives (L{connectionMade}, its
    transport the connection's guard in L{sockplay.server.websocketsite}),
    then answering each message
    (L{textMessageReceived}, L{bytesMessageReceived}) through the
    WebSocket until the client closes.

    Its counters are a WebSocket's: C{bytesIn} and C{bytesOut} count
    message payloads, not frames.

    @ivar closeCode: the close code the server ends with, once it does.
    """

    factory: WebSocketOwner

    def __init__(self) -> None:
        super().__init__()
        self._ws: WebSocketTransport | None = None
        self._textPrefix = ""
        self._closeReason = ""
        self.closeCode = CLOSE_NORMAL
        # Faults: replies held back by a delay (oldest first) and when the
        # last is due; a stalled connection answers nothing more; the cut.
        self._delayed: list[IDelayedCall] = []
        self._lastDue = 0.0
        self._stalled = False
        self._cutCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """
        The upgrade request arrived: count the connection in (or note why it
        is refused, for the resource to answer), and get ready to answer.
        """
        factory = self.factory
        transport = self.transport
        assert transport is not None
        self._seconds = factory.clock.seconds
        startedAt = getattr(transport, "startedAt", None)
        self.startedAt = self.lastMessageAt = startedAt or self._seconds()
        self.peerAddress = transport.getPeer()
        if factory.needsLocalAddress:
            self.hostAddress = factory.intern(localAddress(transport))
            self.overTLS = ISSLTransport.providedBy(transport)
        refusal = factory.admit(self)
        if refusal is not None:
            self.state = ConnectionState.REFUSED
            self.outcome, self.detail = refusal
            return
        self.state = _READING
        self._prefix = factory.render(factory.settings.prefix, self)
        self._textPrefix = self._prefix.decode("utf-8", "replace")
        if factory.settings.idleTimeout > 0:
            factory.watch()
        cutAfter = factory.server.faults.cutAfter
        if cutAfter:
            self._cutCall = factory.clock.callLater(cutAfter, self._cut)

    def refused(self) -> None:
        """
        The upgrade was refused (over a limit, or a bad handshake): the
        connection is over as far as the server's accounting goes.
        """
        self.connectionLost(Failure(connectionDone.value))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The connection is gone. An upgraded WebSocket is no health check
        (the upgrade request was its first bytes): one that ends without a
        message is C{ok} if it closed cleanly, else C{reset}.
        """
        if self.outcome is None:
            self.outcome = "ok" if isinstance(reason.value, error.ConnectionDone) else "reset"
        for call in [*self._delayed, self._cutCall]:
            if call is not None and call.active():
                call.cancel()
        self._delayed.clear()
        self._cutCall = None
        super().connectionLost(reason)

    # WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self._ws = transport

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        """
        A text message: answer it with a text message.
        """
        if self.state is _READING:
            self._answer(message.encode("utf-8"), message)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        """
        A binary message: answer it with a binary message.
        """
        if self.state is _READING:
            self._answer(bytes(data), None)

    def _answer(self, payload: bytes, text: str | None) -> None:
        """
        Count a message in and answer it: at once, or as the faults in force
        say (L{sockplay.server.faultsettings.Faults}, read for each message).

        @param text: the message as text, for a text message; C{None} for a
            binary one.
        """
        self.messages += 1
        self.bytesIn += len(payload)
        self.lastMessageAt = self._seconds()
        if self._stalled:
            return
        faults = self.factory.server.faults
        if not faults.active:
            self._sendReply(payload, text)
            return
        kind = faults.draw(self.factory.random)
        if kind is not None:
            self._injectFault(kind, payload, text)
            return
        delay = faults.replyDelay(self.factory.random)
        if delay <= 0 and not self._delayed:
            self._sendReply(payload, text)
            return
        self._injected("delay")
        # Never before an earlier reply: replies keep their order.
        clock = self.factory.clock
        due = max(clock.seconds() + delay, self._lastDue)
        self._lastDue = due
        call = clock.callLater(due - clock.seconds(), self._sendDelayed, payload, text)
        self._delayed.append(call)

    def _sendDelayed(self, payload: bytes, text: str | None) -> None:
        self._delayed.pop(0)
        if self.state is _READING:
            self._sendReply(payload, text)
        elif self.state is _REPLYING:
            # The conversation ended meanwhile (the drain's end): its last
            # replies still go out before the close.
            self._sendReply(payload, text)
            self._closeIfReplied()

    def _sendReply(self, payload: bytes, text: str | None) -> None:
        """
        Send one message's reply, of the message's kind.
        """
        assert self._ws is not None
        if self.factory.server.faults.throttle:
            self._injected("throttle")
        if text is not None:
            reply = self._textPrefix + text
            self.bytesOut += len(reply.encode("utf-8"))
            self._ws.sendTextMessage(reply)
        else:
            data = self._prefix + payload
            self.bytesOut += len(data)
            self._ws.sendBytesMessage(data)

    def _injectFault(self, kind: str, payload: bytes, text: str | None) -> None:
        """
        Answer a message with the fault it drew instead of its reply: drop
        (a close, code 1000, without a reply), reset (the TCP connection
        reset), truncate (the first half of the reply's bytes as a binary
        message, then the close), stall (no reply, then or later: the
        connection is held until the client gives up or the idle timeout
        ends it).
        """
        self._injected(kind)
        if kind == "stall":
            self._stalled = True
            return
        if kind == "reset":
            self.outcome = "reset-injected"
            self._reset()
            return
        if kind == "truncate":
            assert self._ws is not None
            reply = self._prefix + payload if text is None else (self._textPrefix + text).encode()
            half = reply[: len(reply) // 2]
            self.bytesOut += len(half)
            self._ws.sendBytesMessage(half)
            self._stop("truncated-reply")
            return
        self._stop("dropped")

    def _injected(self, kind: str, count: int = 1) -> None:
        """
        Tell the server's observers (C{sockplay_faults_injected_total}) that
        C{count} faults of C{kind} were injected, as its TCP connections do.
        """
        for observer in self.factory.server.injectedObservers:
            observer(kind, count)

    def _reset(self) -> None:
        """
        Reset the TCP connection (RST): an abort with a zero linger.
        """
        transport = self.transport
        handle = getattr(transport, "getHandle", None)
        sock = handle() if handle is not None else None
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        asStream(transport).abortConnection()

    def _cut(self) -> None:
        """
        C{cutAfter} seconds since the connection opened: abort it, whatever
        it is doing.
        """
        self._cutCall = None
        if self.state is not ConnectionState.CLOSED:
            self.outcome = "cut"
            self._injected("cut")
            self._reset()

    def idleExpired(self) -> None:
        if self._stalled and self.state is _READING:
            timeout = self.factory.settings.idleTimeout
            self._stop("stalled", f"idle timeout ({timeout:g} s)")
            return
        super().idleExpired()

    def dataReceived(self, data: bytes) -> None:
        # Bytes reach the WebSocket, never this protocol.
        raise NotImplementedError("a WebSocket connection receives messages, not bytes")

    # Ending the conversation: a close frame instead of a half-close.

    def messageTooLong(self) -> None:
        """
        A frame header announced a message over C{--max-message}: close with
        code 1009.
        """
        if self.state is _READING:
            self.messageFailed(MessageTooLong(self.factory.settings.maxMessage))

    def sendError(self, text: str) -> None:
        """
        The reason the server ends the conversation goes in its close frame.
        """
        self._closeReason = text

    def shutdown(self) -> None:
        """
        The drain began: a WebSocket goes on being answered until the drain
        ends (L{abort}) or its client closes.
        """

    def abort(self) -> None:
        """
        The drain's time is up: close with code 1001 (going away), and let
        the linger bound the wait for the client's close.
        """
        if self.state is _READING and self._ws is not None:
            self._stop("shutdown", "the server is shutting down")
        elif self.state is not ConnectionState.CLOSED:
            super().abort()

    def _hasQueued(self) -> bool:
        return bool(self._delayed)

    def _queuedFor(self) -> float:
        if not self._delayed:
            return 0.0
        return max(0.0, self._lastDue - self.factory.clock.seconds())

    def _closeIfReplied(self) -> None:
        if self.state is not _REPLYING or self._delayed:
            return
        self.state = _CLOSING
        self.closeCode = _CLOSE_CODES.get(self.outcome or "", CLOSE_NORMAL)
        reason = self._closeReason.encode("utf-8")[:_MAX_REASON].decode("utf-8", "ignore")
        if self._ws is not None:
            cast(Any, self._ws).loseConnection(self.closeCode, reason)
        else:
            assert self.transport is not None
            self.transport.loseConnection()


class WebSocketOwner(OwnerOnBehalf):
    """
    The owner of the WebSocket connections: builds L{WebSocketEchoProtocol}s
    on behalf of the server's L{EchoReplyFactory}, which counts them against
    its limits, sweeps, drains, logs and measures them as its own. Only
    what a WebSocket does differently is its own: no banner, no framing
    (every message is whole), every message answered.
    """

    def __init__(self, server: EchoReplyFactory) -> None:
        super().__init__(server, framing="raw", keepOpen=False, banner=None)

    def buildProtocol(self, addr: IAddress | None) -> WebSocketEchoProtocol:
        protocol = WebSocketEchoProtocol()
        protocol.factory = self
        return protocol
