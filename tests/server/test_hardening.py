"""
Tests for the server's defences (L{sockplay.server.protocol}): idle timeout,
connection limits, backpressure, graceful drain, connection records and
the test-endpoint knobs, all on in-memory transports and a fake clock.
"""

from __future__ import annotations

import os
import random
import signal
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.fakes import (
    LOOPBACK_HOST,
    LOOPBACK_PEER,
    FakeSendQueue,
    HalfCloseableTransport,
    serverSettings,
)
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.ssl import DefaultOpenSSLContextFactory
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from sockplay.certs import CertificateFiles, writeCertificates
from sockplay.server import EchoReplyFactory, EchoReplyProtocol
from sockplay.server.factory import CONNECTION_LOG_LEVELS
from sockplay.server.lifecycle import DrainService, SecondSignal
from sockplay.server.proxy import ProxyWrappingFactory
from sockplay.server.settings import (
    DEFAULT_LINGER,
    DEFAULT_PREFIX,
    ConnectionRecord,
)

P = DEFAULT_PREFIX

# A PROXY protocol v2 header with the LOCAL command and no address: what
# HAProxy sends on a health check to a send-proxy-v2 server.
PROXY_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack("!H", 0)

# The idle sweep's interval for a 3 s timeout: a connection is ended within
# this long after its timeout.
SWEEP = 0.3


def makeFactory(clock: Clock | None = None, **settings: Any) -> EchoReplyFactory:
    return EchoReplyFactory(serverSettings(**settings), clock=clock or Clock(), hostname="box")


def open_(
    factory: EchoReplyFactory, peer: str = "127.0.0.1", port: int = 40000
) -> tuple[EchoReplyProtocol, HalfCloseableTransport]:
    """
    Connect a new protocol of C{factory} from C{peer}.
    """
    transport = HalfCloseableTransport()
    transport.peerAddr = IPv4Address("TCP", peer, port)
    protocol = factory.buildProtocol(transport.peerAddr)
    protocol.makeConnection(transport)
    return protocol, transport


def close(protocol: EchoReplyProtocol, reason: type[Exception] = ConnectionDone) -> None:
    protocol.connectionLost(Failure(reason()))


@pytest.fixture
def records() -> list[ConnectionRecord]:
    return []


# Idle timeout


def test_idleTimeoutBeforeFirstMessage() -> None:
    """
    A client that connects and says nothing gets a framed idle-timeout error
    after the timeout, and the server closes its side.
    """
    clock = Clock()
    protocol, transport = open_(makeFactory(clock, framing="line", idleTimeout=3))
    clock.advance(2.9)
    assert transport.value() == b""
    clock.advance(0.1 + SWEEP)
    assert transport.value() == b"Error: idle timeout (3 s)\n"
    assert transport.writeClosed
    assert protocol.outcome == "idle-timeout"


def test_slowlorisIsCutOff() -> None:
    """
    Trickling a message that never completes does not keep a connection
    alive: only complete messages count as activity.
    """
    clock = Clock()
    protocol, transport = open_(makeFactory(clock, framing="line", idleTimeout=3))
    for _ in range(5):
        protocol.dataReceived(b"x")
        clock.advance(1)
    assert protocol.outcome == "idle-timeout"
    assert transport.value() == b"Error: idle timeout (3 s)\n"


def test_idleTimeoutCountsFromLastMessage() -> None:
    """
    With keep-open, each complete message starts the idle period anew.
    """
    clock = Clock()
    protocol, transport = open_(
        makeFactory(clock, framing="line", keepOpen=True, idleTimeout=3)
    )
    clock.advance(2)
    protocol.dataReceived(b"a\n")
    clock.advance(2)
    protocol.dataReceived(b"b\n")
    clock.advance(2.9)
    assert protocol.outcome is None
    clock.advance(0.1 + SWEEP)
    assert protocol.outcome == "idle-timeout"
    assert transport.value() == P + b"a\n" + P + b"b\n" + b"Error: idle timeout (3 s)\n"


def test_idleTimeoutInt32Framed() -> None:
    """
    The idle error is framed like any reply: int32 gets a length prefix.
    """
    clock = Clock()
    _protocol, transport = open_(makeFactory(clock, framing="int32", idleTimeout=1))
    clock.advance(1.1)
    body = b"Error: idle timeout (1 s)"
    assert transport.value() == len(body).to_bytes(4, "big") + body


def test_sweepInterval() -> None:
    """
    Idle and lingering connections are looked for every tenth of the idle
    timeout or of the linger period, whichever is shorter, at most every
    second.
    """
    assert makeFactory(idleTimeout=3).sweep.interval() == pytest.approx(0.3)
    assert makeFactory(idleTimeout=30).sweep.interval() == pytest.approx(0.5)
    assert makeFactory(idleTimeout=30, lingerTimeout=60).sweep.interval() == 1.0
    assert makeFactory(idleTimeout=0, lingerTimeout=2).sweep.interval() == pytest.approx(0.2)


def test_oneSweepForAllConnections() -> None:
    """
    Idle connections cost no timer of their own: one sweep serves them all,
    and it stops when the last connection closes.
    """
    clock = Clock()
    factory = makeFactory(clock, idleTimeout=3)
    protocols = [open_(factory, port=port)[0] for port in range(100)]
    assert len(clock.getDelayedCalls()) == 1
    for protocol in protocols:
        close(protocol)
    assert clock.getDelayedCalls() == []


def test_idleTimeoutOff() -> None:
    """
    An idle timeout of 0 turns it off: no timer at all.
    """
    clock = Clock()
    protocol, _ = open_(makeFactory(clock, idleTimeout=0))
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    assert protocol.outcome is None


def test_nonReadingClientAbortedAfterGrace() -> None:
    """
    A client that does not read its idle-timeout error (so the half-close
    never goes out) is aborted after the linger grace period.
    """
    clock = Clock()
    protocol, transport = open_(makeFactory(clock, idleTimeout=1))
    clock.advance(1.1)
    assert protocol.outcome == "idle-timeout"
    assert not transport.aborted
    clock.advance(DEFAULT_LINGER)
    assert transport.aborted


def test_timersDieWithConnection() -> None:
    """
    No timer outlives its connection, whatever state it closes in.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True, delay=1)
    protocol, _ = open_(factory)
    protocol.dataReceived(b"a\n")
    assert clock.getDelayedCalls()
    close(protocol, ConnectionLost)
    assert clock.getDelayedCalls() == []


# Connection limits


def test_maxConnectionsBusy() -> None:
    """
    The connection over the limit gets a framed C{Error: server busy} and is
    closed at once; the ones within the limit are untouched, and a place
    frees up when one closes.
    """
    factory = makeFactory(framing="line", maxConnections=2)
    first, _ = open_(factory)
    open_(factory)
    third, thirdTransport = open_(factory)
    assert thirdTransport.value() == b"Error: server busy\n"
    assert thirdTransport.disconnecting
    assert third.outcome == "busy"
    assert len(factory.connections) == 2
    close(third)
    assert len(factory.connections) == 2
    close(first)
    fourth, fourthTransport = open_(factory)
    assert fourthTransport.value() == b""
    assert fourth.admitted


def test_maxConnectionsZeroIsUnlimited() -> None:
    """
    0 means no connection limit.
    """
    factory = makeFactory(maxConnections=0)
    for port in range(50):
        protocol, _ = open_(factory, port=port)
        assert protocol.admitted


def test_maxPerPeer() -> None:
    """
    One IP address may hold at most C{maxPerPeer} connections; others are
    not affected, and the count goes down as connections close.
    """
    factory = makeFactory(framing="line", maxPerPeer=2)
    a1, _ = open_(factory, "127.0.0.2", 1)
    open_(factory, "127.0.0.2", 2)
    a3, a3Transport = open_(factory, "127.0.0.2", 3)
    assert a3Transport.value() == b"Error: too many connections from 127.0.0.2\n"
    assert a3.outcome == "peer-limit"
    b1, _ = open_(factory, "127.0.0.3", 1)
    assert b1.admitted
    close(a3)
    close(a1)
    a4, _ = open_(factory, "127.0.0.2", 4)
    assert a4.admitted


# Backpressure


def test_registersAsStreamingProducer() -> None:
    """
    The protocol is the streaming producer of its own transport.
    """
    protocol, transport = open_(makeFactory(keepOpen=True))
    assert transport.producer is protocol
    assert transport.streaming


def test_pausesReadingWhileWriteBufferFull() -> None:
    """
    When the transport says its buffer is full, the protocol stops reading;
    it reads again when told the buffer drained.
    """
    protocol, transport = open_(makeFactory(framing="line", keepOpen=True))
    protocol.pauseProducing()
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"


def test_unregistersBeforeClosing() -> None:
    """
    The producer is unregistered before the server closes its side, and
    reading resumes if it was paused, so the client's close is seen.
    """
    protocol, transport = open_(makeFactory(framing="line", keepOpen=True, maxMessage=3))
    protocol.pauseProducing()
    protocol.dataReceived(b"too long\n")
    assert transport.writeClosed
    assert transport.producer is None
    assert transport.producerState == "producing"


# Graceful drain


def test_drainClosesKeepOpenConnections() -> None:
    """
    Draining half-closes every open connection after the replies already
    owed; the drain completes when the clients close.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True)
    a, aTransport = open_(factory)
    b, bTransport = open_(factory)
    a.dataReceived(b"hi\n")
    done = factory.drain(10)
    assert aTransport.writeClosed and bTransport.writeClosed
    assert aTransport.value() == P + b"hi\n"
    a.dataReceived(b"late\n")
    assert aTransport.value() == P + b"hi\n"
    assert not done.called
    a.readConnectionLost()
    close(a)
    b.readConnectionLost()
    close(b)
    assert done.called
    assert (factory.drained, factory.aborted) == (2, 0)
    assert a.outcome == "shutdown"
    assert clock.getDelayedCalls() == []


def test_drainTimeoutAborts() -> None:
    """
    Connections still open when the drain timeout runs out are aborted.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True, lingerTimeout=60)
    a, aTransport = open_(factory)
    b, bTransport = open_(factory)
    done = factory.drain(2)
    b.readConnectionLost()
    close(b)
    clock.advance(2)
    assert aTransport.aborted and not bTransport.aborted
    close(a, ConnectionLost)
    assert done.called
    assert (factory.drained, factory.aborted) == (1, 1)
    assert (a.outcome, b.outcome) == ("aborted", "shutdown")


def test_drainWaitsForDelayedReply() -> None:
    """
    A reply owed when the drain starts (here, delayed) is still sent before
    the server closes its side.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True, delay=1)
    protocol, transport = open_(factory)
    protocol.dataReceived(b"owed\n")
    factory.drain(10)
    assert transport.value() == b"" and not transport.writeClosed
    clock.advance(1)
    assert transport.value() == P + b"owed\n"
    assert transport.writeClosed


# The sweep's interval with the default idle timeout and linger: a tenth of
# the linger.
LINGER_SWEEP = DEFAULT_LINGER / 10


def drainWithSlowReader(
    unsent: int, timeout: float
) -> tuple[EchoReplyFactory, EchoReplyProtocol, HalfCloseableTransport, FakeSendQueue, Clock,
           Deferred[None]]:
    """
    Start a drain of C{timeout} seconds while a keep-open line connection
    has a reply of which C{unsent} bytes have not reached its client, as a
    fake send queue says.

    @return: the factory, the connection, its transport, the fake send
        queue, the clock, and the drain's Deferred.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True)
    queue = FakeSendQueue()
    factory.unsentBytes = queue
    protocol, transport = open_(factory)
    protocol.dataReceived(b"large\n")
    queue.unsent[transport] = unsent
    done = factory.drain(timeout)
    assert transport.writeClosed
    return factory, protocol, transport, queue, clock, done


def test_drainKeepsAReplyThatIsBeingRead() -> None:
    """
    A drain does not discard a reply that its client is still reading at a
    steady pace: past the linger period, within the drain timeout, the
    connection stays until the client has read it all and closes, and it
    counts as drained.
    """
    factory, protocol, transport, queue, clock, done = drainWithSlowReader(8000, 10)
    while queue.unsent[transport]:
        clock.pump([LINGER_SWEEP] * 2)
        queue.unsent[transport] -= 1000
        assert not transport.aborted
    assert clock.seconds() > DEFAULT_LINGER
    protocol.readConnectionLost()
    close(protocol)
    assert done.called
    assert (factory.drained, factory.aborted) == (1, 0)
    assert protocol.outcome == "shutdown"


def test_drainTimeoutEndsEvenASteadyReader() -> None:
    """
    The drain timeout bounds a reader that is still reading: whatever is
    open then is aborted.
    """
    factory, protocol, transport, queue, clock, done = drainWithSlowReader(60000, 8)
    for _ in range(15):
        clock.advance(LINGER_SWEEP)
        queue.unsent[transport] -= 100
    assert not transport.aborted
    clock.advance(LINGER_SWEEP)
    assert transport.aborted
    close(protocol, ConnectionLost)
    assert done.called
    assert (factory.drained, factory.aborted) == (0, 1)


def test_drainWithNothingOpen() -> None:
    """
    With no connection open, the drain is done at once.
    """
    factory = makeFactory()
    assert factory.drain(10).called


# Connection records and logs


def test_recordOnClose(records: list[ConnectionRecord]) -> None:
    """
    Each connection yields one record when it closes, with its peer,
    listener, framing, counts, duration and outcome.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True)
    factory.observers.append(records.append)
    protocol, _ = open_(factory, "127.0.0.9", 5555)
    protocol.dataReceived(b"ab\ncd\n")
    clock.advance(1.5)
    close(protocol)
    assert records == [
        ConnectionRecord(
            peer="tcp:127.0.0.9:5555",
            listener="tcp:127.0.0.1:12345",
            framing="line",
            messages=2,
            bytesIn=6,
            bytesOut=2 * len(P) + 6,
            duration=1.5,
            outcome="ok",
        )
    ]


def test_recordNamesATLSListenerSsl(records: list[ConnectionRecord]) -> None:
    """
    A connection over TLS names its listener C{ssl:}, as the endpoint that
    made it does, in the record and in a C{{listener}} prefix; its
    address alone would say C{tcp:}.
    """
    factory = makeFactory(prefix=b"{listener} ")
    factory.observers.append(records.append)
    transport = HalfCloseableTransport()
    directlyProvides(transport, ISSLTransport)
    protocol = factory.buildProtocol(transport.peerAddr)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"hi")
    close(protocol)
    assert transport.value() == b"ssl:127.0.0.1:12345 hi"
    assert records[0].listener == "ssl:127.0.0.1:12345"


def test_recordOutcomeReset(records: list[ConnectionRecord]) -> None:
    """
    A connection the client resets mid-conversation is recorded as C{reset}.
    """
    factory = makeFactory(framing="line", keepOpen=True)
    factory.observers.append(records.append)
    protocol, _ = open_(factory)
    protocol.dataReceived(b"partial")
    close(protocol, ConnectionLost)
    assert records[0].outcome == "reset"


def test_connectionLogEvent() -> None:
    """
    A closed connection is logged as one event with keyword fields, and no
    client bytes in it.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory = makeFactory(framing="line", keepOpen=True)
        protocol, _ = open_(factory)
        protocol.dataReceived(b"\x1b[31msecret\n")
        close(protocol)
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("event") == "connection"]
    assert event["outcome"] == "ok"
    assert event["messages"] == 1
    assert event["peer"] == "tcp:127.0.0.1:40000"
    assert not any(b"secret" in v for v in event.values() if isinstance(v, bytes))
    assert not any("secret" in v for v in event.values() if isinstance(v, str))


def test_quietLogsNothingPerConnection() -> None:
    """
    With quiet, no per-connection event is logged (observers still run).
    """
    events: list[LogEvent] = []
    records: list[ConnectionRecord] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory = makeFactory(quiet=True)
        factory.observers.append(records.append)
        protocol, _ = open_(factory)
        close(protocol)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e for e in events if e.get("event") == "connection"] == []
    assert len(records) == 1


# Templates, banner, delay, faults


def test_prefixTemplate() -> None:
    """
    {hostname}, {listener}, {peer} and {pid} are filled in once per connection;
    other braces are kept.
    """
    factory = makeFactory(
        framing="line", keepOpen=True, prefix=b"{hostname}|{listener}|{peer}|{pid}|{other}: "
    )
    protocol, transport = open_(factory, "127.0.0.7")
    protocol.dataReceived(b"a\nb\n")
    line = b"box|tcp:127.0.0.1:12345|127.0.0.7|%d|{other}: " % os.getpid()
    assert transport.value() == line + b"a\n" + line + b"b\n"


def test_banner() -> None:
    """
    A banner is sent, framed, as soon as the client connects.
    """
    protocol, transport = open_(makeFactory(framing="line", banner=b"hello {peer}"))
    assert transport.value() == b"hello 127.0.0.1\n"
    protocol.dataReceived(b"x\n")
    assert transport.value() == b"hello 127.0.0.1\n" + P + b"x\n"


def test_delayKeepsOrder() -> None:
    """
    With a delay, each reply is sent that long after its message, in order,
    by a timer.
    """
    clock = Clock()
    protocol, transport = open_(makeFactory(clock, framing="line", keepOpen=True, delay=2))
    protocol.dataReceived(b"a\n")
    clock.advance(1)
    protocol.dataReceived(b"b\n")
    assert transport.value() == b""
    clock.advance(1)
    assert transport.value() == P + b"a\n"
    clock.advance(1)
    assert transport.value() == P + b"a\n" + P + b"b\n"


def test_dropRateClosesWithoutReply() -> None:
    """
    With a drop rate of 1, every message is answered by a close.
    """
    protocol, transport = open_(makeFactory(framing="line", keepOpen=True, dropRate=1))
    protocol.dataReceived(b"a\n")
    assert transport.value() == b""
    assert transport.disconnecting and not transport.aborted
    assert protocol.outcome == "dropped"


def test_resetRateAborts() -> None:
    """
    With a reset rate of 1, every message is answered by an abort (a RST on
    a real socket).
    """
    protocol, transport = open_(makeFactory(framing="line", keepOpen=True, resetRate=1))
    protocol.dataReceived(b"a\n")
    assert transport.value() == b""
    assert transport.aborted
    assert protocol.outcome == "reset-injected"


def test_faultRatesAreProbabilities() -> None:
    """
    A fractional rate hits about that share of messages (seeded draws).
    """
    factory = makeFactory(framing="line", dropRate=0.3)
    factory.random = random.Random(1)
    outcomes = []
    for port in range(1000):
        protocol, _ = open_(factory, port=port)
        protocol.dataReceived(b"a\n")
        outcomes.append(protocol.outcome)
        close(protocol)
    assert 250 < outcomes.count("dropped") < 350


def test_hostAndPeerKeptAfterClose() -> None:
    """
    The addresses are taken at connect: a closed TCP transport no longer
    knows them.
    """
    protocol, _ = open_(makeFactory())
    assert protocol.hostAddress == LOOPBACK_HOST
    assert protocol.peerAddress == LOOPBACK_PEER


def test_noDelay() -> None:
    """
    Keep-open replies are sent at once: Nagle's algorithm is turned off.
    """
    _, transport = open_(makeFactory(keepOpen=True))
    assert transport.noDelay


def test_oneShotSkipsKeepOpenSetUp() -> None:
    """
    A one-shot connection sends one reply, the first data on the socket:
    neither Nagle nor backpressure applies, so neither costs a call.
    """
    _, transport = open_(makeFactory())
    assert not transport.noDelay
    assert transport.producer is None


def test_localAddressOnlyWhenNeeded() -> None:
    """
    The local address (a getsockname call) is looked up only for the log,
    the observers, or a {listener} template.
    """
    quiet, _ = open_(makeFactory(quiet=True))
    assert quiet.hostAddress is None
    logged, _ = open_(makeFactory())
    assert logged.hostAddress == LOOPBACK_HOST
    templated, _ = open_(makeFactory(quiet=True, prefix=b"{listener} "))
    assert templated.hostAddress == LOOPBACK_HOST


# Issue 9: the drain's log and summary agree, and a second signal stops at once.


def test_drainClosesUntouchedConnectionAtOnce() -> None:
    """
    A connection on which nothing was said either way has no reply to
    protect: a drain closes it at once, rather than waiting up to the
    linger period for its client to close.
    """
    factory = makeFactory()
    protocol, transport = open_(factory)
    done = factory.drain(10)
    assert transport.disconnecting
    close(protocol)
    assert done.called
    assert (factory.drained, factory.aborted, protocol.outcome) == (1, 0, "shutdown")


class ClosingAtOnceTransport(HalfCloseableTransport):
    """
    A transport that reports the connection lost as soon as it is closed,
    as Twisted's TCP transport does once its write side is already shut.
    """

    def loseConnection(self) -> None:
        super().loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))


def test_drainEndsWhileStarting() -> None:
    """
    A drain whose every connection closes as it is shut down has finished
    by the time it is started.
    """
    clock = Clock()
    factory = makeFactory(clock)
    transport = ClosingAtOnceTransport()
    protocol = factory.buildProtocol(transport.peerAddr)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    done = factory.drain(10)
    assert done.called
    assert (factory.drained, factory.aborted) == (1, 0)
    assert clock.getDelayedCalls() == []


def test_drainCountsLingerAbortAsAborted() -> None:
    """
    A connection aborted during the drain because its client did not close
    after the server's half-close is logged C{aborted} and counted as
    aborted in the summary, not as drained: the two agree.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True)
    records: list[ConnectionRecord] = []
    factory.observers.append(records.append)
    protocol, transport = open_(factory)
    protocol.dataReceived(b"hi\n")
    done = factory.drain(10)
    assert transport.writeClosed and not transport.aborted
    clock.advance(DEFAULT_LINGER + 1)
    assert transport.aborted
    close(protocol, ConnectionLost)
    assert done.called
    assert [record.outcome for record in records] == ["aborted"]
    assert (factory.drained, factory.aborted) == (0, 1)


def test_stopDrainNowAborts() -> None:
    """
    Told to stop now (a second signal), the drain aborts every connection
    it still waits for, without waiting for its timeout, and finishes.
    """
    clock = Clock()
    factory = makeFactory(clock, framing="line", keepOpen=True)
    protocol, transport = open_(factory)
    protocol.dataReceived(b"hi\n")
    done = factory.drain(10)
    factory.stopDrainNow()
    assert transport.aborted
    close(protocol, ConnectionLost)
    assert done.called
    assert (factory.drained, factory.aborted, protocol.outcome) == (0, 1, "aborted")
    assert clock.getDelayedCalls() == []


class FakeSignals:
    """
    Stands for a L{SecondSignal}: caught, and the callback kept.
    """

    caught = True

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], object]] = []

    def whenSecond(self, callback: Callable[[], object]) -> None:
        self.callbacks.append(callback)


def test_drainServiceSaysHowLongAndHowToStop(logged: list[str]) -> None:
    """
    When the drain begins, the log says how many connections it waits for,
    for how long at most, and that a second Ctrl-C stops it at once; that
    second signal aborts them, and the summary counts them as aborted.
    """
    factory = makeFactory(Clock(), framing="line", keepOpen=True)
    protocol, transport = open_(factory)
    protocol.dataReceived(b"hi\n")
    signals = FakeSignals()
    service = DrainService(factory, 10, signals)
    service.startService()
    done = service.stopService()
    assert logged[-1] == (
        "Shutting down: no longer accepting; draining 1 connection, waiting up to 10 s; "
        "press Ctrl-C again to stop now"
    )
    [stopNow] = signals.callbacks
    stopNow()
    assert transport.aborted
    close(protocol, ConnectionLost)
    assert done.called
    assert "Shutdown complete: 0 connections drained, 1 aborted" in logged


def test_drainServiceWithNothingOpen(logged: list[str]) -> None:
    """
    With no connection open, the drain says so, and offers no second signal.
    """
    service = DrainService(makeFactory(), 10, FakeSignals())
    service.startService()
    assert service.stopService().called
    assert "Shutting down: no longer accepting; no connection to drain" in logged
    assert not any("press Ctrl-C" in line for line in logged)


class SignalledReactor:
    """
    The parts of a reactor that L{SecondSignal} uses: its own signal
    handlers, and C{callFromThread}.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []
        self.stops: list[int] = []
        self.running: list[Callable[[], object]] = []

    def sigInt(self, number: int, frame: object = None) -> None:
        self.stops.append(number)

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.stops.append(number)

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.calls.append(f)

    def callWhenRunning(self, f: Callable[[], object]) -> None:
        self.running.append(f)


@pytest.fixture
def restoreSignals() -> Iterator[None]:
    """
    Put back this process's SIGINT and SIGTERM handlers after the test.
    """
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def installedSignals(reactor: SignalledReactor) -> SecondSignal:
    """
    A L{SecondSignal} installed over C{reactor}'s own handlers, once the
    reactor runs.
    """
    signal.signal(signal.SIGINT, reactor.sigInt)
    signal.signal(signal.SIGTERM, reactor.sigTerm)
    signals = SecondSignal(reactor)  # type: ignore[arg-type]
    signals.startService()
    assert not signals.caught
    [install] = reactor.running
    install()
    assert signals.caught
    return signals


def deliver(signum: int) -> None:
    """
    Run this process's handler of C{signum}, as a signal would.
    """
    handler = signal.getsignal(signum)
    assert callable(handler)
    handler(signum, None)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_secondSignalStopsNow(restoreSignals: None, signum: signal.Signals) -> None:
    """
    The first SIGINT or SIGTERM stops the reactor, as its own handlers do; a
    second no longer reaches them (they would stop a reactor already
    stopping, and log a C{ReactorNotRunning} traceback): it asks whoever
    waits on it to stop now, in the reactor's thread.
    """
    reactor = SignalledReactor()
    signals = installedSignals(reactor)
    stopped: list[bool] = []
    deliver(signum)
    assert reactor.stops == [signum]
    signals.whenSecond(lambda: stopped.append(True))
    deliver(signal.SIGTERM)
    assert (reactor.stops, stopped) == ([signum], [])
    [call] = reactor.calls
    call()
    assert stopped == [True]


def test_secondSignalBeforeDrain(restoreSignals: None) -> None:
    """
    A second signal that comes before the drain has begun stops it as soon
    as it begins.
    """
    reactor = SignalledReactor()
    signals = installedSignals(reactor)
    deliver(signal.SIGINT)
    deliver(signal.SIGINT)
    [call] = reactor.calls
    call()
    stopped: list[bool] = []
    signals.whenSecond(lambda: stopped.append(True))
    assert stopped == [True]


def test_secondSignalLeavesOtherHandlers(restoreSignals: None) -> None:
    """
    Handlers that are not the reactor's (a test runner's, or none) are left
    alone, and no second signal is promised.
    """
    reactor = SignalledReactor()
    before = signal.getsignal(signal.SIGINT)
    signals = SecondSignal(reactor)  # type: ignore[arg-type]
    signals.install()
    assert not signals.caught
    assert signal.getsignal(signal.SIGINT) is before


# Issue 9: a probe (a health check) has its own outcome and is logged at debug level only.


@pytest.mark.parametrize("reason", [ConnectionDone, ConnectionLost], ids=["close", "reset"])
def test_probeOutcome(reason: type[Exception], records: list[ConnectionRecord]) -> None:
    """
    A connection that closes or resets without having sent a byte (a
    health check, a port scan) has the outcome C{probe}, not C{reset}.
    """
    factory = makeFactory(framing="line", keepOpen=True)
    factory.observers.append(records.append)
    protocol, _ = open_(factory)
    close(protocol, reason)
    assert [record.outcome for record in records] == ["probe"]


def test_probeOutcomeOnHalfClose(records: list[ConnectionRecord]) -> None:
    """
    A client that half-closes without having sent a byte is a probe too.
    """
    factory = makeFactory()
    factory.observers.append(records.append)
    protocol, _ = open_(factory)
    protocol.readConnectionLost()
    close(protocol)
    assert [record.outcome for record in records] == ["probe"]


def test_probeLoggedAtDebugOnly(logged: list[str]) -> None:
    """
    A probe is logged at debug level, which the connection log leaves out
    (twistd's text log shows every level): a health check every 2 s is no
    news. Other connections are logged as before.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory = makeFactory(framing="line", keepOpen=True)
        probe, _ = open_(factory)
        close(probe, ConnectionLost)
        talker, _ = open_(factory)
        talker.dataReceived(b"hi\n")
        close(talker)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["outcome"] for e in events if e.get("event") == "connection"] == ["ok"]
    assert len([line for line in logged if line.startswith("Connection closed")]) == 1


def test_probeLoggedWhenDebugWanted() -> None:
    """
    Lowering the connection log's level shows the probes, at debug level.
    """
    events: list[LogEvent] = []
    namespace = EchoReplyFactory.log.namespace
    CONNECTION_LOG_LEVELS.setLogLevelForNamespace(namespace, LogLevel.debug)
    globalLogPublisher.addObserver(events.append)
    try:
        probe, _ = open_(makeFactory())
        close(probe, ConnectionLost)
    finally:
        globalLogPublisher.removeObserver(events.append)
        CONNECTION_LOG_LEVELS.clearLogLevels()
    [event] = [e for e in events if e.get("event") == "connection"]
    assert (event["outcome"], event["log_level"]) == ("probe", LogLevel.debug)


def test_proxyHealthCheckIsProbe(records: list[ConnectionRecord]) -> None:
    """
    HAProxy's health check on a C{send-proxy-v2} server sends a PROXY v2
    header with the LOCAL command, then resets: a probe, not a reset.
    """
    factory = makeFactory(framing="line", keepOpen=True)
    factory.observers.append(records.append)
    wrapping = ProxyWrappingFactory(factory)
    transport = HalfCloseableTransport()
    wrapper = wrapping.buildProtocol(transport.peerAddr)
    wrapper.makeConnection(transport)
    wrapper.dataReceived(PROXY_V2_LOCAL)
    wrapper.connectionLost(Failure(ConnectionLost()))
    assert [record.outcome for record in records] == ["probe"]


# Issue 9: the connection log counts in words.


@pytest.mark.parametrize(
    "data, words",
    [
        (b"a\n", "1 message, 2 bytes in, 20 bytes out"),
        (b"a\nb\n", "2 messages, 4 bytes in, 40 bytes out"),
        (b"\n", "1 message, 1 byte in, 19 bytes out"),
    ],
)
def test_connectionLogGrammar(data: bytes, words: str, logged: list[str]) -> None:
    """
    The connection log says "1 message", "1 byte": plural only when not 1.
    """
    factory = makeFactory(framing="line", keepOpen=True)
    protocol, _ = open_(factory)
    protocol.dataReceived(data)
    close(protocol)
    [line] = [line for line in logged if line.startswith("Connection closed")]
    assert f", ok, {words}, " in line


# A TLS client that never finishes its handshake


def tlsConnection(
    clock: Clock, certificates: CertificateFiles
) -> tuple[EchoReplyProtocol, HalfCloseableTransport]:
    """
    A server connection under Twisted's own TLS transport, itself on an
    in-memory transport, before any handshake byte has arrived.
    """
    factory = makeFactory(clock, framing="line", idleTimeout=3)
    context = DefaultOpenSSLContextFactory(
        str(certificates.serverKey), str(certificates.server)
    )
    tls = TLSMemoryBIOFactory(context, False, factory).buildProtocol(LOOPBACK_PEER)
    assert tls is not None
    transport = HalfCloseableTransport()
    tls.makeConnection(transport)
    protocol = tls.wrappedProtocol
    assert isinstance(protocol, EchoReplyProtocol)
    return protocol, transport


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return writeCertificates(tmp_path_factory.mktemp("certs"))


def test_idleBeforeTLSHandshakeAborts(certificates: CertificateFiles) -> None:
    """
    A client that opens a TLS connection and never sends its handshake is
    dropped at the idle timeout: no error can reach it, and a TLS close
    would wait for the handshake, holding the connection for the linger.
    """
    clock = Clock()
    protocol, transport = tlsConnection(clock, certificates)
    clock.advance(3 + SWEEP)
    assert transport.aborted
    assert protocol.outcome == "idle-timeout"


def test_idleAfterTLSHandshakeSaysWhy(certificates: CertificateFiles) -> None:
    """
    Once the TLS handshake is done, an idle client is told why, as on a
    plain connection, and is not aborted.
    """
    clock = Clock()
    protocol, transport = tlsConnection(clock, certificates)
    protocol.handshakeCompleted()
    clock.advance(3 + SWEEP)
    assert not transport.aborted
    assert protocol.outcome == "idle-timeout"
