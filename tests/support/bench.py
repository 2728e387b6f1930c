"""
Helpers for the load generator's tests: fake clocks, a stand-in for epoll,
and a worker whose one connection is a local socket pair, so that its
accounting can be driven without real time or a real server.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sockplay.bench.check import makeExchange
from sockplay.bench.load import Connection, Load
from sockplay.bench.loads import makeLoad
from sockplay.bench.loop import Worker
from sockplay.bench.plan import Plan
from support.servers import SOCKET_TIMEOUT

__all__ = [
    "PREFIX",
    "Conversation",
    "Conversations",
    "FakeClock",
    "FakePoller",
    "localPlan",
]

PREFIX = b"Message received: "

_Time = TypeVar("_Time", int, float)


class FakeClock(Generic[_Time]):
    """
    A monotonic clock that moves only when told to: in nanoseconds for the
    worker (C{FakeClock(0)}), in seconds for the progress line
    (C{FakeClock(0.0)}).
    """

    def __init__(self, now: _Time) -> None:
        self.now: _Time = now

    def __call__(self) -> _Time:
        return self.now


class FakePoller:
    """
    Stands in for epoll: the tests tell the worker when to read.
    """

    def register(self, fd: int, mask: int) -> None:
        pass

    def modify(self, fd: int, mask: int) -> None:
        pass

    def unregister(self, fd: int) -> None:
        pass

    def close(self) -> None:
        pass


def localPlan(framing: str = "line", **overrides: Any) -> Plan:
    """
    A plan for a worker whose connection is a local socket pair.
    """
    return Plan(
        family=socket.AF_UNIX,
        address="",
        exchange=makeExchange(framing, b"hi", PREFIX),
        **overrides,
    )


class Conversation:
    """
    A worker with one connection, already made, to a fake server at the
    other end of a socket pair.

    @ivar clock: the worker's clock.
    @ivar load: the worker's load, made from the plan.
    @ivar worker: the worker.
    @ivar connection: its connection.
    @ivar server: the server's end.
    """

    def __init__(self, plan: Plan, makeLoad: Callable[[Plan], Load] = makeLoad) -> None:
        self.clock = FakeClock(0)
        self.load = makeLoad(plan)
        self.worker = Worker(self.load, clock=self.clock)
        self.worker._poller = FakePoller()
        ours, self.server = socket.socketpair()
        ours.setblocking(False)
        self.server.settimeout(SOCKET_TIMEOUT)
        # The worker's own checker (with --tally, a TallyChecker), fresh.
        self.connection = Connection(ours, self.worker._checker.fresh(), self.clock())
        # As Worker.open does, and as when epoll reports the connection
        # made: the first requests go.
        self.worker.opened += 1
        self.worker.connections[self.connection.fd] = self.connection
        self.worker.connecting += 1
        self.worker._connectDone(self.connection)

    def at(self, now: int) -> None:
        """
        Move time to C{now} (ns): the worker's clock, and its time as of
        the latest poll, which it stamps on what it hears.
        """
        self.clock.now = now
        self.worker.now = now

    def received(self, size: int) -> bytes:
        """
        What the server end got: exactly C{size} bytes.
        """
        data = b""
        while len(data) < size:
            chunk = self.server.recv(size - len(data))
            assert chunk, f"only {data!r} arrived"
            data += chunk
        return data

    def reply(self, data: bytes) -> None:
        """
        The server sends C{data}, and the worker reads it (one read).
        """
        self.server.sendall(data)
        self.worker.read(self.connection)

    def readAll(self) -> None:
        """
        Let the worker read until the connection is closed or nothing is
        left (at most a few reads: the data is all there).
        """
        for _ in range(10):
            if self.connection.closed:
                return
            self.worker.read(self.connection)

    def close(self) -> None:
        """
        Close both ends.
        """
        self.server.close()
        self.connection.sock.close()


# The conversations fixture: makes a conversation from a plan and,
# optionally, the function that makes its load.
Conversations = Callable[..., Conversation]
