"""
Fault injection for a test endpoint: C{--delay} and C{--jitter},
C{--drop-rate}, C{--reset-rate}, C{--truncate-rate}, C{--stall-rate},
C{--cut-after} and C{--throttle}.

L{FaultyEchoReplyProtocol} is the server connection with faults added; the
factory builds it instead of the plain L{EchoReplyProtocol} only when a
fault is asked for, or may be while the server runs, so that the plain path
carries no fault checks. It reads the faults in force (the factory's
L{Faults}) for each message, so that a change applies to the messages read
after it. The per-message faults (drop, reset, truncate, stall) are drawn
by L{FaultyFramer}, which wraps the connection's framer: a message that
draws one ends the framing there, as an over-long message would, with an
L{InjectedFault} instead of a reply.

What a client sees, and the connection's outcome (its log line, and the
label of C{sockplay_connections_total}):

  - delay, jitter: each reply comes late (no outcome of its own);
  - drop: no reply, a close (C{dropped});
  - reset: no reply, a reset (C{reset-injected});
  - truncate: the first half of the message's reply, then a close
    (C{truncated-reply});
  - stall: no reply, ever; what the client sends next is read and
    discarded, and the connection is held (a half-close does not end it)
    until the idle timeout, counted from the stalled message, closes it
    without an error, or the client resets it (C{stalled});
  - cut: a reset, C{cutAfter} seconds after the connection opened, whatever
    it was doing (C{cut});
  - throttle: replies come at most C{throttle} bytes a second, after a
    first burst of a tenth of a second's worth (no outcome of its own).

Each injection is told to the factory's C{injectedObservers} (the metrics'
C{sockplay_faults_injected_total{kind}}) under one of L{INJECTED_KINDS}.
"""

from __future__ import annotations

import math
import socket
import struct
from collections import deque
from random import Random
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from sockplay.framing import Framer, Message, MessageError, WrappingFramer
from sockplay.server._twisted import asStream
from sockplay.server.faultsettings import Faults
from sockplay.server.protocol import ConnectionState, EchoReplyProtocol

__all__ = ["INJECTED_KINDS", "FaultyEchoReplyProtocol", "FaultyFramer", "InjectedFault"]

# The kinds of fault counted by sockplay_faults_injected_total: delay and
# throttle once per message whose reply they hold back, the others once per
# connection they end.
INJECTED_KINDS = ("delay", "drop", "reset", "truncate", "stall", "cut", "throttle")

# A throttled connection may send this share of a second's bytes at once (a
# token bucket's size): a small reply goes out whole, a large one in chunks
# ten times a second.
_BURST_SECONDS = 0.1

# The outcome of each per-message fault.
_OUTCOMES = {
    "drop": "dropped",
    "reset": "reset-injected",
    "truncate": "truncated-reply",
    "stall": "stalled",
}

_READING = ConnectionState.READING
_CLOSING = ConnectionState.CLOSING
_CLOSED = ConnectionState.CLOSED


class InjectedFault(MessageError):
    """
    A message drew a fault: it gets no reply (or part of one, when
    truncated), and the connection ends, or, when stalled, says nothing
    more.

    @ivar kind: the fault: C{drop}, C{reset}, C{truncate} or C{stall}.
    @ivar outcome: the connection's outcome: C{dropped}, C{reset-injected},
        C{truncated-reply} or C{stalled}.
    @ivar reset: end with a reset (RST) rather than a close.
    @ivar message: the message that drew it (whose reply a truncation cuts).
    """

    def __init__(self, kind: str, message: Message | None = None) -> None:
        outcome = _OUTCOMES[kind]
        super().__init__(outcome)
        self.kind = kind
        self.outcome = outcome
        self.reset = kind == "reset"
        self.message = message


class FaultSource(Protocol):
    """
    Where a connection reads the faults in force: its factory.
    """

    faults: Faults


class FaultyFramer(WrappingFramer):
    """
    A connection's framer as fault injection sees it: each message that the
    wrapped framer completes may draw a fault instead of a reply, by the
    faults in force when it is read. Once L{stall}ed, it completes no
    message: whatever arrives is discarded.
    """

    def __init__(self, framer: Framer, random: Random, source: FaultSource) -> None:
        super().__init__(framer)
        self._random = random
        self._source = source
        self._stalled = False

    def stall(self) -> None:
        """
        Complete no more messages: the connection answers nothing more.
        """
        self._stalled = True

    def _draw(self, message: Message) -> InjectedFault | None:
        """
        Draw one message's fate: a fault, or C{None} for a reply.
        """
        kind = self._source.faults.draw(self._random)
        if kind is None:
            return None
        return InjectedFault(kind, message)

    def feedReplies(
        self, data: bytes, prefix: bytes, limit: int = 0
    ) -> tuple[bytes, int, MessageError | None]:
        if self._stalled:
            return b"", 0, None
        if not self._source.faults.drawn:
            # Nothing to draw: the wrapped framer's own (fast) path.
            return self._framer.feedReplies(data, prefix, limit)
        messages, error = self._framer.feedUntilError(data)
        failure: MessageError | None = error
        if limit and len(messages) >= limit:
            messages, failure = messages[:limit], None
        for index, message in enumerate(messages):
            fault = self._draw(message)
            if fault is not None:
                messages, failure = messages[:index], fault
                break
        if not messages:
            return b"", 0, failure
        return self.encodeReplies(prefix, messages), len(messages), failure

    def finish(self) -> Message | None:
        if self._stalled:
            return None
        last = self._framer.finish()
        if last is not None:
            fault = self._draw(last)
            if fault is not None:
                raise fault
        return last


class FaultyEchoReplyProtocol(EchoReplyProtocol):
    """
    A server connection with faults: each reply waits the delay in force
    when it is written (a timer, never blocking, and never before an
    earlier reply), and goes out no faster than the throttle in force; each
    message may be answered by a close (drop), a reset, part of its reply
    and a close (truncate), or nothing ever (stall); and the connection is
    reset C{cutAfter} seconds after it opened.
    """

    def __init__(self) -> None:
        super().__init__()
        # Replies waiting for their time, oldest first, with when each is due.
        self._pending: deque[tuple[float, bytes]] = deque()
        self._pendingTimer: IDelayedCall | None = None
        # Bytes due but held back by the throttle, and the timer that
        # releases the next chunk of them.
        self._held = bytearray()
        self._heldTimer: IDelayedCall | None = None
        # The throttle's token bucket: bytes that may go out now, as of
        # when; full (a burst's worth) until first used.
        self._allowance = math.inf
        self._allowanceAt = 0.0
        # The timer that cuts the connection (cutAfter).
        self._cutTimer: IDelayedCall | None = None
        # Messages whose replies were counted as delayed or throttled.
        self._accounted = 0

    def _newFramer(self) -> Framer:
        return FaultyFramer(super()._newFramer(), self.factory.random, self.factory)

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.admitted:
            self.rearmCut()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for timer in (self._pendingTimer, self._heldTimer, self._cutTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._pendingTimer = self._heldTimer = self._cutTimer = None
        self._pending.clear()
        self._held.clear()
        super().connectionLost(reason)

    def _injected(self, kind: str, count: int = 1) -> None:
        """
        Tell the factory's observers that C{count} faults of C{kind} (one of
        L{INJECTED_KINDS}) were injected.
        """
        for observer in self.factory.injectedObservers:
            observer(kind, count)

    # Per-message faults

    def messageFailed(self, failure: MessageError) -> None:
        if not isinstance(failure, InjectedFault):
            super().messageFailed(failure)
            return
        self._injected(failure.kind)
        if failure.kind == "truncate":
            self._truncate(failure.message)
        elif failure.kind == "stall":
            self._stall()
        else:
            self._end(failure.outcome, failure.reset)

    def _truncate(self, message: Message | None) -> None:
        """
        Send the first half of C{message}'s reply (rounded down: a reply of
        one byte gets none), after the replies before it, then close.
        """
        assert self._framer is not None and message is not None
        reply = self._framer.encodeReplies(self._prefix, [message])
        self._send(reply[: len(reply) // 2])
        self._stop("truncated-reply")

    def _stall(self) -> None:
        """
        Answer nothing more: discard what arrives, and let the idle timeout,
        counted from this message, end the connection (see L{_stop}).
        """
        assert isinstance(self._framer, FaultyFramer)
        self._framer.stall()
        self.outcome = "stalled"
        self.lastMessageAt = self._seconds()

    def readConnectionLost(self) -> None:
        """
        The client half-closed. A stalled connection is held all the same:
        a client that half-closes after its message (C{nc -N}) still waits
        for the reply, as a stalled server should make it; the idle timeout
        ends it.
        """
        if self.outcome == "stalled" and self.state is _READING:
            self._readClosed = True
            return
        super().readConnectionLost()

    def _stop(self, outcome: str, errorText: str | None = None) -> None:
        # A stalled connection answers nothing, not even the idle timeout's
        # error, and ends as stalled whatever ends it (the idle timeout, a
        # drain).
        if self.outcome == "stalled" and self.state is _READING:
            if self._readClosed and errorText is None and outcome != "shutdown":
                # The end of input that completed the stalled message (eof
                # framing): held, as after any other stalled message.
                return
            outcome, errorText = "stalled", None
        super()._stop(outcome, errorText)

    def _end(self, outcome: str, reset: bool) -> None:
        """
        End the connection now, with C{outcome}: a reset (RST), or a close;
        replies still held back are never sent.
        """
        self.state = _CLOSING
        self.outcome = outcome
        self.lingerDeadline = 0.0
        self.delivering = False
        self._pending.clear()
        self._held.clear()
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

    # Cut after

    def rearmCut(self) -> None:
        """
        Set the cut for C{cutAfter} seconds (the value in force) after the
        connection opened: at once if that is past; none if it is 0. Called
        when the connection is admitted, and again when the faults change.
        """
        timer, self._cutTimer = self._cutTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        cutAfter = self.factory.faults.cutAfter
        if not cutAfter or not self.admitted:
            return
        clock = self.factory.clock
        wait = max(0.0, self.startedAt + cutAfter - clock.seconds())
        self._cutTimer = clock.callLater(wait, self._cut)

    def _cut(self) -> None:
        """
        The connection's time is up: reset it, whatever it was doing.
        """
        self._cutTimer = None
        if self.state is _CLOSED:
            return
        self._injected("cut")
        self._end("cut", reset=True)

    # Delay and throttle

    def _write(self, data: bytes) -> None:
        """
        Write C{data} after the delay, never before what was queued earlier,
        and no faster than the throttle.
        """
        factory = self.factory
        faults = factory.faults
        if not faults.active and not self._pending and not self._held:
            # No fault in force, nothing held back: as the plain connection.
            self._accounted = self.messages
            super()._write(data)
            return
        delay = faults.replyDelay(factory.random)
        replies = self.messages - self._accounted
        if replies:
            self._accounted = self.messages
            if delay > 0:
                self._injected("delay", replies)
            if faults.throttle:
                self._injected("throttle", replies)
        if not self._pending and delay <= 0:
            self._throttle(data)
            return
        clock = factory.clock
        due = clock.seconds() + delay
        if self._pending:
            due = max(due, self._pending[-1][0])
        self._pending.append((due, data))
        if self._pendingTimer is None:
            first = self._pending[0][0]
            self._pendingTimer = clock.callLater(max(0.0, first - clock.seconds()), self._sendDue)

    def _sendDue(self) -> None:
        self._pendingTimer = None
        clock = self.factory.clock
        now = clock.seconds()
        ready = []
        pending = self._pending
        while pending and pending[0][0] <= now:
            ready.append(pending.popleft()[1])
        if ready and self.transport is not None:
            self._throttle(b"".join(ready))
        if pending:
            self._pendingTimer = clock.callLater(pending[0][0] - now, self._sendDue)
        else:
            self._closeIfReplied()

    def _throttle(self, data: bytes) -> None:
        """
        Write C{data}, which is due, now if no throttle holds it back, else
        as the throttle allows, after what it already holds.
        """
        if not self._held and not self.factory.faults.throttle:
            # Past this class's own _write, which would delay it again.
            super()._write(data)
            return
        self._held += data
        if self._heldTimer is None:
            self._release()

    def _release(self) -> None:
        """
        Write as much of the held bytes as the throttle in force allows now
        (all of them if it is 0), and set a timer for the rest.
        """
        self._heldTimer = None
        held = self._held
        if not held or self.transport is None:
            return
        clock = self.factory.clock
        now = clock.seconds()
        rate = self.factory.faults.throttle
        if not rate:
            size = len(held)
        else:
            burst = max(1.0, rate * _BURST_SECONDS)
            self._allowance = min(burst, self._allowance + (now - self._allowanceAt) * rate)
            self._allowanceAt = now
            # (A hair's allowance: a timer may fire a rounding error early.)
            size = min(len(held), int(self._allowance + 1e-6))
            self._allowance -= size
        if size:
            chunk = bytes(held[:size])
            del held[:size]
            super()._write(chunk)
        if held:
            # Until the bucket holds the next chunk: a burst, or the rest.
            burst = max(1.0, rate * _BURST_SECONDS)
            wait = (min(burst, len(held)) - self._allowance) / rate
            self._heldTimer = clock.callLater(max(0.0, wait), self._release)
        elif not self._pending:
            self._closeIfReplied()

    def _queuedFor(self) -> float:
        wait = 0.0
        if self._pending:
            wait = max(0.0, self._pending[-1][0] - self.factory.clock.seconds())
        rate = self.factory.faults.throttle
        if rate:
            # What is held now, and what the delayed replies will add.
            queued = len(self._held) + sum(len(data) for _, data in self._pending)
            wait += queued / rate
        return wait

    def _hasQueued(self) -> bool:
        return bool(self._pending or self._held)

    def checkDelivery(self) -> None:
        """
        While replies are held back (delayed or throttled), the client
        cannot be blamed for not reading them: the linger period counts
        from when the last of them is due.
        """
        if self._hasQueued():
            self.lingerDeadline = max(
                self.lingerDeadline,
                self._seconds() + self.factory.settings.lingerTimeout + self._queuedFor(),
            )
            return
        super().checkDelivery()
