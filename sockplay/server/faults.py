"""
Fault injection for a test endpoint: C{--delay}, C{--drop-rate} and
C{--reset-rate}.

L{FaultyEchoReplyProtocol} is the server connection with faults added; the
factory builds it instead of the plain L{EchoReplyProtocol} only when a
fault is asked for, or may be while the server runs, so that the plain path
carries no fault checks. It reads the faults in force (the factory's
L{Faults}) for each message, so that a change applies to the messages read
after it. Drops and resets are drawn per message by L{FaultyFramer}, which
wraps the connection's framer: a message that draws a fault ends the
framing there, as an over-long message would, with an L{InjectedFault}
instead of a reply.
"""

from __future__ import annotations

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

__all__ = ["FaultyEchoReplyProtocol", "FaultyFramer", "InjectedFault"]


class InjectedFault(MessageError):
    """
    A message drew a fault: it gets no reply, and the connection ends.

    @ivar outcome: the connection's outcome: C{dropped} or C{reset-injected}.
    @ivar reset: end with a reset (RST) rather than a close.
    """

    def __init__(self, outcome: str, reset: bool) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.reset = reset


class FaultSource(Protocol):
    """
    Where a connection reads the faults in force: its factory.
    """

    faults: Faults


class FaultyFramer(WrappingFramer):
    """
    A connection's framer as fault injection sees it: each message that the
    wrapped framer completes may draw a fault instead of a reply, by the
    faults in force when it is read.
    """

    def __init__(self, framer: Framer, random: Random, source: FaultSource) -> None:
        super().__init__(framer)
        self._random = random
        self._source = source

    def _draw(self) -> InjectedFault | None:
        """
        Draw one message's fate: a fault, or C{None} for a reply.
        """
        kind = self._source.faults.draw(self._random)
        if kind == "drop":
            return InjectedFault("dropped", reset=False)
        if kind == "reset":
            return InjectedFault("reset-injected", reset=True)
        return None

    def feedReplies(
        self, data: bytes, prefix: bytes, limit: int = 0
    ) -> tuple[bytes, int, MessageError | None]:
        messages, error = self._framer.feedUntilError(data)
        failure: MessageError | None = error
        if limit and len(messages) >= limit:
            messages, failure = messages[:limit], None
        for index in range(len(messages)):
            fault = self._draw()
            if fault is not None:
                messages, failure = messages[:index], fault
                break
        if not messages:
            return b"", 0, failure
        return self.encodeReplies(prefix, messages), len(messages), failure

    def finish(self) -> Message | None:
        last = self._framer.finish()
        if last is not None:
            fault = self._draw()
            if fault is not None:
                raise fault
        return last


class FaultyEchoReplyProtocol(EchoReplyProtocol):
    """
    A server connection with faults: each reply waits the delay in force
    when it is written (a timer, never blocking, and never before an
    earlier reply), and each message may be answered by a close (drop) or a
    reset instead.
    """

    def __init__(self) -> None:
        super().__init__()
        # Replies waiting for their time, oldest first, with when each is due.
        self._pending: deque[tuple[float, bytes]] = deque()
        self._pendingTimer: IDelayedCall | None = None

    def _newFramer(self) -> Framer:
        return FaultyFramer(super()._newFramer(), self.factory.random, self.factory)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        timer, self._pendingTimer = self._pendingTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._pending.clear()
        super().connectionLost(reason)

    def messageFailed(self, failure: MessageError) -> None:
        if not isinstance(failure, InjectedFault):
            super().messageFailed(failure)
            return
        self.state = ConnectionState.CLOSING
        self.outcome = failure.outcome
        self._pending.clear()
        transport = self.transport
        assert transport is not None
        self._unregister()
        if failure.reset:
            handle = getattr(transport, "getHandle", None)
            sock = handle() if handle is not None else None
            if isinstance(sock, socket.socket):
                # Linger on, timeout 0: close() sends a RST.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            asStream(transport).abortConnection()
        else:
            transport.loseConnection()

    def _write(self, data: bytes) -> None:
        """
        Write C{data} after the delay, never before what was queued earlier.
        """
        factory = self.factory
        delay = factory.faults.replyDelay(factory.random)
        if not self._pending and delay <= 0:
            super()._write(data)
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
            # Past this class's own _write, which would delay them again.
            super()._write(b"".join(ready))
        if pending:
            self._pendingTimer = clock.callLater(pending[0][0] - now, self._sendDue)
        else:
            self._closeIfReplied()

    def _queuedFor(self) -> float:
        if not self._pending:
            return 0.0
        return max(0.0, self._pending[-1][0] - self.factory.clock.seconds())

    def _hasQueued(self) -> bool:
        return bool(self._pending)
