"""
What the playground (C{--web}) and C{--trace} see: every protocol event of
every connection, kept within fixed bounds.

A L{Tracer} holds one L{ConnectionTrace} per connection, open or recently
closed, each with its last L{EVENTS_PER_CONNECTION} L{TraceEvent}s: the
connection made, each chunk C{dataReceived} got, each message the framing
completed (and the bytes a partial one holds), each write, the state
changes, the half-close, the client's end of input, and the close with its
reason. The traced connection (L{sockplay.server.traced}) records them; the
playground's streams subscribe to the L{Tracer} for aggregated updates,
and C{--trace} logs each event as it happens.

Nothing here runs unless C{--web} or C{--trace} asks for it: the server
then builds the traced connection instead of the plain one.

Bounds, whatever the load:
  - L{CLOSED_KEPT} closed connections are kept, the oldest forgotten;
  - L{EVENTS_PER_CONNECTION} events per connection, the oldest forgotten
    (and counted); L{FEW_EVENTS} for each connection opened while
    L{FULLY_TRACED} others are open;
  - L{PREVIEW} bytes of each chunk, message or write are kept;
  - at most L{LIVE_EVENTS} events a second are kept (and logged): past
    them, chunks, messages and writes are only counted, and a connection
    made then is a light one (L{sockplay.server.traced.LightEchoReplyProtocol}),
    listed with its counters and outcome, recording nothing;
  - an update carries at most L{EVENTS_PER_UPDATE} events and
    L{CONNECTIONS_PER_UPDATE} connections, the newest, and says how many
    events it left out; updates go out at most every L{UPDATE_INTERVAL}
    seconds. A benchmark's 100,000 events a second reach a browser as
    about 1,000.
"""

from __future__ import annotations

import itertools
import json
import os
import typing
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger

from sockplay.server.address import describeAddress

__all__ = [
    "CLOSED_KEPT",
    "CONNECTIONS_PER_UPDATE",
    "EVENTS_PER_CONNECTION",
    "EVENTS_PER_UPDATE",
    "FEW_EVENTS",
    "FULLY_TRACED",
    "IDLE_UPDATE_INTERVAL",
    "LIVE_EVENTS",
    "PREVIEW",
    "PRINTED",
    "RATE_SECONDS",
    "SIZE_LABELS",
    "UPDATE_INTERVAL",
    "ConnectionTrace",
    "Subscriber",
    "TraceEvent",
    "Tracer",
    "describeEvent",
    "peerKey",
    "preview",
    "serverDescription",
]

# Closed connections kept for the page, newest last.
CLOSED_KEPT = 200
# Events kept per connection, newest last: a keep-open connection that
# carries a million messages keeps its last ones. Past FULLY_TRACED open
# connections, a new one keeps only its last FEW_EVENTS: 10,000 open
# connections (the default --max-connections) then hold at most about
# 50 MB of events, not 250.
EVENTS_PER_CONNECTION = 100
FULLY_TRACED = 1000
FEW_EVENTS = 10
# Bytes of a chunk, message or write kept for its preview; and of the line
# the send panel's client printed, which the page shows whole.
PREVIEW = 64
PRINTED = 1024
# What one update may carry at most; and how often updates go out while
# events happen, and while none do (the counters and the rate still move).
EVENTS_PER_UPDATE = 200
CONNECTIONS_PER_UPDATE = 100
UPDATE_INTERVAL = 0.2
IDLE_UPDATE_INTERVAL = 1.0
# Events kept per second: past this, the rest of that second's chunks,
# messages, partial messages and writes are counted but not kept, nor
# logged, and a connection made then keeps none of its events (it is
# listed, with its counters and outcome). A benchmark's 100,000 events a
# second then cost the server a counter each, and a person watching still
# sees a sample of every second.
LIVE_EVENTS = 2000
_BULK = frozenset({"chunk", "message", "partial", "reply"})
# Seconds of message-rate history (one figure per second).
RATE_SECONDS = 60

# Message sizes, in powers of two: 0, 1, 2-3, 4-7 ... 8192-16383, 16384+.
_SIZE_BUCKETS = 16
SIZE_LABELS = ["0", "1"] + [
    f"{1 << n}-{(1 << (n + 1)) - 1}" for n in range(1, _SIZE_BUCKETS - 2)
] + [f"{1 << (_SIZE_BUCKETS - 2)}+"]


class TraceEvent(NamedTuple):
    """
    One thing that happened on a connection.

    @ivar seq: its place among the connection's events, from 0.
    @ivar at: when (the server's clock, Unix seconds).
    @ivar side: C{"server"}, or C{"client"} for the send panel's own client.
    @ivar kind: what happened: C{connected}, C{state}, C{chunk}, C{message},
        C{partial}, C{reply}, C{half-close}, C{close}, C{eof}, C{closed};
        on the client side C{connect}, C{send}, C{half-close}, C{receive},
        C{response}, C{closed}, C{error}.
    @ivar size: the bytes it concerns (a chunk's, a message's, a write's,
        or those a partial message holds).
    @ivar data: the first L{PREVIEW} bytes of them, or C{None}.
    @ivar detail: a few words more (the new state, the close's reason).
    """

    seq: int
    at: float
    side: str
    kind: str
    size: int
    data: bytes | None
    detail: str | None


class Counted(typing.Protocol):
    """
    What a traced connection tells about itself: the server's connection
    (L{sockplay.server.protocol.EchoReplyProtocol}) is one.
    """

    @property
    def messages(self) -> int:
        """
        Messages answered.
        """

    @property
    def bytesIn(self) -> int:
        """
        Bytes received.
        """

    @property
    def bytesOut(self) -> int:
        """
        Bytes written.
        """

    @property
    def stateName(self) -> str:
        """
        The name of its state.
        """


class Subscriber(typing.Protocol):
    """
    What the L{Tracer} publishes to: a playground stream.
    """

    def deliver(self, update: str) -> None:
        """
        Take one update, as JSON text.
        """


def preview(data: bytes) -> tuple[str, str]:
    """
    A preview of C{data} for a person: the text (UTF-8, other bytes as
    C{\\xNN}) and the hex (pairs of lowercase digits, spaced).
    """
    return data.decode("utf-8", "backslashreplace"), data.hex(" ")


def peerKey(address: IAddress | None) -> tuple[str, int] | None:
    """
    The host and port of a TCP address, which tie the send panel's client
    to the server's side of its connection; C{None} for other addresses.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return (host, port)
    return None


# How --trace names each kind of event.
_WORDS = {
    "connected": "connected",
    "state": "state",
    "chunk": "dataReceived",
    "message": "message complete",
    "partial": "waiting",
    "reply": "written",
    "half-close": "half-close sent",
    "close": "close sent",
    "eof": "client's end of input",
    "closed": "connection lost",
    "connect": "client connected",
    "send": "client sent",
    "receive": "client received",
    "response": "client printed",
    "error": "client error",
}


def describeEvent(event: TraceEvent) -> str:
    """
    One event in words, as C{--trace} logs it: C{dataReceived: 14 bytes
    'Hello Server !'}.
    """
    words = _WORDS.get(event.kind, event.kind)
    if event.side == "client" and not words.startswith("client"):
        words = "client " + words
    parts = [words]
    if event.kind in ("chunk", "message", "partial", "reply", "send", "receive"):
        parts.append(f"{event.size} byte{'' if event.size == 1 else 's'}")
    text = ": " + " ".join(parts[1:]) if len(parts) > 1 else ""
    if event.data is not None:
        shown = repr(preview(event.data)[0])
        text += f" {shown}{'...' if event.size > len(event.data) else ''}"
    if event.detail:
        text += f" ({event.detail})" if text or event.kind != "state" else f": {event.detail}"
    return parts[0] + text


class ConnectionTrace:
    """
    One connection as the playground shows it: who, where, its counters and
    its last events.

    @ivar id: its number, from 1, in the order connections were made.
    @ivar peer: the client, as the logs name it.
    @ivar listener: the listener it came in on, as the logs name it.
    @ivar key: the client's host and port (L{peerKey}).
    @ivar state: its state's name.
    @ivar openedAt: when it was made.
    @ivar closedAt: when it was lost, or C{None}.
    @ivar outcome: why its conversation ended, once it is lost.
    @ivar reason: what Twisted said of the loss.
    @ivar panel: opened by the send panel.
    @ivar events: its last events.
    @ivar count: events ever recorded (those not kept included).
    @ivar source: the connection, while open, whose counters are read.
    @ivar light: made while the tracer was busy: it is listed, with its
        counters, state and outcome, and records no events.
    """

    def __init__(
        self,
        id: int,
        peer: IAddress | None,
        listener: str,
        framing: str,
        openedAt: float,
        source: Counted,
    ) -> None:
        self.id = id
        self.peer = describeAddress(peer)
        self.key = peerKey(peer)
        self.listener = listener
        self.framing = framing
        self.state = "admitting"
        self.openedAt = openedAt
        self.closedAt: float | None = None
        self.outcome: str | None = None
        self.reason: str | None = None
        self.panel = False
        self.events: deque[TraceEvent] = deque(maxlen=EVENTS_PER_CONNECTION)
        self.count = 0
        self.source: Counted | None = source
        self.light = False
        self._final = (0, 0, 0)

    def currentState(self) -> str:
        """
        Its state's name, now (or at the close).
        """
        return self.state if self.source is None else self.source.stateName

    def counters(self) -> tuple[int, int, int]:
        """
        Messages, bytes in and bytes out, now (or at the close).
        """
        source = self.source
        if source is None:
            return self._final
        return (source.messages, source.bytesIn, source.bytesOut)

    def close(self, at: float, outcome: str | None, reason: str) -> None:
        """
        The connection is lost: keep its last counters, forget it.
        """
        self._final = self.counters()
        self.source = None
        self.closedAt = at
        self.outcome = outcome
        self.reason = reason
        self.state = "closed"

    def summary(self) -> dict[str, Any]:
        """
        The connection for the page's list.
        """
        messages, bytesIn, bytesOut = self.counters()
        return {
            "id": self.id,
            "peer": self.peer,
            "listener": self.listener,
            "framing": self.framing,
            "state": self.currentState(),
            "messages": messages,
            "bytesIn": bytesIn,
            "bytesOut": bytesOut,
            "openedAt": self.openedAt,
            "closedAt": self.closedAt,
            "outcome": self.outcome,
            "reason": self.reason,
            "panel": self.panel,
            "sampled": self.light,
            "events": self.count,
        }

    def eventJSON(self, event: TraceEvent) -> dict[str, Any]:
        """
        One of this connection's events for the page.
        """
        text = hexText = None
        if event.data is not None:
            text, hexText = preview(event.data)
        return {
            "conn": self.id,
            "seq": event.seq,
            "t": max(0.0, event.at - self.openedAt),
            "side": event.side,
            "kind": event.kind,
            "size": event.size,
            "text": text,
            "hex": hexText,
            "more": event.data is not None and event.size > len(event.data),
            "detail": event.detail,
        }

    def details(self) -> dict[str, Any]:
        """
        The connection and every event it keeps, for the page's timeline.
        """
        return {
            "connection": self.summary(),
            "events": [self.eventJSON(event) for event in self.events],
            "earlier": self.count - len(self.events),
        }


class Tracer:
    """
    Every traced connection of one server, within the bounds above, with
    the counters and charts' figures, published to subscribers.

    @ivar clock: the time source.
    @ivar server: what the page says of the server (framing, listeners...).
    @ivar logEvents: log each event (C{--trace}).
    @ivar open: the open connections, by id.
    @ivar closed: the last closed connections, oldest first.
    @ivar subscribers: the streams that get each update.
    @ivar expecting: the send panel's clients whose server side is not
        made yet, by their address (see L{claim}).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, logEvents: bool = False) -> None:
        self.clock = clock
        self.server: dict[str, Any] = {}
        self.logEvents = logEvents
        self.open: dict[int, ConnectionTrace] = {}
        self.closed: deque[ConnectionTrace] = deque()
        self.subscribers: list[Subscriber] = []
        self.expecting: dict[tuple[str, int], Callable[[ConnectionTrace], object]] = {}
        self._byPeer: dict[tuple[str, int], ConnectionTrace] = {}
        self._ids = itertools.count(1)
        self.total = 0
        self.messages = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.sizes = [0] * _SIZE_BUCKETS
        # Messages per whole second, the current one last.
        self._rate: deque[int] = deque([0] * (RATE_SECONDS + 1), maxlen=RATE_SECONDS + 1)
        self._second = int(clock.seconds())
        # Since the last update: the connections that changed, the pruned
        # ones, the newest events, and how many events did not fit.
        self._changed: dict[int, ConnectionTrace] = {}
        self._removed: list[int] = []
        self._recent: deque[tuple[ConnectionTrace, TraceEvent]] = deque(maxlen=EVENTS_PER_UPDATE)
        self._skipped = 0
        self._update: IDelayedCall | None = None
        self._idle = False
        # Events in the current second, which ends at _windowEnds, and how
        # many of them were only counted.
        self._window = 0
        self._windowEnds = 0.0
        self._unrecorded = 0

    # Recording

    def opened(
        self,
        peer: IAddress | None,
        listener: str,
        framing: str,
        source: Counted,
        light: bool = False,
    ) -> ConnectionTrace:
        """
        A connection was made: start its trace, with its C{connected} event.

        @param peer: the client's address.
        @param listener: the listener, as the logs name it.
        @param source: the connection, whose counters and state the page
            shows.
        @param light: the connection records no events (it was made while
            L{busy}): it is listed, with its counters and outcome.
        """
        now = self.clock.seconds()
        trace = ConnectionTrace(next(self._ids), peer, listener, framing, now, source)
        if light:
            trace.light = True
            trace.events = deque(maxlen=0)
        elif len(self.open) >= FULLY_TRACED:
            trace.events = deque(maxlen=FEW_EVENTS)
        self.open[trace.id] = trace
        self.total += 1
        if trace.key is not None:
            self._byPeer[trace.key] = trace
            claimant = self.expecting.pop(trace.key, None)
            if claimant is not None:
                trace.panel = True
                claimant(trace)
        if not light:
            self.record(trace, "connected", detail=f"from {trace.peer} on {listener}")
        return trace

    def claim(
        self, key: tuple[str, int] | None, claimant: Callable[[ConnectionTrace], object]
    ) -> None:
        """
        The send panel's client, at C{key}, wants its server side: call
        C{claimant} with its trace, now if it is made, else when it is.
        """
        if key is None:
            return
        trace = self._byPeer.get(key)
        if trace is not None:
            trace.panel = True
            self._changed[trace.id] = trace
            claimant(trace)
        else:
            self.expecting[key] = claimant

    def record(
        self,
        trace: ConnectionTrace,
        kind: str,
        size: int = 0,
        data: bytes | None = None,
        detail: str | None = None,
        side: str = "server",
        at: float | None = None,
    ) -> None:
        """
        Add an event to C{trace}, for the page and (with C{--trace}) the log.

        @param data: the bytes it concerns, of which L{PREVIEW} are kept.
        @param at: when it happened, if not now.
        """
        now = self.clock.seconds() if at is None else at
        if now >= self._windowEnds:
            self._newWindow(now)
        self._window += 1
        if self._window > LIVE_EVENTS and kind in _BULK:
            # Under load: counted, not kept (see LIVE_EVENTS).
            trace.count += 1
            self._skipped += 1
            self._unrecorded += 1
            return
        if data is not None:
            keep = PRINTED if kind == "response" else PREVIEW
            if len(data) > keep:
                data = data[:keep]
        event = TraceEvent(trace.count, now, side, kind, size, data, detail)
        trace.count += 1
        trace.events.append(event)
        self._changed[trace.id] = trace
        recent = self._recent
        if len(recent) == EVENTS_PER_UPDATE:
            self._skipped += 1
        recent.append((trace, event))
        if self.logEvents:
            self._log(trace, event)
        if self.subscribers and (self._update is None or self._idle):
            self._schedule(UPDATE_INTERVAL)

    def busy(self) -> bool:
        """
        Whether this second's chunks, messages and writes are past
        L{LIVE_EVENTS}: they are then only counted.
        """
        now = self.clock.seconds()
        if now >= self._windowEnds:
            self._newWindow(now)
        return self._window >= LIVE_EVENTS

    def countMessages(self, trace: ConnectionTrace, count: int) -> None:
        """
        C{count} messages completed on C{trace}'s connection while L{busy}:
        counted for the totals and the rate, not kept (nor in the size
        histogram, which is of the messages kept).
        """
        self.messages += count
        self._countRate(count)
        trace.count += count
        self._window += count
        self._skipped += count
        self._unrecorded += count

    def _newWindow(self, now: float) -> None:
        """
        A second of events begins (see L{LIVE_EVENTS}); with C{--trace},
        say how many of the last one were not traced.
        """
        if self._unrecorded and self.logEvents:
            self.log.info(
                "{unrecorded} events not traced in the last second (the trace keeps the "
                "first {limit} chunks, messages and writes of each second)",
                unrecorded=self._unrecorded,
                limit=LIVE_EVENTS,
            )
        self._windowEnds = now + 1.0
        self._window = 0
        self._unrecorded = 0

    def state(self, trace: ConnectionTrace, name: str) -> None:
        """
        C{trace}'s connection is in a new state.
        """
        trace.state = name
        self.record(trace, "state", detail=name)

    def message(self, trace: ConnectionTrace, payload: bytes, detail: str | None = None) -> None:
        """
        The framing completed a message on C{trace}'s connection: count it
        for the rate and the size histogram too.
        """
        size = len(payload)
        self.messages += 1
        self.sizes[min(size.bit_length(), _SIZE_BUCKETS - 1)] += 1
        self._countRate(1)
        self.record(trace, "message", size, payload, detail)

    def lost(self, trace: ConnectionTrace, outcome: str | None, reason: str) -> None:
        """
        C{trace}'s connection is lost: record it, keep it among the last
        closed ones, and forget the oldest beyond L{CLOSED_KEPT}.
        """
        now = self.clock.seconds()
        messages, bytesIn, bytesOut = trace.counters()
        if trace.light:
            # Its messages were not counted as they came.
            self.messages += messages
            self._countRate(messages)
            self._window += 1
        self.bytesIn += bytesIn
        self.bytesOut += bytesOut
        trace.close(now, outcome, reason)
        if not trace.light:
            self.record(trace, "closed", detail=reason)
        self.open.pop(trace.id, None)
        if trace.key is not None and self._byPeer.get(trace.key) is trace:
            del self._byPeer[trace.key]
        self.closed.append(trace)
        while len(self.closed) > CLOSED_KEPT:
            gone = self.closed.popleft()
            self._changed.pop(gone.id, None)
            # Only for a stream that will get the update: with none, the
            # ids would pile up without bound (a new stream starts from a
            # snapshot anyway).
            if self.subscribers:
                self._removed.append(gone.id)

    def find(self, id: int) -> ConnectionTrace | None:
        """
        The open or kept connection numbered C{id}.
        """
        trace = self.open.get(id)
        if trace is not None:
            return trace
        for trace in self.closed:
            if trace.id == id:
                return trace
        return None

    def _countRate(self, count: int) -> None:
        """
        C{count} messages now, for the rate history.
        """
        second = int(self.clock.seconds())
        if second != self._second:
            self._tick(second)
        self._rate[-1] += count

    def _tick(self, second: int) -> None:
        """
        A new second began: the rate history moves on (a second with no
        message counts 0).
        """
        for _ in range(min(second - self._second, RATE_SECONDS)):
            self._rate.append(0)
        self._second = second

    def _log(self, trace: ConnectionTrace, event: TraceEvent) -> None:
        """
        Log C{event} (C{--trace}): one line for a person, and the event's
        fields for a structured (JSON) log.
        """
        text, hexText = preview(event.data) if event.data is not None else (None, None)
        self.log.info(
            "{trace}",
            trace=(
                f"#{trace.id} {trace.peer} +{(event.at - trace.openedAt) * 1000:.3f} ms "
                f"{describeEvent(event)}"
            ),
            event="trace",
            connection=trace.id,
            peer=trace.peer,
            side=event.side,
            kind=event.kind,
            size=event.size,
            # Not "text": the JSON log's own "text" (the formatted line)
            # would hide it.
            preview=text,
            hex=hexText,
            detail=event.detail,
            elapsed=event.at - trace.openedAt,
        )

    # Publishing

    def stats(self) -> dict[str, Any]:
        """
        The counters and the charts' figures.
        """
        second = int(self.clock.seconds())
        if second != self._second:
            self._tick(second)
        bytesIn = self.bytesIn
        bytesOut = self.bytesOut
        for trace in self.open.values():
            _, inNow, outNow = trace.counters()
            bytesIn += inNow
            bytesOut += outNow
        return {
            "open": len(self.open),
            "total": self.total,
            "messages": self.messages,
            "bytesIn": bytesIn,
            "bytesOut": bytesOut,
            # Whole seconds only: the current one is still counting.
            "rate": list(self._rate)[:-1],
            "sizes": {"labels": SIZE_LABELS, "counts": list(self.sizes)},
        }

    def snapshot(self) -> dict[str, Any]:
        """
        Everything a new stream starts from: the server, the connections
        kept (open ones newest first, at most L{CLOSED_KEPT} of them), the
        counters and the bounds.
        """
        newestOpen = list(itertools.islice(reversed(self.open.values()), CLOSED_KEPT))
        connections = [trace.summary() for trace in self.closed] + [
            trace.summary() for trace in reversed(newestOpen)
        ]
        return {
            "server": self.server,
            "now": self.clock.seconds(),
            "connections": connections,
            "stats": self.stats(),
            "bounds": {
                "closedKept": CLOSED_KEPT,
                "eventsPerConnection": EVENTS_PER_CONNECTION,
                "preview": PREVIEW,
                "eventsPerUpdate": EVENTS_PER_UPDATE,
                "updateInterval": UPDATE_INTERVAL,
            },
        }

    def subscribe(self, subscriber: Subscriber) -> None:
        """
        Send C{subscriber} every update from now on.
        """
        self.subscribers.append(subscriber)
        if self._update is None:
            self._schedule(UPDATE_INTERVAL)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """
        Stop sending C{subscriber} updates.
        """
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        if not self.subscribers and self._update is not None:
            if self._update.active():
                self._update.cancel()
            self._update = None

    def _schedule(self, delay: float) -> None:
        """
        Publish in C{delay} seconds (sooner than an idle update due later).
        """
        if self._update is not None and self._update.active():
            self._update.cancel()
        self._update = self.clock.callLater(delay, self.publish)
        self._idle = delay >= IDLE_UPDATE_INTERVAL

    def takeUpdate(self) -> dict[str, Any]:
        """
        What changed since the last update, within its bounds; the next
        update starts afresh.
        """
        changed = list(self._changed.values())[-CONNECTIONS_PER_UPDATE:]
        update = {
            "now": self.clock.seconds(),
            "connections": [trace.summary() for trace in changed],
            "removed": self._removed,
            "events": [trace.eventJSON(event) for trace, event in self._recent],
            "skipped": self._skipped,
            "stats": self.stats(),
        }
        self._changed = {}
        self._removed = []
        self._recent.clear()
        self._skipped = 0
        return update

    def publish(self) -> None:
        """
        Send every subscriber what changed, and plan the next update.
        """
        self._update = None
        if not self.subscribers:
            return
        text = json.dumps(self.takeUpdate(), separators=(",", ":"))
        for subscriber in list(self.subscribers):
            subscriber.deliver(text)
        if self.subscribers and self._update is None:
            self._schedule(IDLE_UPDATE_INTERVAL)


def serverDescription(
    framing: str,
    keepOpen: bool,
    prefix: bytes,
    hostname: bytes,
    maxMessage: int,
    idleTimeout: float,
) -> dict[str, Any]:
    """
    What the page says of the server (its listeners are added as they
    start).
    """
    return {
        "framing": framing,
        "keepOpen": keepOpen,
        "prefix": prefix.decode("utf-8", "backslashreplace"),
        "hostname": hostname.decode("utf-8", "backslashreplace"),
        "pid": os.getpid(),
        "maxMessage": maxMessage,
        "idleTimeout": idleTimeout,
        "listeners": [],
    }
