"""
The load generator's engine: one process's connections, driven by a
non-blocking socket loop on C{epoll} (or the best the platform's
L{selectors} has).

It uses the standard library rather than Twisted: the generator must not be
what limits a measurement, and a bare loop that batches its writes and
checks every reply with one comparison per read costs far less per request
than any server it measures. The servers it measures are Twisted.

The L{SocketEngine} does the socket work: connecting, writing batches of
requests, reading and checking replies, timing them, and failing
connections; the L{Worker} is the event loop that drives it. What the load
is (keep-open or one-shot, closed or open loop, hold) is a
L{sockplay.bench.load.Load}, which they ask at each decision point.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from sockplay.bench.check import ReplyChecker, ReplyError, TallyChecker
from sockplay.bench.load import NS, Connection, Load
from sockplay.bench.poller import BROKEN, READ, WRITE, makePoller
from sockplay.bench.stats import Results
from sockplay.tally import Tally

__all__ = ["READ_SIZE", "TICK", "SocketEngine", "Worker"]

# Bytes asked of one recv(): large enough for a pipeline's worth of replies.
# Reads go into one reused buffer: a fresh bytes object this large per read
# would be mapped and unmapped by malloc every time.
READ_SIZE = 256 * 1024

# Largest batch of requests kept ready-made, in bytes.
_PREPARED = 1024 * 1024

_CONNECTING = (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)

# Seconds between two calls of the progress callback.
TICK = 0.25

# Distinct latency values kept in a plain dict before they are folded into
# the histogram (recording into the pure-Python histogram costs a
# microsecond per call, counting in a dict a few tens of nanoseconds).
_FOLD_AT = 50_000


class SocketEngine:
    """
    The socket work of one process's load, which the load asks for (see
    L{Engine}): opening connections, writing batches of requests, reading
    and checking replies, timing them, and failing connections. It
    accounts for all of it in a L{Results}.

    @ivar plan: the load to generate.
    @ivar results: what was measured so far.
    @ivar clock: the time in nanoseconds, monotonic.
    @ivar connections: the open connections, by file descriptor.
    @ivar connecting: how many of them are not made yet.
    @ivar opened: how many connections were opened in all.
    @ivar owed: replies owed on all open connections.
    @ivar now: the time (ns) as of the latest poll: what the socket work
        stamps on a connection when the server is heard from, without asking
        the clock for every read.
    """

    def __init__(self, load: Load, clock: Callable[[], int] = time.monotonic_ns) -> None:
        """
        @param load: what to generate.
        @param clock: the time in nanoseconds, monotonic.
        """
        plan = self.plan = load.plan
        self.results = Results()
        self.clock = clock
        self.connections: dict[int, Connection] = {}
        self.connecting = 0
        self.opened = 0
        self.owed = 0
        self.now = clock()
        self._load = load
        self._latencies: dict[int, int] = {}
        self._poller: Any = None
        # Whether closing a socket leaves it in the poller (not so in epoll).
        self._unregister = False
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._checker: ReplyChecker | TallyChecker
        if plan.tally:
            tally = self.results.tally = Tally()
            self._checker = TallyChecker(
                plan.exchange.framing, plan.exchange.message, tally.stickiness
            )
            # Chosen once, before the load looks it up: the default path
            # has no tally check.
            self.replied = self._repliedTally  # type: ignore[method-assign]
        else:
            self._checker = ReplyChecker(plan.exchange.reply, READ_SIZE)
        self._socketType = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
        self._noDelay = plan.family != socket.AF_UNIX and load.noDelay
        request = plan.exchange.request
        self._request = request
        self._halfClose = plan.exchange.halfClose
        # Batches of 1 to pipeline requests, ready to write.
        self._batches = (
            [request * count for count in range(plan.pipeline + 1)]
            if len(request) * plan.pipeline <= _PREPARED
            else []
        )
        load.attach(self)
        # The hottest decision, looked up once.
        self._repliesDone = load.repliesDone

    # Connecting

    def open(self, startedAt: int) -> None:
        """
        Start connecting a new socket; its exchange counts from
        C{startedAt}.
        """
        plan = self.plan
        self.opened += 1
        try:
            sock = socket.socket(plan.family, self._socketType)
        except OSError as e:
            self.results.addError("connect", str(e))
            return
        if self._socketType == socket.SOCK_STREAM:
            sock.setblocking(False)
        if self._noDelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, self._checker.fresh(), startedAt)
        connection.heard = self.now
        self.connections[connection.fd] = connection
        self.connecting += 1
        code = sock.connect_ex(plan.address)
        if code not in _CONNECTING:
            self.fail(connection, ReplyError("connect", os.strerror(code)))
            return
        events = self._load.connecting(connection)
        if events:
            self._poller.register(connection.fd, events)

    def markConnected(self, connection: Connection) -> None:
        """
        C{connection} is made.
        """
        self.connecting -= 1
        connection.connected = True

    def _connectDone(self, connection: Connection) -> None:
        """
        A connecting socket became writable: connected, or failed.
        """
        code = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(connection, ReplyError("connect", os.strerror(code)))
            return
        self.markConnected(connection)
        self._poller.modify(connection.fd, READ)
        self._load.connected(connection)

    # Writing

    def send(self, connection: Connection, count: int, since: int) -> None:
        """
        Write C{count} requests at once; their latency counts from C{since}.
        """
        self.expect(connection, count, since)
        batches = self._batches
        data = batches[count] if count < len(batches) else self._request * count
        if connection.pending:
            connection.pending += data
            return
        try:
            sent = connection.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.fail(connection, ReplyError("reset", str(e)))
            return
        if sent < len(data):
            connection.pending = data[sent:]
            self._poller.modify(connection.fd, READ | WRITE)

    def expect(self, connection: Connection, count: int, since: int) -> None:
        """
        Account for C{count} requests about to be written: as many replies
        are owed, their latency counting from C{since}.
        """
        # ReplyChecker.expect, inlined: this runs for every batch sent.
        if not connection.checker.owed:
            # The server owed nothing: the exchange timeout starts now.
            connection.heard = self.now
        connection.checker.owed += count
        self.owed += count
        sends = connection.sends
        if sends and sends[-1][0] == since:
            sends[-1][1] += count
        else:
            sends.append([since, count])

    def _flush(self, connection: Connection) -> None:
        """
        The socket can take more of what is left to write.
        """
        try:
            sent = connection.sock.send(connection.pending)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail(connection, ReplyError("reset", str(e)))
            return
        connection.pending = connection.pending[sent:]
        if not connection.pending:
            self._poller.modify(connection.fd, READ)
            if self._halfClose:
                connection.sock.shutdown(socket.SHUT_WR)

    # Reading

    def read(self, connection: Connection) -> None:
        """
        Replies (or the end of input) arrived: check them, and tell the load.
        """
        try:
            size = connection.sock.recv_into(self._buffer)
        except BlockingIOError:
            return
        except OSError as e:
            self._load.readFailed(connection, e)
            return
        if not size:
            try:
                connection.checker.endOfInput()
            except ReplyError as e:
                e.symptom = self._load.closingSymptom(connection)
                self.fail(connection, e)
                return
            self._load.endOfInput(connection)
            return
        connection.heard = self.now
        try:
            done = connection.checker.feed(self._view[:size])
        except ReplyError as e:
            self.owed -= e.done
            self._load.badReply(connection, e)
            return
        if done:
            self.owed -= done
            self._repliesDone(connection, done)

    def replied(self, connection: Connection, done: int, now: int) -> None:
        """
        C{done} replies, all verified, arrived at C{now}: record their
        latencies (oldest requests first).
        """
        self.results.ok += done
        connection.answered += done
        latencies = self._latencies
        sends = connection.sends
        while done:
            batch = sends[0]
            since, count = batch
            if count <= done:
                sends.popleft()
            else:
                batch[1] = count - done
                count = done
            done -= count
            micro = (now - since) // 1000
            latencies[micro] = latencies.get(micro, 0) + count

    def _repliedTally(self, connection: Connection, done: int, now: int) -> None:
        """
        L{replied}, with C{--tally}: each reply's latency also counts under
        its identity, as its connection's L{TallyChecker} read it.
        """
        tally = self.results.tally
        assert tally is not None
        identities = cast(TallyChecker, connection.checker).identities
        left = done
        for since, count in connection.sends:
            micro = (now - since) // 1000
            for _ in range(min(count, left)):
                tally.record(identities.popleft(), micro)
            left -= min(count, left)
            if not left:
                break
        SocketEngine.replied(self, connection, done, now)

    # Ending connections

    def fail(self, connection: Connection, error: ReplyError) -> None:
        """
        Count C{error} once; the other requests in flight on the connection
        are unanswered. The load then replaces a keep-open connection.
        """
        results = self.results
        results.addError(error.kind, error.detail, error.received, error.symptom)
        owed = connection.checker.owed
        if owed > 1:
            results.unanswered += owed - 1
        self.close(connection)

    def close(self, connection: Connection) -> None:
        """
        Close C{connection}: what it still owed is no longer awaited.
        """
        if connection.closed:
            return
        connection.closed = True
        del self.connections[connection.fd]
        self.owed -= connection.checker.owed
        if not connection.connected:
            self.connecting -= 1
        if self._unregister:
            try:
                self._poller.unregister(connection.fd)
            except (OSError, KeyError, ValueError):
                # Never registered: its connect failed at once.
                pass
        connection.sock.close()


class Worker(SocketEngine):
    """
    The event loop that generates one process's load: it polls the
    connections and hands each event to the socket work, keeps time
    (duration, deadline, progress), and asks the load whether it is
    finished.
    """

    def __init__(
        self,
        load: Load,
        clock: Callable[[], int] = time.monotonic_ns,
        onTick: Callable[[Worker], None] | None = None,
    ) -> None:
        """
        @param load: what to generate.
        @param clock: the time in nanoseconds, monotonic.
        @param onTick: called about every L{TICK} seconds while the load
            runs (progress).
        """
        super().__init__(load, clock)
        self._onTick = onTick

    def run(self) -> Results:
        """
        Generate the load until its end (or the deadline), then close every
        connection.

        @return: L{results}.
        """
        plan, load, clock, results = self.plan, self._load, self.clock, self.results
        cpuBefore = time.process_time()
        self._poller, closeUnregisters = makePoller()
        self._unregister = not closeUnregisters
        start = clock()
        load.begin(start)
        deadline = start + int(plan.deadline * NS)
        stopAt = start + int(plan.duration * NS) if plan.duration is not None else None
        stopping = False
        tick = int(TICK * NS)
        nextTick = start + tick
        poll = self._poller.poll
        connections = self.connections
        end = start
        try:
            while True:
                now = self.now = clock()
                if stopAt is not None and now >= stopAt and not stopping:
                    stopping = True
                    load.stopSending()
                load.fill(now)
                if results.errorCount >= plan.maxErrors:
                    results.stopped = "max-errors"
                    break
                if load.finished(now):
                    break
                if now >= deadline:
                    results.stopped = "deadline"
                    load.timeOut()
                    break
                if now >= nextTick:
                    nextTick = now + tick
                    load.timeOutStalled(now)
                    if results.errors["timeout"] and not results.ok:
                        # Not one exchange answered in time: waiting for
                        # more of them would only repeat that.
                        results.stopped = "timeout"
                        break
                    if len(self._latencies) > _FOLD_AT:
                        results.addLatencies(self._latencies)
                        self._latencies = {}
                    if self._onTick is not None:
                        self._onTick(self)
                wake = min(deadline, nextTick)
                if stopAt is not None and not stopping:
                    wake = min(wake, stopAt)
                wake = load.wakeBy(wake)
                ready = poll(max(wake - now, 0) / NS)
                if ready:
                    self.now = clock()
                for fd, events in ready:
                    connection = connections.get(fd)
                    if connection is None:
                        continue
                    if not connection.connected:
                        self._connectDone(connection)
                        continue
                    if events & WRITE and connection.pending:
                        self._flush(connection)
                    if events & (READ | BROKEN) and not connection.closed:
                        self.read(connection)
        except KeyboardInterrupt:
            results.stopped = "interrupted"
        finally:
            end = clock()
            # Stopped early (interrupted, too many errors): whatever was in
            # flight has no reply.
            results.unanswered += self.owed
            for connection in list(connections.values()):
                self.close(connection)
            self._poller.close()
        results.addLatencies(self._latencies)
        self._latencies = {}
        results.elapsed = (end - start) / NS
        results.cpuSeconds = time.process_time() - cpuBefore
        return results
