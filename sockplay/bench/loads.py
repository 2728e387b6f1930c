"""
The kinds of load a L{sockplay.bench.loop.Worker} generates, one
L{sockplay.bench.load.Load} per kind:

  - L{KeepOpenLoad}: C{connections} long-lived connections, each with up to
    C{pipeline} requests in flight, the next sent when a reply comes in
    (closed loop); a connection that fails is replaced;
  - L{OneShotLoad}: every request on a new connection, read until the
    server closes, with up to C{connections} such exchanges at once;
  - L{HoldLoad}: every connection makes one exchange, then all are held
    open and idle for C{hold} seconds (to measure what idle connections
    cost);
  - L{KeepOpenAtRate} and L{OneShotAtRate}: the open-loop forms of the
    first two (C{rate}).

Open loop, requests are due at fixed intervals whatever the server does
(L{Schedule}), wait for a free connection if there is none, and their
latency counts from when they were due, so that a stalled server cannot
hide its stall by slowing the generator down (coordinated omission).
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable

from sockplay.bench.check import ReplyError
from sockplay.bench.load import NS, Connection, Engine, Load
from sockplay.bench.plan import Plan
from sockplay.bench.poller import READ, WRITE

__all__ = [
    "HoldLoad",
    "KeepOpenAtRate",
    "KeepOpenLoad",
    "OneShotAtRate",
    "OneShotLoad",
    "OpenLoop",
    "Schedule",
    "makeLoad",
]

# Largest one-shot request sent without TCP_NODELAY: one send() takes it
# whole, and Nagle's algorithm never holds back a connection's first
# segment, so the option would only cost a system call per exchange.
_NAGLE_HARMLESS = 16 * 1024


class KeepOpenLoad(Load):
    """
    Keep-open connections, closed loop: each connection has up to
    C{pipeline} requests in flight, and sends as many as come back.
    """

    def attach(self, worker: Engine) -> None:
        super().attach(worker)
        self._send = worker.send
        self._replied = worker.replied

    def nextOpening(self, now: int) -> int | None:
        return now if self.quota > 0 else None

    def connected(self, connection: Connection) -> None:
        count = min(self.plan.pipeline, self.quota)
        if count:
            self.quota -= count
            self.results.requests += count
            self._send(connection, count, self.clock())

    def repliesDone(self, connection: Connection, done: int) -> None:
        now = self.clock()
        self._replied(connection, done, now)
        quota = self.quota
        count = done if done < quota else quota
        if count:
            self.quota = quota - count
            self.results.requests += count
            self._send(connection, count, now)


class HoldLoad(Load):
    """
    One exchange on each of C{connections} connections, never replaced;
    then all of them held open, idle, for C{hold} seconds.
    """

    def __init__(self, plan: Plan, onHold: Callable[[int], None] | None = None) -> None:
        """
        @param onHold: called with the number of connections held, when
            holding starts.
        """
        super().__init__(plan)
        self._onHold = onHold
        # When holding ends (ns), once it has begun.
        self._holdUntil: int | None = None

    def nextOpening(self, now: int) -> int | None:
        return now if self.worker.opened < self.plan.connections else None

    def connected(self, connection: Connection) -> None:
        self.results.requests += 1
        self.worker.send(connection, 1, self.clock())

    def repliesDone(self, connection: Connection, done: int) -> None:
        self.worker.replied(connection, done, self.clock())

    def finished(self, now: int) -> bool:
        """
        Whether the connections have been held long enough; holding starts
        when every exchange is over, answered or failed.
        """
        if self._holdUntil is None:
            worker = self.worker
            if worker.opened < self.plan.connections or worker.connecting or worker.owed:
                return False
            self._holdUntil = now + int(self.plan.hold * NS)
            if self._onHold is not None:
                self._onHold(len(worker.connections))
        return now >= self._holdUntil

    def wakeBy(self, wake: int) -> int:
        return wake if self._holdUntil is None else min(wake, self._holdUntil)


class OneShotLoad(Load):
    """
    One request per connection, its reply read until the server closes;
    up to C{connections} such exchanges at once. Its requests count as they
    start, connected or not.
    """

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.noDelay = len(plan.exchange.request) > _NAGLE_HARMLESS
        self._request = plan.exchange.request
        self._halfClose = plan.exchange.halfClose

    def nextOpening(self, now: int) -> int | None:
        if self.quota <= 0:
            return None
        self.quota -= 1
        self.results.requests += 1
        return now

    def connecting(self, connection: Connection) -> int:
        """
        Send the request right after C{connect}: on loopback the connection
        is usually made by then, and this saves waiting for it to become
        writable.
        """
        worker = self.worker
        request = self._request
        try:
            sent = connection.sock.send(request)
        except BlockingIOError:
            return WRITE
        except OSError as e:
            worker.fail(connection, ReplyError("connect", str(e)))
            return 0
        worker.markConnected(connection)
        worker.expect(connection, 1, connection.startedAt)
        if sent < len(request):
            connection.pending = request[sent:]
            return READ | WRITE
        if self._halfClose:
            connection.sock.shutdown(socket.SHUT_WR)
        return READ

    def connected(self, connection: Connection) -> None:
        self.worker.send(connection, 1, connection.startedAt)
        if self._halfClose and not connection.pending and not connection.closed:
            connection.sock.shutdown(socket.SHUT_WR)

    def repliesDone(self, connection: Connection, done: int) -> None:
        """
        The reply is whole; the exchange ends at the server's close, which
        has usually come with it: look for it now.
        """
        self.worker.read(connection)

    def badReply(self, connection: Connection, error: ReplyError) -> None:
        """
        A wrong reply fails the exchange, whatever came before it.
        """
        self.worker.fail(connection, error)

    def readFailed(self, connection: Connection, error: OSError) -> None:
        """
        A reset after the whole reply is only a server that closed with
        unread input: the exchange ended well.
        """
        if connection.checker.owed:
            super().readFailed(connection, error)
        else:
            self._exchangeDone(connection)

    def endOfInput(self, connection: Connection) -> None:
        self._exchangeDone(connection)

    def _exchangeDone(self, connection: Connection) -> None:
        """
        An exchange ended well: its latency runs to the close.
        """
        self.worker.replied(connection, 1, self.clock())
        self.worker.close(connection)

    def finished(self, now: int) -> bool:
        return not (self.quota > 0 or self.worker.connecting or self.worker.connections)

    def awaiting(self, connection: Connection) -> bool:
        """
        A one-shot exchange waits for the server until the server closes:
        for the reply, then for the close.
        """
        return connection.connected

    def stallSymptom(self, connection: Connection) -> str:
        """
        A one-shot exchange that has its whole reply and still waits is
        waiting for a close that a keep-open server never sends.
        """
        if not connection.checker.owed:
            return "open-after-reply"
        return super().stallSymptom(connection)

    def expired(self, connection: Connection) -> bool:
        """
        At the deadline every exchange still open has failed.
        """
        return True


class Schedule:
    """
    When an open-loop load's requests are due: at fixed intervals from the
    start, whatever the server does.

    @ivar due: requests due so far.
    @ivar taken: those of them sent (one-shot: started).
    """

    def __init__(self, rate: float | None) -> None:
        """
        @param rate: requests per second.
        """
        if not rate:
            raise ValueError("an open-loop load needs a rate")
        self._rate = rate
        self._start = 0
        self.due = 0
        self.taken = 0

    def begin(self, now: int) -> None:
        """
        The first request is due at C{now}.
        """
        self._start = now

    def dueTime(self, index: int) -> int:
        """
        When request C{index} (from 0) is due.
        """
        return self._start + int(index * NS / self._rate)

    def advance(self, now: int, most: int) -> int:
        """
        Make the requests due by C{now} available, at most C{most} more.

        @return: how many more there are.
        """
        count = min(int((now - self._start) * self._rate / NS) + 1 - self.due, most)
        if count <= 0:
            return 0
        self.due += count
        return count

    def dropDue(self) -> int:
        """
        Give up the requests due but not taken.

        @return: how many.
        """
        count = self.due - self.taken
        self.due = self.taken
        return count


class OpenLoop(Load):
    """
    What the open-loop loads share, mixed in before the closed-loop load
    they change: requests are due on a L{Schedule}, the quota counts those
    not yet due, and at the deadline those due but never sent are
    unanswered.

    @ivar schedule: when the requests are due.
    """

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.schedule = Schedule(plan.rate)

    def begin(self, now: int) -> None:
        self.schedule.begin(now)

    def fill(self, now: int) -> None:
        if self.quota > 0:
            count = self.schedule.advance(now, self.quota)
            if count:
                self.quota -= count
                self.madeDue()
        super().fill(now)

    def madeDue(self) -> None:
        """
        More requests are due.
        """

    def finished(self, now: int) -> bool:
        return self.schedule.due <= self.schedule.taken and super().finished(now)

    def wakeBy(self, wake: int) -> int:
        """
        Wake up for the next request due, if there is one.
        """
        if self.quota > 0:
            return min(wake, self.schedule.dueTime(self.schedule.due))
        return wake

    def timeOut(self) -> None:
        """
        Requests that were due but never sent are unanswered too.
        """
        self.results.unanswered += self.schedule.dropDue()
        super().timeOut()


class KeepOpenAtRate(OpenLoop, KeepOpenLoad):
    """
    Keep-open connections, open loop: each request goes out when it is due,
    on a connection with fewer than C{pipeline} requests in flight, and
    waits for one if there is none.
    """

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        # Connections with room for another request, oldest first.
        self._ready: deque[Connection] = deque()

    def madeDue(self) -> None:
        self._assign()

    def nextOpening(self, now: int) -> int | None:
        schedule = self.schedule
        return now if self.quota > 0 or schedule.due > schedule.taken else None

    def connected(self, connection: Connection) -> None:
        connection.ready = True
        self._ready.append(connection)
        self._assign()

    def repliesDone(self, connection: Connection, done: int) -> None:
        self._replied(connection, done, self.clock())
        if not connection.ready:
            connection.ready = True
            self._ready.append(connection)
        self._assign()

    def _assign(self) -> None:
        """
        Send the requests that are due on connections with room for them.
        """
        ready = self._ready
        pipeline = self.plan.pipeline
        schedule = self.schedule
        while schedule.due > schedule.taken and ready:
            connection = ready[0]
            room = pipeline - connection.checker.owed
            if connection.closed or room <= 0:
                ready.popleft()
                connection.ready = False
                continue
            count = min(room, schedule.due - schedule.taken)
            first = schedule.taken
            schedule.taken += count
            self.results.requests += count
            for index in range(first, first + count):
                self._send(connection, 1, schedule.dueTime(index))


class OneShotAtRate(OpenLoop, OneShotLoad):
    """
    One-shot exchanges, open loop: each starts when it is due, or as soon
    after as fewer than C{connections} are under way, and its latency
    counts from when it was due.
    """

    def nextOpening(self, now: int) -> int | None:
        schedule = self.schedule
        if schedule.due <= schedule.taken:
            return None
        schedule.taken += 1
        self.results.requests += 1
        return schedule.dueTime(schedule.taken - 1)


def makeLoad(plan: Plan, onHold: Callable[[int], None] | None = None) -> Load:
    """
    The load that C{plan} describes.

    @param onHold: for hold mode, called with the number of connections
        held, when holding starts.
    """
    if plan.mode == "hold":
        return HoldLoad(plan, onHold)
    if plan.mode == "one-shot":
        return OneShotLoad(plan) if plan.rate is None else OneShotAtRate(plan)
    if plan.mode == "keep-open":
        return KeepOpenLoad(plan) if plan.rate is None else KeepOpenAtRate(plan)
    raise ValueError(f"unknown mode {plan.mode!r}")
