"""
Tests for the tracer (L{sockplay.server.trace}) and the traced connection
(L{sockplay.server.traced}): the events of a conversation in order, the
bounds, the publishing timer, the counters, C{--trace}'s log, and that
tracing costs nothing when it is off and changes no byte when it is on.

Everything runs on a fake clock and in-memory transports: no sleeps.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fakes import LOOPBACK_PEER, HalfCloseableTransport, serverSettings
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from sockplay.framing import makeFramer
from sockplay.logs import eventAsJSONLine
from sockplay.server import EchoReplyFactory, EchoReplyProtocol, ServerSettings
from sockplay.server import tracer as tracerModule
from sockplay.server.faults import FaultyEchoReplyProtocol
from sockplay.server.trace import (
    CLOSED_KEPT,
    EVENTS_PER_CONNECTION,
    EVENTS_PER_UPDATE,
    IDLE_UPDATE_INTERVAL,
    LIVE_EVENTS,
    PREVIEW,
    RATE_SECONDS,
    SIZE_LABELS,
    UPDATE_INTERVAL,
    ConnectionTrace,
    TraceEvent,
    describeEvent,
    peerKey,
    preview,
)
from sockplay.server.traced import (
    LightEchoReplyProtocol,
    LightFaultyEchoReplyProtocol,
    TracedEchoReplyProtocol,
    TracedFaultyEchoReplyProtocol,
)
from sockplay.server.tracer import Tracer

# The fake clock starts here (Unix seconds), on a whole second.
START = 1_000_000.0

DONE = Failure(error.ConnectionDone())


class Traced:
    """
    A traced server (factory and tracer on a fake clock) and a way to open
    connections to it on in-memory transports.
    """

    def __init__(
        self, framing: str = "raw", keepOpen: bool = False, logEvents: bool = False,
        **settings: Any,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.factory = EchoReplyFactory(
            serverSettings(framing, keepOpen, quiet=True, **settings), clock=self.clock
        )
        self.tracer = Tracer(self.clock, logEvents=logEvents)
        self.factory.traceWith(self.tracer)

    def connect(self) -> tuple[EchoReplyProtocol, HalfCloseableTransport, ConnectionTrace]:
        protocol = self.factory.buildProtocol(LOOPBACK_PEER)
        transport = HalfCloseableTransport()
        protocol.makeConnection(transport)
        assert isinstance(protocol, TracedEchoReplyProtocol)
        assert protocol.trace is not None
        return protocol, transport, protocol.trace


def kinds(trace: ConnectionTrace) -> list[str]:
    """
    The kinds of C{trace}'s events in order, a state change written as
    C{state:<name>}.
    """
    return [
        f"state:{event.detail}" if event.kind == "state" else event.kind
        for event in trace.events
    ]


class Collector:
    """
    A subscriber that keeps every update it is given.
    """

    def __init__(self) -> None:
        self.updates: list[str] = []

    def deliver(self, update: str) -> None:
        self.updates.append(update)


class Source:
    """
    A connection's counters, for traces made straight on the tracer.
    """

    messages = 0
    bytesIn = 0
    bytesOut = 0
    stateName = "reading"


def opened(tracer: Tracer, port: int = 40000) -> ConnectionTrace:
    """
    A connection opened on C{tracer} from 127.0.0.1:C{port}.
    """
    return tracer.opened(
        IPv4Address("TCP", "127.0.0.1", port), "tcp:127.0.0.1:12345", "raw", Source()
    )


# The events of a conversation


def test_oneShotRawConversation() -> None:
    """
    The tutorial's one-shot conversation gives every event in the order it
    happens, with sizes and previews, and a summary with its outcome.
    """
    server = Traced()
    protocol, transport, trace = server.connect()
    protocol.dataReceived(b"Hello Server !")
    protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    assert kinds(trace) == [
        "connected", "state:reading", "chunk", "message", "reply", "state:replying",
        "state:closing", "half-close", "eof", "state:closed", "closed",
    ]
    events = {event.kind: event for event in trace.events}
    assert events["connected"].detail == "from tcp:127.0.0.1:40000 on tcp:127.0.0.1:12345"
    assert (events["chunk"].size, events["chunk"].data) == (14, b"Hello Server !")
    assert (events["message"].size, events["message"].data) == (14, b"Hello Server !")
    assert events["reply"].data == transport.value() == b"Message received: Hello Server !"
    assert events["closed"].detail == "Connection was closed cleanly."
    assert [event.seq for event in trace.events] == list(range(11))
    summary = trace.summary()
    assert {k: summary[k] for k in ("state", "messages", "bytesIn", "bytesOut", "outcome")} == {
        "state": "closed", "messages": 1, "bytesIn": 14, "bytesOut": 32, "outcome": "ok",
    }
    assert server.tracer.closed[-1] is trace and not server.tracer.open


def test_messageSplitOverTwoChunks() -> None:
    """
    A line split over two reads shows as a chunk, a partial holding its
    first bytes, a second chunk, then one message and its reply.
    """
    protocol, _, trace = Traced("line", keepOpen=True).connect()
    protocol.dataReceived(b"Hello ")
    protocol.dataReceived(b"Server !\n")
    assert kinds(trace)[2:] == ["chunk", "partial", "chunk", "message", "reply"]
    partial = trace.events[3]
    assert (partial.size, partial.detail) == (6, "waiting for LF to end the message")
    message = trace.events[5]
    assert (message.size, message.data) == (14, b"Hello Server !")
    assert trace.state == "reading"


def test_twoMessagesInOneChunk() -> None:
    """
    Two lines in one read show as one chunk, then two messages, answered
    in one write.
    """
    protocol, transport, trace = Traced("line", keepOpen=True).connect()
    protocol.dataReceived(b"one\ntwo\n")
    assert kinds(trace)[2:] == ["chunk", "message", "message", "reply"]
    assert [e.data for e in trace.events if e.kind == "message"] == [b"one", b"two"]
    assert trace.events[-1].data == transport.value()
    assert trace.summary()["messages"] == 2


def test_messageDetailNamesItsDelimiter() -> None:
    """
    A line's message event says which delimiter ended it, as the page's
    contract writes it (C{ends with \\n}), not as a Python bytes literal.
    """
    protocol, _, trace = Traced("line", keepOpen=True).connect()
    protocol.dataReceived(b"a\r\nb\n")
    details = [e.detail for e in trace.events if e.kind == "message"]
    assert details == ["ends with \\r\\n", "ends with \\n"]


def test_refusedConnection() -> None:
    """
    A connection over C{maxConnections} is traced too: refused, its error
    written, closed with the refusal's outcome.
    """
    server = Traced(maxConnections=1)
    server.connect()
    protocol, transport, trace = server.connect()
    protocol.connectionLost(DONE)
    assert kinds(trace) == ["connected", "state:refused", "reply", "state:closed", "closed"]
    assert trace.events[2].data == transport.value() == b"Error: server busy\n"
    assert (trace.state, trace.outcome) == ("closed", protocol.outcome)
    assert trace.outcome not in (None, "ok")


def test_idleTimeout() -> None:
    """
    A connection that sends nothing within the idle timeout is told so and
    half-closed, and its trace ends with the idle-timeout outcome.
    """
    server = Traced("line", idleTimeout=2.0)
    protocol, _, trace = server.connect()
    protocol.dataReceived(b"no end")
    server.clock.advance(5.0)
    protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    assert kinds(trace) == [
        "connected", "state:reading", "chunk", "partial", "state:replying", "reply",
        "state:closing", "half-close", "eof", "state:closed", "closed",
    ]
    assert trace.events[5].data == b"Error: idle timeout (2 s)\n"
    assert trace.outcome == "idle-timeout"
    assert trace.events[4].at - trace.openedAt >= 2.0


def test_errorReplyTooLong() -> None:
    """
    A message over the limit gets no message event: its chunk, the error
    written, and the too-long outcome.
    """
    protocol, _, trace = Traced("line", maxMessage=4).connect()
    protocol.dataReceived(b"much too long\n")
    protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    assert "message" not in kinds(trace)
    assert kinds(trace)[2:5] == ["chunk", "state:replying", "reply"]
    assert trace.events[4].data == b"Error: message too long (limit 4 bytes)\n"
    assert trace.outcome == "too-long"


def test_delayedReplyRecordedWhenWritten() -> None:
    """
    With C{--delay}, the reply event is recorded when the reply is written,
    not when the message completed.
    """
    server = Traced("line", delay=1.0)
    protocol, transport, trace = server.connect()
    assert isinstance(protocol, TracedFaultyEchoReplyProtocol)
    protocol.dataReceived(b"hi\n")
    assert "reply" not in kinds(trace)
    assert kinds(trace)[-2:] == ["message", "state:replying"]
    server.clock.advance(1.0)
    reply = next(e for e in trace.events if e.kind == "reply")
    assert reply.data == transport.value() == b"Message received: hi\n"
    assert reply.at - trace.openedAt == 1.0
    assert kinds(trace)[-3:] == ["reply", "state:closing", "half-close"]


def test_droppedMessageIsAnOutcome() -> None:
    """
    A message that draws a drop is recorded (the tracing framer is inside
    the faults'), gets no reply, and the connection ends dropped.
    """
    protocol, transport, trace = Traced("line", dropRate=1.0).connect()
    protocol.dataReceived(b"hi\n")
    protocol.connectionLost(DONE)
    assert kinds(trace) == [
        "connected", "state:reading", "chunk", "message", "state:closing", "state:closed",
        "closed",
    ]
    assert transport.value() == b""
    assert trace.outcome == "dropped"


def test_truncatedReplyIsTraced() -> None:
    """
    A truncated reply is recorded as the half that was written, then the
    half-close, and the connection ends truncated-reply.
    """
    protocol, transport, trace = Traced("line", truncateRate=1.0).connect()
    protocol.dataReceived(b"hello\n")
    protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    reply = next(e for e in trace.events if e.kind == "reply")
    assert reply.data == transport.value() == b"Message received: hello\n"[:12]
    assert kinds(trace)[3:] == [
        "message", "reply", "state:replying", "state:closing", "half-close", "eof",
        "state:closed", "closed",
    ]
    assert trace.outcome == "truncated-reply"


def test_stalledConnectionIsTraced() -> None:
    """
    A stalled connection records what its client sends after the stall as
    chunks read, with no message and no reply, and ends stalled.
    """
    protocol, _, trace = Traced("line", keepOpen=True, stallRate=1.0).connect()
    protocol.dataReceived(b"a\n")
    protocol.dataReceived(b"b\n")
    protocol.connectionLost(DONE)
    assert kinds(trace) == [
        "connected", "state:reading", "chunk", "message", "chunk", "state:closed", "closed",
    ]
    assert trace.outcome == "stalled"


def test_cutConnectionIsTraced() -> None:
    """
    A cut connection ends as cut, with the reason Twisted gives the abort.
    """
    server = Traced("line", keepOpen=True, cutAfter=2.0)
    protocol, transport, trace = server.connect()
    server.clock.advance(2.0)
    assert transport.aborted
    protocol.connectionLost(Failure(error.ConnectionAborted()))
    assert kinds(trace)[-3:] == ["state:closing", "state:closed", "closed"]
    assert trace.outcome == "cut"


def test_discardedChunkAfterTheReply() -> None:
    """
    Bytes a one-shot connection gets after its reply are still shown, as
    discarded.
    """
    protocol, _, trace = Traced("line").connect()
    protocol.dataReceived(b"a\n")
    protocol.dataReceived(b"more\n")
    last = trace.events[-1]
    assert (last.kind, last.detail) == ("chunk", "discarded: the connection is closing")


# Bounds


def test_eventsPerConnectionAreCapped() -> None:
    """
    A connection keeps its last L{EVENTS_PER_CONNECTION} events; the
    details count the others as earlier.
    """
    protocol, _, trace = Traced("raw", keepOpen=True).connect()
    for _ in range(EVENTS_PER_CONNECTION):
        protocol.dataReceived(b"x")
    assert len(trace.events) == EVENTS_PER_CONNECTION
    assert trace.count == 2 + 3 * EVENTS_PER_CONNECTION
    details = trace.details()
    assert details["earlier"] == trace.count - EVENTS_PER_CONNECTION
    assert details["events"][0]["seq"] == details["earlier"]
    assert details["events"][-1]["seq"] == trace.count - 1
    assert details["connection"]["events"] == trace.count


def test_closedConnectionsAreCapped() -> None:
    """
    Only the last L{CLOSED_KEPT} closed connections are kept; an update
    names the pruned ones in C{removed}, and they are no longer found.
    """
    tracer = Tracer(Clock())
    collector = Collector()
    tracer.feed.subscribe(collector)
    traces = [opened(tracer, 10000 + n) for n in range(CLOSED_KEPT + 3)]
    for trace in traces:
        tracer.lost(trace, "ok", "done")
    assert len(tracer.closed) == CLOSED_KEPT
    assert tracer.closed[0] is traces[3]
    update = tracer.feed.takeUpdate()
    assert update["removed"] == [1, 2, 3]
    assert {c["id"] for c in update["connections"]}.isdisjoint({1, 2, 3})
    assert tracer.find(3) is None and tracer.find(4) is traces[3]
    assert tracer.feed.snapshot()["connections"][0]["id"] == 4


def test_prunedIdsDoNotPileUpWithoutSubscribers() -> None:
    """
    With nobody watching (C{--trace} alone, or no browser open), the ids of
    pruned connections are not kept for an update that may never go out:
    memory stays bounded however many connections come and go.
    """
    tracer = Tracer(Clock())
    for n in range(CLOSED_KEPT + 500):
        tracer.lost(opened(tracer, 10000 + n % 20000), "ok", "done")
    assert len(tracer.feed._removed) <= CLOSED_KEPT
    collector = Collector()
    tracer.feed.subscribe(collector)
    tracer.lost(opened(tracer, 9999), "ok", "done")
    assert len(tracer.feed.takeUpdate()["removed"]) <= CLOSED_KEPT + 1


def test_previewIsCut() -> None:
    """
    A chunk keeps its first L{PREVIEW} bytes; the page is told there is
    more, and its size is the whole chunk's.
    """
    protocol, _, trace = Traced("raw", keepOpen=True).connect()
    protocol.dataReceived(bytes(range(100)))
    protocol.dataReceived(b"y" * PREVIEW)
    long, exact = [trace.eventJSON(e) for e in trace.events if e.kind == "chunk"]
    assert (long["size"], long["more"]) == (100, True)
    assert long["hex"] == bytes(range(PREVIEW)).hex(" ")
    assert (exact["size"], exact["more"], exact["text"]) == (PREVIEW, False, "y" * PREVIEW)
    assert all(e.data is None or len(e.data) <= PREVIEW for e in trace.events)


def test_updateCarriesTheNewestEventsAndCountsTheRest() -> None:
    """
    An update carries at most L{EVENTS_PER_UPDATE} events, the newest, and
    says how many it left out.
    """
    tracer = Tracer(Clock())
    tracer.feed.subscribe(Collector())
    trace = opened(tracer)
    for _ in range(EVENTS_PER_UPDATE + 49):
        tracer.record(trace, "chunk", 1, b"x")
    update = tracer.feed.takeUpdate()
    # connected, then the chunks: 250 events in all.
    assert len(update["events"]) == EVENTS_PER_UPDATE
    assert update["skipped"] == 50
    assert update["events"][-1]["seq"] == EVENTS_PER_UPDATE + 49
    assert update["events"][0]["seq"] == 50
    following = tracer.feed.takeUpdate()
    assert (following["events"], following["skipped"]) == ([], 0)


# Publishing


def test_noTimerWithoutSubscribers() -> None:
    """
    Events without subscribers schedule nothing.
    """
    server = Traced("line", keepOpen=True, idleTimeout=0)
    protocol, _, _ = server.connect()
    protocol.dataReceived(b"a\n")
    assert server.tracer.counters.messages == 1
    assert server.clock.getDelayedCalls() == []


def test_updateWithinTheInterval() -> None:
    """
    A subscriber gets an update within L{UPDATE_INTERVAL} of an event, then
    idle updates every L{IDLE_UPDATE_INTERVAL}; an event during an idle
    wait brings the update forward.
    """
    clock = Clock()
    tracer = Tracer(clock)
    collector = Collector()
    tracer.feed.subscribe(collector)
    clock.advance(UPDATE_INTERVAL)
    assert len(collector.updates) == 1
    trace = opened(tracer)
    clock.advance(UPDATE_INTERVAL - 0.01)
    assert len(collector.updates) == 1
    clock.advance(0.01)
    assert len(collector.updates) == 2
    assert '"kind":"connected"' in collector.updates[-1]
    # Nothing happens: idle updates, once a second.
    clock.advance(IDLE_UPDATE_INTERVAL - 0.01)
    assert len(collector.updates) == 2
    clock.advance(0.01)
    assert len(collector.updates) == 3
    clock.advance(0.5)
    tracer.record(trace, "chunk", 1, b"x")
    clock.advance(UPDATE_INTERVAL)
    assert len(collector.updates) == 4
    assert '"kind":"chunk"' in collector.updates[-1]
    # Many events within one interval: one update.
    for _ in range(10):
        tracer.record(trace, "chunk", 1, b"x")
    clock.advance(UPDATE_INTERVAL)
    assert len(collector.updates) == 5


def test_unsubscribingTheLastStopsTheTimer() -> None:
    """
    Once the last subscriber leaves, no timer is left and events schedule
    none.
    """
    clock = Clock()
    tracer = Tracer(clock)
    first, second = Collector(), Collector()
    tracer.feed.subscribe(first)
    tracer.feed.subscribe(second)
    tracer.feed.unsubscribe(first)
    assert len(clock.getDelayedCalls()) == 1
    tracer.feed.unsubscribe(second)
    assert clock.getDelayedCalls() == []
    opened(tracer)
    assert clock.getDelayedCalls() == []


# Stats


def test_messageCountAndSizes() -> None:
    """
    Every completed message is counted, in the histogram bucket of its
    size (powers of two).
    """
    tracer = Tracer(Clock())
    trace = opened(tracer)
    for size in (0, 1, 2, 3, 4, 7, 8, 16383, 16384, 100_000):
        tracer.message(trace, b"x" * size)
    stats = tracer.stats()
    assert stats["messages"] == 10
    counts = dict(zip(stats["sizes"]["labels"], stats["sizes"]["counts"], strict=True))
    assert stats["sizes"]["labels"] == SIZE_LABELS
    assert SIZE_LABELS[:4] == ["0", "1", "2-3", "4-7"] and SIZE_LABELS[-1] == "16384+"
    assert {k: v for k, v in counts.items() if v} == {
        "0": 1, "1": 1, "2-3": 2, "4-7": 2, "8-15": 1, "8192-16383": 1, "16384+": 2,
    }


def test_rateHistory() -> None:
    """
    The rate is messages per whole second, oldest first; seconds without
    a message count 0, and the current second is not shown until over.
    """
    clock = Clock()
    clock.advance(START)
    tracer = Tracer(clock)
    trace = opened(tracer)
    for _ in range(3):
        tracer.message(trace, b"m")
    clock.advance(1.0)
    tracer.message(trace, b"m")
    tracer.message(trace, b"m")
    assert tracer.stats()["rate"][-1] == 3
    clock.advance(3.5)
    rate = tracer.stats()["rate"]
    assert len(rate) == RATE_SECONDS
    assert rate[-4:] == [3, 2, 0, 0]
    clock.advance(RATE_SECONDS * 2)
    assert set(tracer.stats()["rate"]) == {0}


def test_statsCountBytesOfOpenAndClosed() -> None:
    """
    The stats count connections, open ones, and bytes of open and closed
    connections alike.
    """
    server = Traced("line", keepOpen=True)
    first, _, _ = server.connect()
    first.dataReceived(b"abc\n")
    second, _, _ = server.connect()
    second.dataReceived(b"de\n")
    second.readConnectionLost()
    second.connectionLost(DONE)
    stats = server.tracer.stats()
    assert (stats["open"], stats["total"], stats["messages"]) == (1, 2, 2)
    assert stats["bytesIn"] == 7
    assert stats["bytesOut"] == first.bytesOut + second.bytesOut > 0


# --trace logging


@pytest.fixture
def traceEvents() -> Any:
    """
    The log events of kind C{trace} emitted during the test.
    """
    events: list[LogEvent] = []

    def observer(event: LogEvent) -> None:
        if event.get("event") == "trace":
            events.append(event)

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_traceLogsEveryEvent(traceEvents: list[LogEvent], logged: list[str]) -> None:
    """
    With C{--trace}, each event is one log event, with the structured
    fields and a line a person reads.
    """
    server = Traced(logEvents=True)
    protocol, _, trace = server.connect()
    protocol.dataReceived(b"Hello Server !")
    protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    assert len(traceEvents) == trace.count == 11
    assert [e["kind"] for e in traceEvents] == [e.kind for e in trace.events]
    chunk = traceEvents[2]
    assert {k: chunk[k] for k in ("connection", "side", "kind", "size", "preview", "hex")} == {
        "connection": trace.id, "side": "server", "kind": "chunk", "size": 14,
        "preview": "Hello Server !", "hex": b"Hello Server !".hex(" "),
    }
    # The JSON logger keeps every field: the preview is not hidden behind
    # its own "text", the line a person reads.
    record = json.loads(eventAsJSONLine(chunk))
    assert record["event"] == "trace"
    assert (record["kind"], record["size"], record["preview"]) == ("chunk", 14, "Hello Server !")
    assert record["text"].endswith("dataReceived: 14 bytes 'Hello Server !'")
    lines = [line for line in logged if line.startswith(f"#{trace.id} ")]
    assert len(lines) == 11
    assert lines[2].endswith("dataReceived: 14 bytes 'Hello Server !'")
    assert lines[2].startswith("#1 tcp:127.0.0.1:40000 +0.000 ms ")


def test_noLogWithoutTrace(traceEvents: list[LogEvent]) -> None:
    """
    Without C{--trace}, the tracer (for C{--web}) logs nothing.
    """
    protocol, _, _ = Traced().connect()
    protocol.dataReceived(b"hi")
    assert traceEvents == []


def event(kind: str, size: int = 0, data: bytes | None = None, detail: str | None = None,
          side: str = "server") -> TraceEvent:
    return TraceEvent(0, START, side, kind, size, data, detail)


@pytest.mark.parametrize(
    "traced, text",
    [
        (event("connected", detail="from a on b"), "connected (from a on b)"),
        (event("state", detail="reading"), "state: reading"),
        (event("chunk", 14, b"Hello Server !"), "dataReceived: 14 bytes 'Hello Server !'"),
        (event("chunk", 1, b"x"), "dataReceived: 1 byte 'x'"),
        (event("chunk", 100, b"a" * 3), "dataReceived: 100 bytes 'aaa'..."),
        (event("message", 2, b"hi", "ends with \\n"),
         "message complete: 2 bytes 'hi' (ends with \\n)"),
        (event("partial", 3, None, "waiting"), "waiting: 3 bytes (waiting)"),
        (event("reply", 4, b"\xffok"), "written: 4 bytes '\\\\xffok'..."),
        (event("half-close", detail="FIN"), "half-close sent (FIN)"),
        (event("close", detail="both"), "close sent (both)"),
        (event("eof", detail="FIN"), "client's end of input (FIN)"),
        (event("closed", detail="Connection was closed cleanly."),
         "connection lost (Connection was closed cleanly.)"),
        (event("connect", detail="connected from x", side="client"),
         "client connected (connected from x)"),
        (event("send", 3, b"hi\n", side="client"), "client sent: 3 bytes 'hi\\n'"),
        (event("half-close", side="client"), "client half-close sent"),
        (event("receive", 2, b"ok", side="client"), "client received: 2 bytes 'ok'"),
        (event("response", 2, b"Response: ok", side="client"),
         "client printed 'Response: ok'"),
        (event("closed", detail="gone", side="client"), "client connection lost (gone)"),
        (event("error", detail="no reply", side="client"), "client error (no reply)"),
    ],
)
def test_describeEvent(traced: TraceEvent, text: str) -> None:
    """
    Each kind of event reads as C{--trace} writes it.
    """
    assert describeEvent(traced) == text


def test_previewAndPeerKey() -> None:
    """
    Previews escape bytes that are not UTF-8 and give spaced lowercase hex;
    only TCP addresses have a peer key.
    """
    assert preview(b"a\xff\n") == ("a\\xff\n", "61 ff 0a")
    assert peerKey(LOOPBACK_PEER) == ("127.0.0.1", 40000)
    assert peerKey(None) is None


# No cost when off, no change when on


@pytest.mark.parametrize(
    "faults, plain, traced",
    [
        ({}, EchoReplyProtocol, TracedEchoReplyProtocol),
        ({"delay": 0.5}, FaultyEchoReplyProtocol, TracedFaultyEchoReplyProtocol),
        ({"dropRate": 0.5}, FaultyEchoReplyProtocol, TracedFaultyEchoReplyProtocol),
    ],
)
def test_factoryBuildsPlainProtocolUnlessTraced(
    faults: dict[str, float], plain: type, traced: type
) -> None:
    """
    Without a tracer, the factory builds exactly the plain (or faulty)
    class, with no trace in it; C{traceWith} switches to the traced one.
    """
    factory = EchoReplyFactory(serverSettings(quiet=True, **faults), clock=Clock())
    assert factory.tracer is None
    assert type(factory.buildProtocol(LOOPBACK_PEER)) is plain
    assert not hasattr(factory.buildProtocol(LOOPBACK_PEER), "trace")
    factory.traceWith(Tracer(Clock()))
    assert type(factory.buildProtocol(LOOPBACK_PEER)) is traced


def converse(
    factory: EchoReplyFactory, chunks: list[bytes], endInput: bool
) -> tuple[bytes, bool, bool, str | None, int]:
    """
    Feed C{chunks} to a new connection of C{factory}, then the client's
    end of input if asked: what was written, whether the write side and
    the connection were closed, the outcome and the messages answered.
    """
    protocol = factory.buildProtocol(LOOPBACK_PEER)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    if endInput:
        protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    return (
        transport.value(), transport.writeClosed, transport.disconnecting, protocol.outcome,
        protocol.messages,
    )


@st.composite
def conversations(draw: st.DrawFn) -> tuple[str, bool, int, list[bytes], bool]:
    framing = draw(st.sampled_from(["raw", "line", "eof", "int32"]))
    keepOpen = framing != "eof" and draw(st.booleans())
    maxMessage = draw(st.sampled_from([8, 65536]))
    payloads = draw(st.lists(st.binary(max_size=12), min_size=1, max_size=4))
    framer = makeFramer(framing)
    stream = b"".join(
        framer.encode(p.replace(b"\n", b""), b"\n") for p in payloads
    ) + draw(st.binary(max_size=3))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    chunks = [chunk for chunk in chunks if chunk]
    return framing, keepOpen, maxMessage, chunks, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(conversations())
def test_tracingChangesNoByte(conversation: tuple[str, bool, int, list[bytes], bool]) -> None:
    """
    For any framing, message and chunking, a traced connection writes the
    same bytes, closes the same way and ends with the same outcome as a
    plain one.
    """
    framing, keepOpen, maxMessage, chunks, endInput = conversation

    def factory(traced: bool) -> EchoReplyFactory:
        made = EchoReplyFactory(
            ServerSettings(framing, keepOpen, quiet=True, maxMessage=maxMessage), clock=Clock()
        )
        if traced:
            made.traceWith(Tracer(Clock()))
        return made

    assert converse(factory(True), chunks, endInput) == converse(
        factory(False), chunks, endInput
    )


def test_previewBoundIsTheModulesConstant(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The preview bound is read from the module, so the page's C{bounds}
    and the events agree.
    """
    tracer = Tracer(Clock())
    assert tracer.feed.snapshot()["bounds"] == {
        "closedKept": CLOSED_KEPT, "eventsPerConnection": EVENTS_PER_CONNECTION,
        "preview": PREVIEW, "eventsPerUpdate": EVENTS_PER_UPDATE,
        "updateInterval": UPDATE_INTERVAL,
    }
    monkeypatch.setattr(tracerModule, "PREVIEW", 4)
    trace = opened(tracer)
    tracer.record(trace, "chunk", 10, b"0123456789")
    assert trace.events[-1].data == b"0123"


# Under load: the live budget of each second


def spendBudget(tracer: Tracer) -> ConnectionTrace:
    """
    Spend this second's budget of kept events (L{LIVE_EVENTS}) on one
    connection's chunks, and return that connection.
    """
    trace = opened(tracer, 49999)
    for _ in range(LIVE_EVENTS):
        tracer.record(trace, "chunk", 1, b"x")
    assert tracer.busy()
    return trace


def test_pastTheBudgetBulkEventsAreCountedNotKept() -> None:
    """
    Past L{LIVE_EVENTS} in one second, chunks, messages and writes are
    counted (the connection's count, the update's C{skipped}) but not kept;
    state changes and closes still are; the next second keeps events again.
    """
    server = Traced("line", keepOpen=True)
    protocol, transport, trace = server.connect()
    spendBudget(server.tracer)
    kept = len(trace.events)
    counted = trace.count
    protocol.dataReceived(b"a\nb\n")
    assert transport.value() == b"Message received: a\nMessage received: b\n"
    assert len(trace.events) == kept
    # The chunk, two messages and the write.
    assert trace.count == counted + 4
    assert server.tracer.counters.messages == 2
    protocol.readConnectionLost()
    assert kinds(trace)[kept:] == ["eof", "state:replying", "state:closing", "close"]
    server.clock.advance(1.0)
    assert not server.tracer.busy()
    before = len(trace.events)
    protocol.dataReceived(b"ignored")
    assert len(trace.events) == before + 1


def test_busyFramerWritesTheSameBytes() -> None:
    """
    Past the budget the traced framer answers through the framing's own
    fast path: the same bytes as before it, pipelined lines included, and a
    line split across the switch is still one message.
    """
    server = Traced("line", keepOpen=True)
    protocol, transport, _ = server.connect()
    protocol.dataReceived(b"one\ntw")
    spendBudget(server.tracer)
    protocol.dataReceived(b"o\nthree\r\nfour")
    protocol.dataReceived(b"\n")
    assert transport.value() == (
        b"Message received: one\nMessage received: two\n"
        b"Message received: three\r\nMessage received: four\n"
    )
    assert protocol.messages == 4
    assert server.tracer.counters.messages == 4


def test_connectionMadeWhileBusyIsLight() -> None:
    """
    A connection made while the budget is spent is the plain connection,
    listed (state, counters, outcome) with C{sampled} set, keeping none of
    its events; the totals still count its message. One made in the next
    second is traced in full.
    """
    server = Traced()
    spendBudget(server.tracer)
    protocol = server.factory.buildProtocol(LOOPBACK_PEER)
    assert type(protocol) is LightEchoReplyProtocol
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    trace = protocol.trace
    assert trace is not None
    protocol.dataReceived(b"hi")
    assert trace.summary()["state"] == "closing"
    protocol.readConnectionLost()
    protocol.connectionLost(DONE)
    assert transport.value() == b"Message received: hi"
    assert list(trace.events) == []
    summary = trace.summary()
    assert (summary["state"], summary["outcome"], summary["messages"], summary["sampled"]) == (
        "closed", "ok", 1, True,
    )
    assert server.tracer.counters.messages == 1
    assert trace in server.tracer.closed
    server.clock.advance(1.0)
    _, _, full = server.connect()
    assert not full.light
    assert kinds(full)[:2] == ["connected", "state:reading"]


def test_lightConnectionWithFaults() -> None:
    """
    With faults, a connection made while the budget is spent is the plain
    fault-injecting connection, listed light: its drop is its outcome.
    """
    server = Traced(dropRate=1.0)
    spendBudget(server.tracer)
    protocol = server.factory.buildProtocol(LOOPBACK_PEER)
    assert type(protocol) is LightFaultyEchoReplyProtocol
    protocol.makeConnection(HalfCloseableTransport())
    protocol.dataReceived(b"hi")
    protocol.connectionLost(DONE)
    assert protocol.trace is not None
    assert protocol.trace.summary()["outcome"] == "dropped"
