"""
What a load is: the decisions a L{sockplay.bench.loop.Worker} leaves to it.

The worker does the socket work; at each decision point it asks its
L{Load}: what to open, what to send when a connection is made or replies
come in, what a failed read or the end of input means, whether the load is
complete, and what fails at the deadline. This base class answers where
every kind of load answers alike; each kind is a subclass in
L{sockplay.bench.loads}. A load works the sockets through the worker's
L{Engine} methods.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sockplay.bench.check import ReplyChecker, ReplyError, TallyChecker
from sockplay.bench.plan import Plan
from sockplay.bench.poller import WRITE
from sockplay.bench.stats import Results

__all__ = ["MAX_CONNECTING", "NS", "Connection", "Engine", "Load"]

# Connections being set up at once: a server's accept queue (Twisted's
# default backlog is 50, the kernel's limit somaxconn) drops SYNs beyond it,
# and a dropped SYN is retried only after a second.
MAX_CONNECTING = 128

# Nanoseconds in a second: the worker's clock counts nanoseconds.
NS = 1_000_000_000

# What a timeout's detail says, for each symptom (formatted with the
# timeout, in seconds).
_STALLS = {
    "no-reply": "no reply in {:g} s",
    "stalled": "no further reply in {:g} s",
    "no-delimiter": "a reply without its LF, and nothing more in {:g} s",
    "reply-unfinished": "a reply began, then nothing more in {:g} s",
    "open-after-reply": "the whole reply, then the server kept the connection open {:g} s",
}


class Connection:
    """
    One client socket and its conversation.

    @ivar sends: for each batch of requests in flight, oldest first, the
        time (ns) its latency counts from and how many requests it holds.
    @ivar pending: bytes still to write.
    @ivar connected: whether the connection is established.
    @ivar closed: whether it is closed (its descriptor may be reused).
    @ivar ready: whether it is in an open-loop load's queue of connections
        with room for another request.
    @ivar startedAt: when the connection (one-shot: the exchange) began.
    @ivar heard: when (ns) the server last sent something, or, if it owed
        nothing then, when it was last asked for something: the exchange
        timeout counts from it.
    @ivar answered: right replies received on the connection so far.
    """

    __slots__ = (
        "answered", "checker", "closed", "connected", "fd", "heard", "pending", "ready", "sends",
        "sock", "startedAt",
    )

    def __init__(
        self, sock: socket.socket, checker: ReplyChecker | TallyChecker, startedAt: int
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.checker = checker
        self.sends: deque[list[int]] = deque()
        self.pending = b""
        self.connected = False
        self.closed = False
        self.ready = False
        self.startedAt = startedAt
        self.heard = startedAt
        self.answered = 0


class Engine(Protocol):
    """
    What a load may ask of the worker that generates it: the socket work
    (see L{sockplay.bench.loop.SocketEngine} for each).
    """

    results: Results
    clock: Callable[[], int]
    connections: dict[int, Connection]
    connecting: int
    opened: int
    owed: int

    def open(self, startedAt: int) -> None: ...
    def markConnected(self, connection: Connection) -> None: ...
    def send(self, connection: Connection, count: int, since: int) -> None: ...
    def expect(self, connection: Connection, count: int, since: int) -> None: ...
    def read(self, connection: Connection) -> None: ...
    def replied(self, connection: Connection, done: int, now: int) -> None: ...
    def fail(self, connection: Connection, error: ReplyError) -> None: ...
    def close(self, connection: Connection) -> None: ...


class Load:
    """
    What one kind of load does at each of the worker's decision points.
    This base class gives a keep-open load's answer where there is a common
    one; each kind of load is a subclass (see L{sockplay.bench.loads}).

    @cvar noDelay: whether TCP connections set C{TCP_NODELAY}.
    @ivar plan: the load to generate.
    @ivar quota: requests not yet sent (open loop: not yet due).
    @ivar worker: the worker that generates it, once attached.
    """

    noDelay = True

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        # In duration mode, just more than can ever be sent.
        self.quota = plan.requests if plan.requests is not None else 1 << 62

    def attach(self, worker: Engine) -> None:
        """
        Generate the load with C{worker}: the worker calls this once, when
        it is made.
        """
        self.worker = worker
        self.results = worker.results
        self.clock = worker.clock

    def begin(self, now: int) -> None:
        """
        The run starts, at C{now} (ns).
        """

    def fill(self, now: int) -> None:
        """
        Open the connections the load wants now, a few at a time.
        """
        worker = self.worker
        connections = worker.connections
        results = self.results
        plan = self.plan
        while (
            len(connections) < plan.connections
            and worker.connecting < MAX_CONNECTING
            and results.errorCount < plan.maxErrors
        ):
            startedAt = self.nextOpening(now)
            if startedAt is None:
                return
            worker.open(startedAt)

    def nextOpening(self, now: int) -> int | None:
        """
        Whether to open another connection: C{None} if not, else the time
        (ns) its exchange counts from.
        """
        raise NotImplementedError()

    def connecting(self, connection: Connection) -> int:
        """
        A connection is being made: the events to poll it for (C{0}: none,
        the load took care of it).
        """
        return WRITE

    def connected(self, connection: Connection) -> None:
        """
        C{connection} is made: send what is to be sent.
        """
        raise NotImplementedError()

    def repliesDone(self, connection: Connection, done: int) -> None:
        """
        C{done} more replies on C{connection} are whole and right.
        """
        raise NotImplementedError()

    def badReply(self, connection: Connection, error: ReplyError) -> None:
        """
        A reply was wrong: the replies before it count, and the connection
        fails.
        """
        if error.done:
            self.worker.replied(connection, error.done, self.clock())
        self.worker.fail(connection, error)

    def readFailed(self, connection: Connection, error: OSError) -> None:
        """
        Reading C{connection} failed.
        """
        self.worker.fail(
            connection, ReplyError("reset", str(error), symptom=self.closingSymptom(connection))
        )

    def endOfInput(self, connection: Connection) -> None:
        """
        The server closed C{connection}, and no reply was owed on it.
        """
        self.worker.fail(
            connection,
            ReplyError("early-close", "closed while idle", symptom=self.closingSymptom(connection)),
        )

    def closingSymptom(self, connection: Connection) -> str | None:
        """
        What the server's closing C{connection} too early looks like (one of
        L{SYMPTOMS <sockplay.bench.check.SYMPTOMS>}), if anything: closed
        after exactly one reply (a one-shot server), or before the first
        byte of the first reply.
        """
        if connection.checker.offset:
            return None
        if connection.answered == 1:
            return "closed-after-reply"
        return "closed-without-reply" if not connection.answered else None

    def awaiting(self, connection: Connection) -> bool:
        """
        Whether C{connection} waits for the server, so that the exchange
        timeout applies: it is made and owes replies.
        """
        return connection.connected and bool(connection.checker.owed)

    def stallSymptom(self, connection: Connection) -> str:
        """
        What an exchange that the server kept waiting too long looks like
        (one of L{SYMPTOMS <sockplay.bench.check.SYMPTOMS>}).
        """
        checker = connection.checker
        if checker.offset:
            if (
                self.plan.exchange.framing == "line"
                and checker.offset == checker.replyLength - 1
            ):
                return "no-delimiter"
            return "reply-unfinished"
        return "stalled" if connection.answered else "no-reply"

    def timeOutStalled(self, now: int) -> None:
        """
        Fail, as a C{timeout}, every exchange the server has kept waiting
        longer than the plan's exchange timeout: it sent nothing for that
        long while a reply (one-shot: or the close) was owed.
        """
        limit = now - int(self.plan.timeout * NS)
        fail = self.worker.fail
        for connection in list(self.worker.connections.values()):
            if connection.heard <= limit and self.awaiting(connection):
                symptom = self.stallSymptom(connection)
                fail(connection, ReplyError(
                    "timeout", _STALLS[symptom].format(self.plan.timeout), symptom=symptom,
                ))

    def stopSending(self) -> None:
        """
        The duration is over: no more requests. What was sent (open loop:
        also what was due) is still awaited.
        """
        self.quota = 0

    def finished(self, now: int) -> bool:
        """
        Whether the load is complete.
        """
        return not (self.quota > 0 or self.worker.connecting or self.worker.owed)

    def wakeBy(self, wake: int) -> int:
        """
        When the loop must look again (ns), at the latest C{wake}.
        """
        return wake

    def timeOut(self) -> None:
        """
        The hard deadline: whatever is in progress fails.
        """
        fail = self.worker.fail
        for connection in list(self.worker.connections.values()):
            if self.expired(connection):
                fail(connection, ReplyError("timeout", "still waiting at the deadline"))

    def expired(self, connection: Connection) -> bool:
        """
        Whether C{connection} failed at the deadline: it was still
        connecting, or owed replies.
        """
        return bool(connection.checker.owed) or not connection.connected
