"""
The load generator's engine: one process's connections, driven by a
non-blocking socket loop on C{epoll} (or the best the platform's
L{selectors} has).

It uses the standard library rather than Twisted: the generator must not be
what limits a measurement, and a bare loop that batches its writes and
checks every reply with one comparison per read costs far less per request
than any server it measures. The servers it measures are Twisted.

A L{Worker} runs one of three kinds of load, per its L{Plan}:

  - keep-open: C{connections} long-lived connections, each with up to
    C{pipeline} requests in flight; a connection that fails is replaced;
  - one-shot: every request on a new connection, read until the server
    closes, with up to C{connections} such exchanges at once;
  - hold: every connection makes one exchange, then all are held open and
    idle for C{hold} seconds (to measure what idle connections cost).

Closed loop (the default), a connection sends its next request when a reply
comes in. Open loop (C{rate}), requests are due at fixed intervals whatever
the server does, wait for a free connection if there is none, and their
latency counts from when they were due, so that a stalled server cannot
hide its stall by slowing the generator down (coordinated omission).
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockplay.bench.check import Exchange, ReplyChecker, ReplyError
from sockplay.bench.stats import Results

__all__ = ["Plan", "Worker"]

# Bytes asked of one recv(): large enough for a pipeline's worth of replies.
# Reads go into one reused buffer: a fresh bytes object this large per read
# would be mapped and unmapped by malloc every time.
READ_SIZE = 256 * 1024

# Largest batch of requests kept ready-made, in bytes.
_PREPARED = 1024 * 1024

# Largest one-shot request sent without TCP_NODELAY: one send() takes it
# whole, and Nagle's algorithm never holds back a connection's first
# segment, so the option would only cost a system call per exchange.
_NAGLE_HARMLESS = 16 * 1024

_CONNECTING = (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)

# Connections being set up at once: a server's accept queue (Twisted's
# default backlog is 50, the kernel's limit somaxconn) drops SYNs beyond it,
# and a dropped SYN is retried only after a second.
MAX_CONNECTING = 128

# Seconds between two calls of the progress callback.
TICK = 0.25

# Distinct latency values kept in a plain dict before they are folded into
# the histogram (recording into the pure-Python histogram costs a
# microsecond per call, counting in a dict a few tens of nanoseconds).
_FOLD_AT = 50_000

# epoll's event bits, also used for the selectors fallback.
READ = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
WRITE = select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4
_BROKEN = (select.EPOLLERR | select.EPOLLHUP) if hasattr(select, "EPOLLERR") else 0

_NS = 1_000_000_000


@dataclass(frozen=True)
class Plan:
    """
    The load one process generates.

    @ivar family: the address family (C{AF_INET}, C{AF_INET6}, C{AF_UNIX}).
    @ivar address: the server's socket address.
    @ivar exchange: the request and its expected reply.
    @ivar mode: C{"keep-open"}, C{"one-shot"} or C{"hold"}.
    @ivar connections: connections (one-shot: exchanges at once).
    @ivar pipeline: requests in flight per keep-open connection.
    @ivar duration: seconds to send requests for, or C{None}.
    @ivar requests: requests to send, or C{None}.
    @ivar rate: requests per second (open loop), or C{None} (closed loop).
    @ivar deadline: seconds after which everything stops, answered or not.
    @ivar maxErrors: errors after which the run stops.
    @ivar hold: seconds to hold the connections idle (hold mode).
    """

    family: int
    address: Any
    exchange: Exchange
    mode: str = "keep-open"
    connections: int = 1
    pipeline: int = 1
    duration: float | None = None
    requests: int | None = None
    rate: float | None = None
    deadline: float = 60.0
    maxErrors: int = 1000
    hold: float = 0.0


class _SelectorPoller:
    """
    The part of C{select.epoll} that L{Worker} uses, on L{selectors}, for
    platforms without epoll.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    @staticmethod
    def _events(mask: int) -> int:
        return (selectors.EVENT_READ if mask & READ else 0) | (
            selectors.EVENT_WRITE if mask & WRITE else 0
        )

    def register(self, fd: int, mask: int) -> None:
        self._selector.register(fd, self._events(mask))

    def modify(self, fd: int, mask: int) -> None:
        self._selector.modify(fd, self._events(mask))

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return [
            (
                key.fd,
                (READ if events & selectors.EVENT_READ else 0)
                | (WRITE if events & selectors.EVENT_WRITE else 0),
            )
            for key, events in self._selector.select(timeout)
        ]

    def close(self) -> None:
        self._selector.close()


def _makePoller() -> Any:
    if hasattr(select, "epoll"):
        return select.epoll()
    return _SelectorPoller()


class _Connection:
    """
    One client socket and its conversation.

    @ivar sends: for each batch of requests in flight, oldest first, the
        time (ns) its latency counts from and how many requests it holds.
    @ivar pending: bytes still to write.
    @ivar connected: whether the connection is established.
    @ivar closed: whether it is closed (its descriptor may be reused).
    @ivar ready: whether it is in the worker's queue of connections with
        room for another request (open loop).
    @ivar startedAt: when the connection (one-shot: the exchange) began.
    """

    __slots__ = (
        "checker", "closed", "connected", "fd", "pending", "ready", "sends", "sock", "startedAt",
    )

    def __init__(self, sock: socket.socket, checker: ReplyChecker, startedAt: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.checker = checker
        self.sends: deque[list[int]] = deque()
        self.pending = b""
        self.connected = False
        self.closed = False
        self.ready = False
        self.startedAt = startedAt


class Worker:
    """
    Generates one process's load and accounts for it in a L{Results}.

    @ivar results: what was measured so far.
    """

    def __init__(
        self,
        plan: Plan,
        clock: Callable[[], int] = time.monotonic_ns,
        onTick: Callable[[Worker], None] | None = None,
        onHold: Callable[[int], None] | None = None,
    ) -> None:
        """
        @param clock: the time in nanoseconds, monotonic.
        @param onTick: called about every L{TICK} seconds while the load
            runs (progress).
        @param onHold: called with the number of connections held, when
            hold mode starts holding.
        """
        self.plan = plan
        self.results = Results()
        self._clock = clock
        self._onTick = onTick
        self._onHold = onHold
        self._exchange = plan.exchange
        self._connections: dict[int, _Connection] = {}
        self._connecting = 0
        self._opened = 0
        # Replies owed on all open connections.
        self._owed = 0
        self._latencies: dict[int, int] = {}
        self._poller: Any = None
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._checker = ReplyChecker(plan.exchange.reply, READ_SIZE)
        # Closing a socket takes it out of an epoll set by itself.
        self._closeUnregisters = False
        self._socketType = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
        self._noDelay = plan.family != socket.AF_UNIX and not (
            plan.mode == "one-shot" and len(plan.exchange.request) <= _NAGLE_HARMLESS
        )
        request = plan.exchange.request
        # Batches of 1 to pipeline requests, ready to write.
        self._batches = (
            [request * count for count in range(plan.pipeline + 1)]
            if len(request) * plan.pipeline <= _PREPARED
            else []
        )
        # Requests not yet sent (open loop: not yet due); in duration mode
        # just more than can ever be sent.
        self._quota = plan.requests if plan.requests is not None else 1 << 62
        self._stopping = False
        self._start = 0
        # Open loop: requests due so far, and those of them sent.
        self._due = 0
        self._scheduled = 0
        # Keep-open connections with room for another request (open loop).
        self._ready: deque[_Connection] = deque()
        # Hold mode: exchanges over (answered or failed), and when holding
        # ends.
        self._held = 0
        self._holdUntil: int | None = None

    # The run

    def run(self) -> Results:
        """
        Generate the load until its end (or the deadline), then close every
        connection.

        @return: L{results}.
        """
        plan = self.plan
        clock = self._clock
        results = self.results
        cpuBefore = time.process_time()
        self._poller = _makePoller()
        self._closeUnregisters = not hasattr(select, "epoll") or not isinstance(
            self._poller, select.epoll
        )
        start = self._start = clock()
        deadline = start + int(plan.deadline * _NS)
        stopAt = start + int(plan.duration * _NS) if plan.duration is not None else None
        tick = int(TICK * _NS)
        nextTick = start + tick
        poll = self._poller.poll
        connections = self._connections
        openLoop = plan.rate is not None
        end = start
        try:
            while True:
                now = clock()
                if stopAt is not None and now >= stopAt and not self._stopping:
                    self._stopSending()
                if openLoop and self._quota > 0:
                    self._schedule(now)
                self._fill(now)
                if results.errorCount >= plan.maxErrors:
                    results.stopped = "max-errors"
                    break
                if self._finished(now):
                    break
                if now >= deadline:
                    self._timeOut()
                    break
                if now >= nextTick:
                    nextTick = now + tick
                    if len(self._latencies) > _FOLD_AT:
                        results.addLatencies(self._latencies)
                        self._latencies = {}
                    if self._onTick is not None:
                        self._onTick(self)
                wake = min(deadline, nextTick)
                if stopAt is not None and not self._stopping:
                    wake = min(wake, stopAt)
                if openLoop and self._quota > 0:
                    wake = min(wake, self._dueTime(self._due))
                if self._holdUntil is not None:
                    wake = min(wake, self._holdUntil)
                for fd, events in poll(max(wake - now, 0) / _NS):
                    connection = connections.get(fd)
                    if connection is None:
                        continue
                    if not connection.connected:
                        self._connectDone(connection)
                        continue
                    if events & WRITE and connection.pending:
                        self._flush(connection)
                    if events & (READ | _BROKEN) and not connection.closed:
                        self._readable(connection)
        except KeyboardInterrupt:
            results.stopped = "interrupted"
        finally:
            end = clock()
            # Stopped early (interrupted, too many errors): whatever was in
            # flight has no reply.
            results.unanswered += self._owed
            for connection in list(connections.values()):
                self._close(connection)
            self._poller.close()
        results.addLatencies(self._latencies)
        self._latencies = {}
        results.elapsed = (end - start) / _NS
        results.cpuSeconds = time.process_time() - cpuBefore
        return results

    def _finished(self, now: int) -> bool:
        """
        Whether the planned load is complete (in hold mode: held long
        enough).
        """
        plan = self.plan
        if plan.mode == "hold":
            if self._holdUntil is None:
                if self._held < plan.connections:
                    return False
                self._holdUntil = now + int(plan.hold * _NS)
                if self._onHold is not None:
                    self._onHold(len(self._connections))
            return now >= self._holdUntil
        if self._quota > 0 or self._due > self._scheduled or self._connecting:
            return False
        if plan.mode == "one-shot":
            return not self._connections
        return not self._owed

    def _stopSending(self) -> None:
        """
        The duration is over: no more requests. What was sent (open loop:
        also what was due) is still awaited.
        """
        self._stopping = True
        self._quota = 0

    def _timeOut(self) -> None:
        """
        The hard deadline: whatever is in progress has failed, and requests
        that were due but never sent are unanswered.
        """
        results = self.results
        results.stopped = "deadline"
        results.unanswered += self._due - self._scheduled
        self._due = self._scheduled
        for connection in list(self._connections.values()):
            if (
                self.plan.mode == "one-shot"
                or connection.checker.owed
                or not connection.connected
            ):
                self._fail(connection, ReplyError("timeout"))

    # Opening connections

    def _fill(self, now: int) -> None:
        """
        Open connections up to the plan's number, a few at a time: in
        one-shot mode, one per request to send.
        """
        plan = self.plan
        connections = self._connections
        results = self.results
        while (
            len(connections) < plan.connections
            and self._connecting < MAX_CONNECTING
            and results.errorCount < plan.maxErrors
        ):
            if plan.mode == "one-shot":
                if plan.rate is not None:
                    if self._due <= self._scheduled:
                        return
                    startedAt = self._dueTime(self._scheduled)
                    self._scheduled += 1
                else:
                    if self._quota <= 0:
                        return
                    self._quota -= 1
                    startedAt = now
                results.requests += 1
                self._open(startedAt)
            elif plan.mode == "hold":
                if self._opened >= plan.connections:
                    return
                self._open(now)
            else:
                if self._quota <= 0 and self._due <= self._scheduled:
                    return
                self._open(now)

    def _open(self, startedAt: int) -> None:
        """
        Start connecting a new socket.
        """
        plan = self.plan
        self._opened += 1
        try:
            sock = socket.socket(plan.family, self._socketType)
        except OSError as e:
            self.results.addError("connect", str(e))
            if plan.mode == "hold":
                self._held += 1
            return
        if self._socketType == socket.SOCK_STREAM:
            sock.setblocking(False)
        if self._noDelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(sock, self._checker.fresh(), startedAt)
        self._connections[connection.fd] = connection
        self._connecting += 1
        code = sock.connect_ex(plan.address)
        if code not in _CONNECTING:
            self._fail(connection, ReplyError("connect", os.strerror(code)))
        elif plan.mode != "one-shot" or not self._sendAtOnce(connection):
            self._poller.register(connection.fd, WRITE)

    def _sendAtOnce(self, connection: _Connection) -> bool:
        """
        Try to send a one-shot request right after C{connect}: on loopback
        the connection is usually made by then, and this saves waiting for
        it to become writable.

        @return: C{False} if the connection is not made yet.
        """
        request = self._exchange.request
        try:
            sent = connection.sock.send(request)
        except BlockingIOError:
            return False
        except OSError as e:
            self._fail(connection, ReplyError("connect", str(e)))
            return True
        self._connecting -= 1
        connection.connected = True
        self._expect(connection, 1, connection.startedAt)
        if sent < len(request):
            connection.pending = request[sent:]
            self._poller.register(connection.fd, READ | WRITE)
            return True
        self._poller.register(connection.fd, READ)
        if self._exchange.halfClose:
            connection.sock.shutdown(socket.SHUT_WR)
        return True

    def _connectDone(self, connection: _Connection) -> None:
        """
        A connecting socket became writable: connected, or failed.
        """
        code = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(connection, ReplyError("connect", os.strerror(code)))
            return
        self._connecting -= 1
        connection.connected = True
        self._poller.modify(connection.fd, READ)
        plan = self.plan
        if plan.mode == "one-shot":
            self._send(connection, 1, connection.startedAt)
            if self._exchange.halfClose and not connection.pending and not connection.closed:
                connection.sock.shutdown(socket.SHUT_WR)
        elif plan.mode == "hold":
            self._send(connection, 1, self._clock())
        elif plan.rate is None:
            count = min(plan.pipeline, self._quota)
            if count:
                self._quota -= count
                self._send(connection, count, self._clock())
        else:
            connection.ready = True
            self._ready.append(connection)
            self._assign()

    # Writing

    def _send(self, connection: _Connection, count: int, since: int) -> None:
        """
        Write C{count} requests at once; their latency counts from C{since}.
        """
        self._expect(connection, count, since)
        batches = self._batches
        data = batches[count] if count < len(batches) else self._exchange.request * count
        if connection.pending:
            connection.pending += data
            return
        try:
            sent = connection.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._fail(connection, ReplyError("reset", str(e)))
            return
        if sent < len(data):
            connection.pending = data[sent:]
            self._poller.modify(connection.fd, READ | WRITE)

    def _expect(self, connection: _Connection, count: int, since: int) -> None:
        """
        Account for C{count} requests about to be written: as many replies
        are owed, their latency counting from C{since}.
        """
        if self.plan.mode != "one-shot":
            self.results.requests += count
        connection.checker.expect(count)
        self._owed += count
        sends = connection.sends
        if sends and sends[-1][0] == since:
            sends[-1][1] += count
        else:
            sends.append([since, count])

    def _flush(self, connection: _Connection) -> None:
        """
        The socket can take more of what is left to write.
        """
        try:
            sent = connection.sock.send(connection.pending)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(connection, ReplyError("reset", str(e)))
            return
        connection.pending = connection.pending[sent:]
        if not connection.pending:
            self._poller.modify(connection.fd, READ)
            if self._exchange.halfClose:
                connection.sock.shutdown(socket.SHUT_WR)

    # Reading

    def _readable(self, connection: _Connection) -> None:
        """
        Replies (or the end of input) arrived: check them, account for
        them, and send the next requests.
        """
        try:
            size = connection.sock.recv_into(self._buffer)
        except BlockingIOError:
            return
        except OSError as e:
            if self.plan.mode == "one-shot" and not connection.checker.owed:
                # The reply was whole and right; only the close was a reset
                # (a server that closed with unread input).
                self._exchangeDone(connection)
                return
            self._fail(connection, ReplyError("reset", str(e)))
            return
        if not size:
            self._endOfInput(connection)
            return
        plan = self.plan
        try:
            done = connection.checker.feed(self._view[:size])
        except ReplyError as e:
            self._owed -= e.done
            if e.done and plan.mode != "one-shot":
                self._replied(connection, e.done, self._clock())
            self._fail(connection, e)
            return
        if not done:
            return
        self._owed -= done
        if plan.mode == "one-shot":
            # The exchange ends at the server's close, which has usually
            # come with the reply: look for it now.
            self._readable(connection)
            return
        now = self._clock()
        self._replied(connection, done, now)
        if plan.mode != "keep-open":
            return
        if plan.rate is None:
            count = done if done < self._quota else self._quota
            if count:
                self._quota -= count
                self._send(connection, count, now)
        else:
            if not connection.ready:
                connection.ready = True
                self._ready.append(connection)
            self._assign()

    def _replied(self, connection: _Connection, done: int, now: int) -> None:
        """
        C{done} replies, all verified, arrived at C{now}: record their
        latencies (oldest requests first).
        """
        self.results.ok += done
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
        if self.plan.mode == "hold":
            self._held += 1

    def _endOfInput(self, connection: _Connection) -> None:
        """
        The server closed its side.
        """
        try:
            connection.checker.endOfInput()
        except ReplyError as e:
            self._fail(connection, e)
            return
        if self.plan.mode == "one-shot":
            self._exchangeDone(connection)
        else:
            self._fail(connection, ReplyError("early-close", "closed while idle"))

    def _exchangeDone(self, connection: _Connection) -> None:
        """
        A one-shot exchange ended well: its latency runs to the close.
        """
        self._replied(connection, 1, self._clock())
        self._close(connection)

    # Open loop

    def _dueTime(self, index: int) -> int:
        """
        When request C{index} (from 0) of this process is due.
        """
        assert self.plan.rate is not None
        return self._start + int(index * _NS / self.plan.rate)

    def _schedule(self, now: int) -> None:
        """
        Make every request due by C{now} available to send.
        """
        assert self.plan.rate is not None
        target = int((now - self._start) * self.plan.rate / _NS) + 1
        count = min(target - self._due, self._quota)
        if count > 0:
            self._quota -= count
            self._due += count
            if self.plan.mode == "keep-open":
                self._assign()

    def _assign(self) -> None:
        """
        Send the requests that are due on connections with room for them.
        """
        ready = self._ready
        pipeline = self.plan.pipeline
        while self._due > self._scheduled and ready:
            connection = ready[0]
            room = pipeline - connection.checker.owed
            if connection.closed or room <= 0:
                ready.popleft()
                connection.ready = False
                continue
            count = min(room, self._due - self._scheduled)
            first = self._scheduled
            self._scheduled += count
            for index in range(first, first + count):
                self._send(connection, 1, self._dueTime(index))

    # Ending connections

    def _fail(self, connection: _Connection, error: ReplyError) -> None:
        """
        Count C{error} once; the other requests in flight on the connection
        are unanswered. The loop then replaces a keep-open connection.
        """
        results = self.results
        results.addError(error.kind, error.detail)
        owed = connection.checker.owed
        if owed > 1:
            results.unanswered += owed - 1
        if self.plan.mode == "hold" and (owed or not connection.connected):
            # Its one exchange is over, unanswered (a held connection that
            # was answered is counted already).
            self._held += 1
        self._close(connection)

    def _close(self, connection: _Connection) -> None:
        if connection.closed:
            return
        connection.closed = True
        del self._connections[connection.fd]
        self._owed -= connection.checker.owed
        if not connection.connected:
            self._connecting -= 1
        if self._closeUnregisters:
            try:
                self._poller.unregister(connection.fd)
            except (OSError, KeyError, ValueError):
                # Never registered: its connect failed at once.
                pass
        connection.sock.close()
