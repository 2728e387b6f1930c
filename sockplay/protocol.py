"""
The echo-reply server: a L{Protocol} per connection and the L{Factory} that
holds what the connections share.

Every message (as the factory's framing defines it) gets one reply: the
prefix, then the message's bytes, framed the same way. By default the server
answers one message and closes, as the socket tutorial does; with
C{keepOpen} it answers every message, in order, until the client closes.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay._transport import canHalfClose
from sockplay.framing import (
    DEFAULT_MAX_MESSAGE,
    FRAMINGS,
    Framer,
    Message,
    MessageTooLong,
    TruncatedMessage,
    makeFramer,
)

__all__ = [
    "DEFAULT_PREFIX",
    "EchoReplyFactory",
    "EchoReplyProtocol",
]

# The tutorial's reply prefix.
DEFAULT_PREFIX = b"Message received: "


def _tooLongText(error: MessageTooLong) -> str:
    return f"message too long (limit {error.limit} bytes)"


@implementer(IHalfCloseableProtocol)
class EchoReplyProtocol(Protocol):
    """
    One client connection: frame its input, answer each message.

    Once it has nothing more to say (one-shot reply sent, or an error), it
    half-closes its write side instead of closing outright, discards whatever
    the client still sends, and closes when the client does. Closing a socket
    with unread input makes the kernel send a RST, which can destroy a reply
    that the client has not read yet.

    @cvar lingerTimeout: seconds to wait, after half-closing, for the client
        to close its side before the connection is aborted. Short, because a
        well-behaved client closes as soon as it has read its reply.
    @ivar messages: messages answered on this connection.
    @ivar bytesIn: bytes received.
    @ivar bytesOut: bytes written.
    @ivar outcome: why the conversation ended (C{"ok"}, C{"too-long"},
        C{"truncated"}, ...), or C{None} while it goes on.
    """

    lingerTimeout = 5.0

    log = Logger()
    factory: EchoReplyFactory

    def __init__(self) -> None:
        self.messages = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.outcome: str | None = None
        self._framer: Framer | None = None
        self._done = False
        self._linger: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._framer = self.factory.makeFramer()

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        if self._done:
            # Already said all there is to say: drain and discard.
            return
        assert self._framer is not None
        messages, error = self._framer.feedUntilError(data)
        if not self.factory.keepOpen and messages:
            # One-shot: answer the first message; anything after it is
            # discarded, including a limit overrun later in the same read.
            self._reply(messages[:1])
            self._finish("ok")
            return
        if messages:
            self._reply(messages)
        if error is not None:
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
                self.outcome = "truncated"
                self.sendError(str(e))
            except MessageTooLong as e:
                self.outcome = "too-long"
                self.sendError(_tooLongText(e))
            else:
                if last is not None:
                    self._reply([last])
                self.outcome = "ok" if self.messages else "no-message"
            self._done = True
        # Both directions are finished once what is buffered is written.
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our half-close went out, so the client has every reply byte: give it
        a fresh L{lingerTimeout} to close its side (a slow reader of a large
        reply is not cut off while it is still reading).
        """
        if self._linger is not None and self._linger.active():
            self._linger.reset(self.lingerTimeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        if self.outcome is None:
            self.outcome = "closed"

    def _reply(self, messages: list[Message]) -> None:
        """
        Write one reply per message, as a single write.
        """
        assert self._framer is not None and self.transport is not None
        prefix = self.factory.prefix
        encode = self._framer.encode
        if len(messages) == 1:
            payload, delimiter = messages[0]
            out = encode(prefix + payload, delimiter)
        else:
            out = b"".join([encode(prefix + payload, delimiter) for payload, delimiter in messages])
        self.messages += len(messages)
        self.bytesOut += len(out)
        self.transport.write(out)

    def _tooLong(self, error: MessageTooLong) -> None:
        """
        A message went past the limit: say so, framed, and end.
        """
        self.log.info(
            "Message from {peer} exceeds {limit} bytes; closing",
            peer=str(self.transport.getPeer()) if self.transport else None,
            limit=error.limit,
        )
        self.sendError(_tooLongText(error))
        self._finish("too-long")

    def sendError(self, text: str) -> None:
        """
        Send C{Error: <text>} framed in this connection's framing.

        In C{raw} and C{eof} framing, which have no delimiter, the error text
        ends with a newline so that it reads well in a terminal.
        """
        assert self._framer is not None and self.transport is not None
        body = b"Error: " + text.encode("utf-8")
        if self._framer.name in ("raw", "eof"):
            body += b"\n"
        out = self._framer.encode(body, b"\n")
        self.bytesOut += len(out)
        self.transport.write(out)

    def _finish(self, outcome: str) -> None:
        """
        Stop answering: half-close the write side once the replies are
        flushed, discard further input, and close when the client does, or
        after L{lingerTimeout}.
        """
        self._done = True
        self.outcome = outcome
        transport = self.transport
        assert transport is not None
        if canHalfClose(transport):
            cast(ITCPTransport, transport).loseWriteConnection()
            self._linger = self.factory.clock.callLater(
                self.lingerTimeout, self._lingerExpired
            )
        else:
            # TLS and other wrappers cannot half-close: close after the flush.
            transport.loseConnection()

    def _lingerExpired(self) -> None:
        self._linger = None
        assert self.transport is not None
        cast(ITCPTransport, self.transport).abortConnection()


class EchoReplyFactory(Factory[EchoReplyProtocol]):
    """
    What every connection of one server shares: the framing, the lifecycle,
    the reply prefix, the limits and the clock.

    @ivar framing: a key of L{sockplay.framing.FRAMINGS}.
    @ivar keepOpen: answer every message until the client closes, instead of
        one message and close.
    @ivar prefix: the bytes put before each message in its reply.
    @ivar maxMessage: the largest message accepted, in bytes.
    @ivar clock: the time source for timers.
    """

    noisy = False

    def __init__(
        self,
        framing: str = "raw",
        keepOpen: bool = False,
        prefix: bytes = DEFAULT_PREFIX,
        maxMessage: int = DEFAULT_MAX_MESSAGE,
        clock: IReactorTime | None = None,
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}")
        if keepOpen and FRAMINGS[framing].needsEndOfInput:
            raise ValueError(f"{framing} framing cannot keep the connection open")
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.framing = framing
        self.keepOpen = keepOpen
        self.prefix = prefix
        self.maxMessage = maxMessage
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> EchoReplyProtocol:
        protocol = EchoReplyProtocol()
        protocol.factory = self
        return protocol

    def makeFramer(self) -> Framer:
        """
        A new framer for one connection.
        """
        return makeFramer(self.framing, self.maxMessage)
