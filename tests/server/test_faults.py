"""
Tests for the faults a server connection injects (L{FaultyEchoReplyProtocol}):
jitter, truncate, stall, cut-after and throttle, each on in-memory
transports with a fake clock, and what each tells the factory's
C{injectedObservers}.
"""

from __future__ import annotations

from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fakes import LOOPBACK_PEER, FakeSendQueue, HalfCloseableTransport, serverSettings
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from sockplay.server import ConnectionState, EchoReplyFactory
from sockplay.server.faults import INJECTED_KINDS, FaultyEchoReplyProtocol
from sockplay.server.faultsettings import Faults
from sockplay.server.settings import DEFAULT_LINGER, DEFAULT_PREFIX, ConnectionRecord

P = DEFAULT_PREFIX
READING = ConnectionState.READING
CLOSING = ConnectionState.CLOSING


class Server:
    """
    A factory on a fake clock whose connections always inject faults, with
    what it tells its observers.

    @ivar injected: each (kind, count) the connections injected.
    @ivar records: each closed connection's record.
    """

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("framing", "line")
        settings.setdefault("keepOpen", True)
        settings.setdefault("quiet", True)
        self.clock = Clock()
        self.factory = EchoReplyFactory(serverSettings(**settings), clock=self.clock)
        self.factory.allowFaultChanges()
        self.factory.random = Random(0)
        self.injected: list[tuple[str, int]] = []
        self.factory.injectedObservers.append(
            lambda kind, count: self.injected.append((kind, count))
        )
        self.records: list[ConnectionRecord] = []
        self.factory.observers.append(self.records.append)

    def connect(self) -> tuple[FaultyEchoReplyProtocol, HalfCloseableTransport]:
        """
        A new connection, made now.
        """
        protocol = self.factory.buildProtocol(LOOPBACK_PEER)
        assert isinstance(protocol, FaultyEchoReplyProtocol)
        transport = HalfCloseableTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def set(self, **faults: Any) -> None:
        """
        Put these faults in force, as C{PUT /faults} does.
        """
        self.factory.setFaults(Faults(**faults), "a test")

    def timers(self) -> int:
        """
        The timers still set, the sweep's aside.
        """
        loop = self.factory.sweep._loop
        sweep = None if loop is None else loop.call
        return sum(1 for call in self.clock.getDelayedCalls() if call is not sweep)


def follow(clock: Clock, seconds: float) -> None:
    """
    Move C{clock} on by C{seconds}, stopping at each timer on its time, as
    a reactor that is not busy runs them.
    """
    end = clock.seconds() + seconds
    while True:
        due = [call.getTime() for call in clock.getDelayedCalls() if call.getTime() <= end]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(end - clock.seconds())


def lose(protocol: FaultyEchoReplyProtocol, reason: type[Exception] = ConnectionDone) -> None:
    protocol.connectionLost(Failure(reason()))


# Jitter


@given(st.integers(0, 2**32))
def test_jitterStaysWithinDelayAndJitter(seed: int) -> None:
    """
    A reply's wait is the delay plus a draw of the jitter: never less than
    the delay, never more than the two together.
    """
    faults = Faults(delay=0.2, jitter=0.3)
    random = Random(seed)
    for _ in range(20):
        assert 0.2 <= faults.replyDelay(random) <= 0.5


def test_jitterVaries() -> None:
    """
    The jitter is drawn per reply: replies wait different times, spread
    over most of the jitter.
    """
    faults = Faults(delay=1.0, jitter=0.5)
    random = Random(1)
    waits = [faults.replyDelay(random) for _ in range(200)]
    assert max(waits) - min(waits) > 0.4
    assert len(set(waits)) == 200


def test_jitteredRepliesKeepTheirOrder() -> None:
    """
    A reply never overtakes an earlier one, whatever each drew: each is
    sent within the delay and jitter of its message, or with the reply
    before it.
    """
    server = Server(delay=0.1, jitter=1.0)
    protocol, transport = server.connect()
    for index in range(20):
        protocol.dataReceived(b"%d\n" % index)
        server.clock.advance(0.05)
    replies = b"".join(P + b"%d\n" % index for index in range(20))
    assert replies.startswith(transport.value()) and transport.value() != replies
    server.clock.advance(1.1)
    assert transport.value() == replies


def test_jitterWaitsAtLeastTheDelay() -> None:
    """
    With a jitter, no reply comes before the delay, and every reply has
    come by the delay plus the jitter.
    """
    server = Server(keepOpen=False, delay=0.5, jitter=0.5)
    for _ in range(30):
        protocol, transport = server.connect()
        start = server.clock.seconds()
        protocol.dataReceived(b"hi\n")
        server.clock.advance(0.499)
        assert transport.value() == b""
        server.clock.advance(0.502)
        assert transport.value() == P + b"hi\n"
        lose(protocol)
        server.clock.advance(1 - (server.clock.seconds() - start))


# Truncate


def test_truncateSendsHalfTheReplyThenCloses() -> None:
    """
    A message that draws a truncation gets the first half of its reply,
    then the server's half-close; the connection ends as truncated-reply.
    """
    server = Server(truncateRate=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"hello\n")
    reply = P + b"hello\n"
    assert transport.value() == reply[: len(reply) // 2]
    assert transport.writeClosed
    assert (protocol.state, protocol.outcome, protocol.messages) == (
        CLOSING, "truncated-reply", 0,
    )
    assert protocol.bytesOut == len(reply) // 2
    assert server.injected == [("truncate", 1)]
    lose(protocol)
    assert server.records[0].outcome == "truncated-reply"


def test_truncateComesAfterEarlierReplies() -> None:
    """
    The replies to the messages before the truncated one go out whole and
    first; a change of faults applies to the next message only.
    """
    server = Server()
    protocol, transport = server.connect()
    protocol.dataReceived(b"a\n")
    server.set(truncateRate=1)
    protocol.dataReceived(b"bb\n")
    assert transport.value() == P + b"a\n" + (P + b"bb\n")[:10]


def test_truncateWaitsForTheDelay() -> None:
    """
    The part of a truncated reply waits for the delay as a whole reply
    does, and the close comes after it.
    """
    server = Server(truncateRate=1, delay=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"hello\n")
    assert (transport.value(), transport.writeClosed) == (b"", False)
    server.clock.advance(1)
    assert transport.value() == (P + b"hello\n")[:12]
    assert transport.writeClosed


def test_truncateAtEndOfInput() -> None:
    """
    A message ended by the client's end of input (eof framing) is truncated
    too, and the connection then closes fully.
    """
    server = Server(framing="eof", keepOpen=False, truncateRate=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"whole message")
    protocol.readConnectionLost()
    reply = P + b"whole message"
    assert transport.value() == reply[: len(reply) // 2]
    assert transport.disconnecting
    assert protocol.outcome == "truncated-reply"


def test_truncateOfAOneByteReplySendsNothing() -> None:
    """
    Half of a one-byte reply, rounded down, is nothing: fewer bytes than
    the reply, as a truncation promises.
    """
    server = Server(framing="raw", keepOpen=False, prefix=b"", truncateRate=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"x")
    assert (transport.value(), transport.writeClosed) == (b"", True)


# Stall


def test_stallAnswersNothing() -> None:
    """
    A stalled message gets no reply; what the client sends next is read
    and discarded, and gets no reply either.
    """
    server = Server(stallRate=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"a\n")
    server.set()
    protocol.dataReceived(b"b\nc\n")
    assert transport.value() == b""
    assert (protocol.state, protocol.outcome, protocol.bytesIn) == (READING, "stalled", 6)
    assert not (transport.writeClosed or transport.disconnecting)
    assert server.injected == [("stall", 1)]


def test_stalledConnectionEndsAtIdleTimeout() -> None:
    """
    A client that keeps sending does not keep a stalled connection: the
    idle timeout counts from the stalled message, and ends it with a close
    and no error text, as stalled.
    """
    server = Server(stallRate=1, idleTimeout=3)
    protocol, transport = server.connect()
    server.clock.advance(2)
    protocol.dataReceived(b"a\n")
    for _ in range(2):
        server.clock.advance(1)
        protocol.dataReceived(b"more\n")
    assert not transport.writeClosed
    server.clock.advance(1.3)
    assert (transport.value(), transport.writeClosed) == (b"", True)
    protocol.readConnectionLost()
    lose(protocol)
    assert server.records[0].outcome == "stalled"


def test_stalledConnectionClosedByTheClient() -> None:
    """
    With eof framing the end of input completes the message, which stalls:
    the connection is held (with no idle timeout, for as long as the client
    keeps it) and closes, as stalled, when the client gives up.
    """
    server = Server(framing="eof", keepOpen=False, stallRate=1, idleTimeout=0)
    protocol, transport = server.connect()
    protocol.dataReceived(b"first")
    protocol.readConnectionLost()
    # eof framing: the message is complete only now, and stalls.
    assert (transport.value(), protocol.outcome) == (b"", "stalled")
    assert not transport.disconnecting
    server.clock.advance(3600)
    assert not transport.disconnecting
    lose(protocol)
    assert server.records[0].outcome == "stalled"


def test_stalledConnectionHeldAfterHalfClose() -> None:
    """
    A client that half-closes after its message (C{nc -N}) still waits for
    the reply: a stalled connection is held all the same, and the idle
    timeout ends it, as stalled, with no reply to anything.
    """
    server = Server(keepOpen=False, stallRate=1, idleTimeout=3)
    protocol, transport = server.connect()
    protocol.dataReceived(b"a\n")
    protocol.dataReceived(b"tail")
    protocol.readConnectionLost()
    server.clock.advance(2.9)
    assert (transport.value(), transport.disconnecting, transport.writeClosed) == (
        b"", False, False
    )
    server.clock.advance(0.4)
    assert (transport.value(), transport.writeClosed or transport.disconnecting) == (b"", True)
    lose(protocol)
    assert server.records[0].outcome == "stalled"


def test_drainEndsAStalledConnection() -> None:
    """
    A drain closes a stalled connection without a reply or an error, and
    its outcome stays stalled.
    """
    server = Server(stallRate=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"a\n")
    server.factory.drain(10)
    assert (transport.value(), transport.writeClosed) == (b"", True)
    assert protocol.outcome == "stalled"


# Cut after


def test_cutAfterResets() -> None:
    """
    A connection is reset cutAfter seconds after it opened, whatever it is
    doing, as cut.
    """
    server = Server(cutAfter=5, delay=10)
    protocol, transport = server.connect()
    protocol.dataReceived(b"owed\n")
    server.clock.advance(4.9)
    assert not transport.aborted
    server.clock.advance(0.1)
    assert transport.aborted
    assert transport.value() == b""
    assert protocol.outcome == "cut"
    assert ("cut", 1) in server.injected
    lose(protocol, ConnectionLost)
    assert server.records[0].outcome == "cut"
    assert server.timers() == 0


def test_cutEndsALingeringConnection() -> None:
    """
    A connection whose client does not close after its reply is cut too,
    if its cut comes before the linger's end.
    """
    server = Server(keepOpen=False, cutAfter=1)
    protocol, transport = server.connect()
    protocol.dataReceived(b"a\n")
    assert transport.writeClosed
    server.clock.advance(1)
    assert transport.aborted
    assert protocol.outcome == "cut"


def test_cutTimerDiesWithTheConnection() -> None:
    """
    A connection that closes before its cut leaves no timer behind.
    """
    server = Server(cutAfter=5, idleTimeout=0)
    protocol, transport = server.connect()
    assert server.timers() == 1
    lose(protocol)
    assert server.clock.getDelayedCalls() == []
    server.clock.advance(10)
    assert not transport.aborted
    assert server.injected == []


def test_refusedConnectionIsNotCut() -> None:
    """
    A connection refused over a limit sets no cut: it is closing already.
    """
    server = Server(cutAfter=5, idleTimeout=0, maxConnections=1)
    server.connect()
    refused, _ = server.connect()
    assert refused.state is ConnectionState.REFUSED
    assert server.timers() == 1


def test_cutRearmedWhenFaultsChange() -> None:
    """
    A change of cutAfter re-sets the cut of every open connection, counted
    from when each opened: later, earlier, or at once if that is past.
    """
    server = Server(idleTimeout=0)
    early, earlyTransport = server.connect()
    server.clock.advance(2)
    _, lateTransport = server.connect()
    server.set(cutAfter=5)
    server.clock.advance(2.9)
    assert not earlyTransport.aborted
    server.clock.advance(0.1)
    assert earlyTransport.aborted and not lateTransport.aborted
    lose(early, ConnectionLost)
    server.set(cutAfter=3)
    # 'late' opened 3 s ago: its cut is due now.
    server.clock.advance(0)
    assert lateTransport.aborted
    assert [kind for kind, _ in server.injected] == ["cut", "cut"]


def test_cutDisarmedByZero() -> None:
    """
    Setting cutAfter to 0 takes every open connection's cut away.
    """
    server = Server(cutAfter=5, idleTimeout=0)
    _, transport = server.connect()
    server.set(cutAfter=0)
    assert server.clock.getDelayedCalls() == []
    server.clock.advance(10)
    assert not transport.aborted


def test_otherChangesLeaveTheCut() -> None:
    """
    A change that leaves cutAfter as it was does not touch the connections'
    cuts.
    """
    server = Server(cutAfter=5, idleTimeout=0)
    protocol, _ = server.connect()
    timer = protocol._cutTimer
    server.set(cutAfter=5, delay=1)
    assert protocol._cutTimer is timer


# Throttle


def test_throttleSpreadsAReply() -> None:
    """
    A throttled reply goes out a tenth of a second's worth at once, then in
    chunks, never more than the burst plus the rate times the time since.
    """
    server = Server(throttle=100, idleTimeout=0)
    protocol, transport = server.connect()
    message = b"x" * 81
    reply = P + message + b"\n"
    assert len(reply) == 100
    protocol.dataReceived(message + b"\n")
    sent = [len(transport.value())]
    for _ in range(12):
        follow(server.clock, 0.1)
        sent.append(len(transport.value()))
    assert sent[0] == 10
    for tick, count in enumerate(sent):
        assert count <= 10 + 100 * 0.1 * tick + 1e-9
        # (A tick's grace: the timers' float arithmetic.)
        assert count >= min(100, 10 + 100 * 0.1 * (tick - 1))
    assert sent[10] == 100
    assert transport.value() == reply
    assert server.injected == [("throttle", 1)]
    assert server.clock.getDelayedCalls() == []


def test_smallReplyUnderTheThrottleGoesAtOnce() -> None:
    """
    A reply within the burst goes out at once, with no timer.
    """
    server = Server(throttle=20000, idleTimeout=0)
    protocol, transport = server.connect()
    protocol.dataReceived(b"hi\n")
    assert transport.value() == P + b"hi\n"
    assert server.clock.getDelayedCalls() == []


def test_throttledOneShotClosesAfterItsLastByte() -> None:
    """
    A one-shot connection half-closes only once its throttled reply is all
    written.
    """
    server = Server(keepOpen=False, throttle=10)
    protocol, transport = server.connect()
    protocol.dataReceived(b"abc\n")
    assert not transport.writeClosed
    follow(server.clock, 1.95)
    assert transport.value() == (P + b"abc\n")[:20] and not transport.writeClosed
    follow(server.clock, 0.2)
    assert transport.value() == P + b"abc\n"
    assert transport.writeClosed


def test_throttleKeepsOrderWithTheDelay() -> None:
    """
    Delayed replies pass through the throttle in order, after the delay.
    """
    server = Server(throttle=200, delay=1, idleTimeout=0)
    protocol, transport = server.connect()
    protocol.dataReceived(b"a" * 50 + b"\n")
    follow(server.clock, 0.5)
    protocol.dataReceived(b"b\n")
    follow(server.clock, 0.5)
    assert transport.value() == (P + b"a" * 50 + b"\n")[:20]
    follow(server.clock, 5)
    assert transport.value() == P + b"a" * 50 + b"\n" + P + b"b\n"
    assert server.injected == [("delay", 1), ("throttle", 1), ("delay", 1), ("throttle", 1)]


def test_throttleTimerDiesWithTheConnection() -> None:
    """
    A connection lost while its reply is throttled writes nothing more and
    leaves no timer.
    """
    server = Server(throttle=10, idleTimeout=0)
    protocol, transport = server.connect()
    protocol.dataReceived(b"hello\n")
    written = transport.value()
    assert server.clock.getDelayedCalls() != []
    lose(protocol, ConnectionLost)
    assert server.clock.getDelayedCalls() == []
    server.clock.advance(10)
    assert transport.value() == written


def test_throttleLiftedReleasesTheRest() -> None:
    """
    Setting the throttle to 0 sends what it held at its next tick.
    """
    server = Server(throttle=10, idleTimeout=0)
    protocol, transport = server.connect()
    protocol.dataReceived(b"hello\n")
    server.set()
    server.clock.advance(0.1)
    assert transport.value() == P + b"hello\n"


def test_lingerWaitsForAThrottledReply() -> None:
    """
    The linger does not end a connection whose reply the throttle still
    holds: it counts from when the last byte is written, as for a delayed
    reply.
    """
    server = Server(keepOpen=False, throttle=10)
    queue = FakeSendQueue()
    server.factory.unsentBytes = queue
    protocol, transport = server.connect()
    queue.unsent[transport] = 0
    protocol.dataReceived(b"x" * 81 + b"\n")
    # 100 bytes at 10 a second: 9.9 s after the first byte, far past the
    # linger.
    follow(server.clock, 9.95)
    assert not transport.aborted
    assert transport.value() == P + b"x" * 81 + b"\n"
    follow(server.clock, DEFAULT_LINGER - 0.6)
    assert not transport.aborted
    follow(server.clock, 1.5)
    assert transport.aborted
    assert protocol.outcome == "aborted"


@given(
    size=st.integers(1, 5000),
    rate=st.integers(1, 5000),
    ticks=st.lists(st.floats(0.001, 0.5), min_size=1, max_size=40),
)
def test_throttleNeverExceedsItsRate(size: int, rate: int, ticks: list[float]) -> None:
    """
    Whatever the reply and the rate, the bytes written by any time are at
    most a burst (a tenth of a second's worth, at least a byte) plus the
    rate times the time since, in order, and all of them in the end.
    """
    server = Server(framing="raw", prefix=b"", throttle=rate, idleTimeout=0)
    protocol, transport = server.connect()
    data = bytes(index % 251 for index in range(size))
    protocol.dataReceived(data)
    burst = max(1.0, rate / 10)
    elapsed = 0.0
    for tick in ticks:
        server.clock.advance(tick)
        elapsed += tick
        assert len(transport.value()) <= burst + rate * elapsed + 1e-6
    # Each timer on time from here: all of it goes out, in order.
    for _ in range(size + 1):
        calls = server.clock.getDelayedCalls()
        if not calls:
            break
        server.clock.advance(min(call.getTime() for call in calls) - server.clock.seconds())
    assert transport.value() == data


# What the observers are told


def test_delayCountedPerMessage() -> None:
    """
    A delay counts once per message whose reply it holds back, pipelined
    ones included; an error text is no message.
    """
    server = Server(delay=0.5)
    protocol, _ = server.connect()
    protocol.dataReceived(b"a\nb\nc\n")
    protocol.dataReceived(b"d\n")
    assert server.injected == [("delay", 3), ("delay", 1)]


def test_dropAndResetCountedPerConnection() -> None:
    """
    A drop and a reset count once each, under their kinds.
    """
    server = Server(dropRate=1)
    protocol, _ = server.connect()
    protocol.dataReceived(b"a\nb\n")
    server.set(resetRate=1)
    protocol, _ = server.connect()
    protocol.dataReceived(b"a\n")
    assert server.injected == [("drop", 1), ("reset", 1)]


def test_noFaultsNothingCounted() -> None:
    """
    A connection that may inject faults, with none in force, tells the
    observers nothing.
    """
    server = Server()
    protocol, transport = server.connect()
    protocol.dataReceived(b"a\n")
    assert transport.value() == P + b"a\n"
    assert server.injected == []


@pytest.mark.parametrize("kind", INJECTED_KINDS)
def test_everyKindIsInjectable(kind: str) -> None:
    """
    Each of the kinds the metrics list is one that a connection reports.
    """
    settings = {
        "delay": {"delay": 1}, "drop": {"dropRate": 1}, "reset": {"resetRate": 1},
        "truncate": {"truncateRate": 1}, "stall": {"stallRate": 1}, "cut": {"cutAfter": 1},
        "throttle": {"throttle": 1},
    }[kind]
    server = Server(**settings)
    protocol, _ = server.connect()
    protocol.dataReceived(b"a\n")
    server.clock.advance(1)
    assert kind in {injected for injected, _ in server.injected}
