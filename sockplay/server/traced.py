"""
The traced server connection: L{TracedEchoReplyProtocol} records what
happens to its bytes in the server's L{Tracer}, for the playground
(C{--web}) and C{--trace}.

It is a subclass, chosen when the protocol is built (as fault injection
is), so that the plain connection carries no trace checks at all: with
neither C{--web} nor C{--trace}, nothing here runs.

What it records, in order: the connection made; each state it enters;
each chunk C{dataReceived} is given; each message the framing completes
(L{TracingFramer}), and the bytes a partial message holds after a chunk;
each write; the half-close (or close) the server sends; the client's end
of input; the loss of the connection, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from sockplay.framing import Framer, Message, MessageError, MessageTooLong, WrappingFramer
from sockplay.server._twisted import canHalfClose
from sockplay.server.address import describeAddress
from sockplay.server.faults import FaultyEchoReplyProtocol
from sockplay.server.protocol import ConnectionState, EchoReplyProtocol
from sockplay.server.proxy import localAddress
from sockplay.server.trace import ConnectionTrace
from sockplay.server.tracer import Tracer

__all__ = [
    "LightEchoReplyProtocol",
    "LightFaultyEchoReplyProtocol",
    "TracedEchoReplyProtocol",
    "TracedFaultyEchoReplyProtocol",
    "TracingFramer",
    "tracedProtocols",
]

# What a partial message waits for, by framing.
_WAITING = {
    "line": "waiting for LF to end the message",
    "eof": "waiting for the client's end of input to end the message",
    "int32": "waiting for the rest of the length-prefixed frame",
}


class TracingFramer(WrappingFramer):
    """
    A connection's framer that records each message it completes.
    """

    def __init__(self, framer: Framer, tracer: Tracer, trace: ConnectionTrace) -> None:
        super().__init__(framer)
        self._tracer = tracer
        self._trace = trace

    def _completed(self, messages: list[Message], detail: str | None = None) -> None:
        for payload, delimiter in messages:
            self._tracer.message(
                self._trace,
                payload,
                # "ends with \\n": the delimiter escaped, not a bytes literal.
                detail or (f"ends with {repr(delimiter)[2:-1]}" if delimiter else None),
            )

    def feedUntilError(self, data: bytes) -> tuple[list[Message], MessageTooLong | None]:
        messages, error = self._framer.feedUntilError(data)
        self._completed(messages)
        return messages, error

    def feedReplies(
        self, data: bytes, prefix: bytes, limit: int = 0
    ) -> tuple[bytes, int, MessageError | None]:
        """
        As the wrapped framer does; past the tracer's live budget, through
        its own fast path, with the messages only counted.
        """
        if self._tracer.busy():
            out, count, failure = self._framer.feedReplies(data, prefix, limit)
            if count:
                self._tracer.countMessages(self._trace, count)
            return out, count, failure
        return super().feedReplies(data, prefix, limit)

    def finish(self) -> Message | None:
        last = self._framer.finish()
        if last is not None:
            self._completed([last], "ended by the client's end of input")
        return last


class TracedEchoReplyProtocol(EchoReplyProtocol):
    """
    A server connection that records its events in the factory's tracer.

    @ivar trace: its L{ConnectionTrace}, once made.
    """

    trace: ConnectionTrace | None = None
    _state = ConnectionState.ADMITTING

    @property
    def state(self) -> ConnectionState:
        """
        The L{ConnectionState}; each change is recorded.
        """
        return self._state

    @state.setter
    def state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        if self.trace is not None:
            self._tracer.state(self.trace, state.value)

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        tracer = self.factory.tracer
        assert tracer is not None
        self._tracer: Tracer = tracer
        self.trace = _open(self, tracer)
        super().connectionMade()

    def _newFramer(self) -> Framer:
        assert self.trace is not None
        return TracingFramer(super()._newFramer(), self._tracer, self.trace)

    def dataReceived(self, data: bytes) -> None:
        assert self.trace is not None
        tracer = self._tracer
        reading = self.state is ConnectionState.READING
        tracer.record(
            self.trace, "chunk", len(data), data,
            None if reading else f"discarded: the connection is {self.state.value}",
        )
        super().dataReceived(data)
        framer = self._framer
        if self.state is ConnectionState.READING and framer is not None and framer.buffered:
            tracer.record(
                self.trace, "partial", framer.buffered, detail=_WAITING.get(framer.name)
            )

    def readConnectionLost(self) -> None:
        assert self.trace is not None
        self._tracer.record(
            self.trace, "eof", detail="the client sent FIN: no more bytes will come"
        )
        super().readConnectionLost()

    def _write(self, data: bytes) -> None:
        assert self.trace is not None
        self._tracer.record(self.trace, "reply", len(data), data)
        super()._write(data)

    def _closeIfReplied(self) -> None:
        before = self.state
        transport = self.transport
        # What EchoReplyProtocol._closeIfReplied decides, asked before it
        # unregisters (which does not change the answer).
        halfClose = (
            transport is not None
            and not self._readClosed
            and (self._direct or canHalfClose(transport))
        )
        super()._closeIfReplied()
        if before is ConnectionState.REPLYING and self.state is ConnectionState.CLOSING:
            assert self.trace is not None
            if halfClose:
                self._tracer.record(
                    self.trace, "half-close",
                    detail="FIN sent: no more replies; reading until the client closes",
                )
            else:
                self._tracer.record(self.trace, "close", detail="closing both directions")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.trace is not None:
            self._tracer.lost(self.trace, self.outcome, reason.getErrorMessage())


class LightEchoReplyProtocol(EchoReplyProtocol):
    """
    A connection made while the tracer's budget for the second is spent (a
    connection flood): the plain connection, listed in the tracer with its
    counters, state and outcome, recording no event.

    @ivar trace: its L{ConnectionTrace}, once made.
    """

    trace: ConnectionTrace | None = None

    def connectionMade(self) -> None:
        tracer = self.factory.tracer
        assert tracer is not None
        self.trace = _open(self, tracer, light=True)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        tracer = self.factory.tracer
        if self.trace is not None and tracer is not None:
            tracer.lost(self.trace, self.outcome, reason.getErrorMessage())


class LightFaultyEchoReplyProtocol(FaultyEchoReplyProtocol, LightEchoReplyProtocol):
    """
    A light connection (L{LightEchoReplyProtocol}) with faults.
    """


def _open(
    protocol: EchoReplyProtocol, tracer: Tracer, light: bool = False
) -> ConnectionTrace:
    """
    Start the trace of C{protocol}'s connection, just made.
    """
    transport = protocol.transport
    assert transport is not None
    listener = describeAddress(localAddress(transport), ISSLTransport.providedBy(transport))
    return tracer.opened(
        transport.getPeer(), listener, protocol.factory.settings.framing, protocol, light
    )


def tracedProtocols(tracer: Tracer, faults: bool) -> Callable[[], EchoReplyProtocol]:
    """
    What builds a server's connections while C{tracer} traces them: a
    traced connection, or a light one while the tracer is L{busy
    <Tracer.busy>}.

    @param faults: the connections inject faults.
    """
    full: type[EchoReplyProtocol] = (
        TracedFaultyEchoReplyProtocol if faults else TracedEchoReplyProtocol
    )
    light: type[EchoReplyProtocol] = (
        LightFaultyEchoReplyProtocol if faults else LightEchoReplyProtocol
    )

    def build() -> EchoReplyProtocol:
        return light() if tracer.busy() else full()

    return build


class TracedFaultyEchoReplyProtocol(FaultyEchoReplyProtocol, TracedEchoReplyProtocol):
    """
    A traced connection with faults: the faults' framer wraps the tracing
    one, so that a message that draws a fault is recorded too, and a
    delayed reply is recorded when it is written.
    """
