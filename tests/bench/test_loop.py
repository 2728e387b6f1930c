"""
Tests for L{sockplay.bench.loop}: the worker's accounting of requests,
replies, errors and latencies, through a local socket pair and a fake
clock.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from support.bench import PREFIX, Conversations, FakeClock, FakePoller, localPlan

from sockplay.bench import loop
from sockplay.bench.check import makeExchange
from sockplay.bench.load import NS
from sockplay.bench.loads import makeLoad
from sockplay.bench.loop import Worker
from sockplay.bench.plan import Plan
from sockplay.bench.poller import WRITE


def test_workerCountsMismatchByKind(conversations: Conversations) -> None:
    """
    On a keep-open connection with three requests in flight, a right reply
    counts as ok with its latency, a wrong one as one C{mismatch}, and the
    request behind it as unanswered; the connection is closed.
    """
    conversation = conversations(localPlan(pipeline=3, requests=3))
    assert conversation.received(9) == b"hi\nhi\nhi\n"
    conversation.clock.now = 2_500_000
    conversation.server.sendall(b"Message received: hi\nOther: hi\n")
    conversation.readAll()
    worker = conversation.worker
    results = worker.results
    assert (results.requests, results.ok, results.unanswered) == (3, 1, 1)
    assert {kind: n for kind, n in results.errors.items() if n} == {"mismatch": 1}
    assert results.firstMismatch is not None and "Other: hi" in results.firstMismatch
    assert worker._latencies == {2500: 1}
    assert conversation.connection.closed


def test_workerSendsNextRequestOnReply(conversations: Conversations) -> None:
    """
    Closed loop, each reply lets the next request go, until the requests
    run out.
    """
    conversation = conversations(localPlan(pipeline=1, requests=2))
    assert conversation.received(3) == b"hi\n"
    conversation.server.sendall(b"Message received: hi\n")
    conversation.worker.read(conversation.connection)
    assert conversation.received(3) == b"hi\n"
    conversation.server.sendall(b"Message received: hi\n")
    conversation.worker.read(conversation.connection)
    results = conversation.worker.results
    assert (results.requests, results.ok, results.errorCount) == (2, 2, 0)


def test_workerCountsEarlyClose(conversations: Conversations) -> None:
    """
    A keep-open connection that the server closes in the middle of a reply
    counts one C{early-close}.
    """
    conversation = conversations(localPlan(requests=1))
    conversation.received(3)
    conversation.server.sendall(b"Message rec")
    conversation.server.close()
    conversation.readAll()
    results = conversation.worker.results
    assert (results.ok, {k: n for k, n in results.errors.items() if n}) == (
        0,
        {"early-close": 1},
    )


def test_workerOneShotEndsAtClose(conversations: Conversations) -> None:
    """
    A one-shot exchange counts as ok when the server closes after the
    whole reply, and its latency runs from the start to the close.
    """
    conversation = conversations(localPlan("raw", mode="one-shot", requests=1))
    assert conversation.received(2) == b"hi"
    conversation.clock.now = 1_000_000
    conversation.server.sendall(b"Message received: hi")
    conversation.worker.read(conversation.connection)
    assert conversation.worker.results.ok == 0
    conversation.clock.now = 3_000_000
    conversation.server.shutdown(socket.SHUT_WR)
    conversation.readAll()
    worker = conversation.worker
    assert (worker.results.ok, worker.results.errorCount, worker._latencies) == (1, 0, {3000: 1})


def test_workerOneShotCloseBeforeReply(conversations: Conversations) -> None:
    """
    A one-shot server that closes before the whole reply is an
    C{early-close}, and the exchange does not count as ok.
    """
    conversation = conversations(localPlan("raw", mode="one-shot", requests=1))
    conversation.received(2)
    conversation.server.sendall(b"Message received: ")
    conversation.server.shutdown(socket.SHUT_WR)
    conversation.readAll()
    results = conversation.worker.results
    assert (results.ok, results.errors["early-close"]) == (0, 1)


def test_workerIdleCloseIsEarly(conversations: Conversations) -> None:
    """
    A keep-open server that closes an idle connection in the middle of a
    run counts as an C{early-close} too.
    """
    conversation = conversations(localPlan(requests=1))
    conversation.received(3)
    conversation.server.sendall(b"Message received: hi\n")
    conversation.worker.read(conversation.connection)
    conversation.server.close()
    conversation.readAll()
    results = conversation.worker.results
    assert (results.ok, results.errors["early-close"]) == (1, 1)


class TimePassingPoller(FakePoller):
    """
    Stands in for epoll in a whole run: nothing is ever read, each poll
    moves the fake clock on by what it was asked to wait, and a connection
    being made is reported writable (made) at the next poll.
    """

    def __init__(self, clock: FakeClock[int]) -> None:
        self._clock = clock
        self._connecting: list[int] = []

    def register(self, fd: int, mask: int) -> None:
        if mask & WRITE:
            self._connecting.append(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        self._clock.now += max(int(timeout * NS), 1)
        ready, self._connecting = self._connecting, []
        return [(fd, WRITE) for fd in ready]


@pytest.mark.parametrize("mode", ["one-shot", "keep-open"])
def test_runStopsWhenNothingIsAnsweredInTime(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A run in which not one exchange is answered within the exchange
    timeout stops there, as C{timeout}, instead of waiting for its
    duration or deadline: waiting for more would only repeat it.
    """
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen(8)
        clock = FakeClock(0)
        monkeypatch.setattr(loop, "makePoller", lambda: (TimePassingPoller(clock), True))
        plan = Plan(socket.AF_UNIX, path, makeExchange("raw", b"hi", PREFIX), mode=mode,
                    connections=2, duration=10.0, deadline=20.0, timeout=2.0)
        results = Worker(makeLoad(plan), clock=clock).run()
    assert (results.stopped, results.ok, results.errors["timeout"]) == ("timeout", 0, 2)
    assert results.symptoms["no-reply"] == 2
    assert 2.0 <= results.elapsed < 2.5
