"""
L{Tracer}: every traced connection of one server, within the bounds of
L{sockplay.server.trace}, with the counters and the charts' figures; the
live budget of each second (L{LIVE_EVENTS}); and C{--trace}'s log lines.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger

from sockplay.server.trace import (
    BULK,
    CLOSED_KEPT,
    FEW_EVENTS,
    FULLY_TRACED,
    LIVE_EVENTS,
    PREVIEW,
    PRINTED,
    RATE_SECONDS,
    SIZE_BUCKETS,
    SIZE_LABELS,
    ConnectionTrace,
    Counted,
    TraceEvent,
    describeEvent,
    preview,
)
from sockplay.server.tracefeed import TraceFeed

__all__ = ["TraceCounters", "Tracer"]


class Tracer:
    """
    Every traced connection of one server, within the bounds of
    L{sockplay.server.trace}, with the counters and the charts' figures.

    @ivar clock: the time source.
    @ivar server: what the page says of the server (framing, listeners...).
    @ivar logEvents: log each event (C{--trace}).
    @ivar open: the open connections, by id.
    @ivar closed: the last closed connections, oldest first.
    @ivar feed: what the playground's streams get (L{TraceFeed}).
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
        self.expecting: dict[tuple[str, int], Callable[[ConnectionTrace], object]] = {}
        self._byPeer: dict[tuple[str, int], ConnectionTrace] = {}
        self._ids = itertools.count(1)
        self.counters = TraceCounters(clock)
        self.feed = TraceFeed(self)
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
        trace = ConnectionTrace(next(self._ids), peer, listener, framing, now, source, light)
        if not light and len(self.open) >= FULLY_TRACED:
            trace.events = deque(maxlen=FEW_EVENTS)
        self.open[trace.id] = trace
        self.counters.total += 1
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
            self.feed.touched(trace)
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
        if self._window > LIVE_EVENTS and kind in BULK:
            # Under load: counted, not kept (see LIVE_EVENTS).
            trace.count += 1
            self.feed.skipped += 1
            self._unrecorded += 1
            return
        if data is not None:
            keep = PRINTED if kind == "response" else PREVIEW
            if len(data) > keep:
                data = data[:keep]
        event = TraceEvent(trace.count, now, side, kind, size, data, detail)
        trace.count += 1
        trace.events.append(event)
        self.feed.add(trace, event)
        if self.logEvents:
            self._log(trace, event)

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
        self.counters.count(count)
        trace.count += count
        self._window += count
        self.feed.skipped += count
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
        self.counters.count(1, size)
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
            self.counters.count(messages)
            self._window += 1
        self.counters.bytesIn += bytesIn
        self.counters.bytesOut += bytesOut
        trace.close(now, outcome, reason)
        if not trace.light:
            self.record(trace, "closed", detail=reason)
        self.open.pop(trace.id, None)
        if trace.key is not None and self._byPeer.get(trace.key) is trace:
            del self._byPeer[trace.key]
        self.closed.append(trace)
        while len(self.closed) > CLOSED_KEPT:
            self.feed.forget(self.closed.popleft())

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

    def stats(self) -> dict[str, Any]:
        """
        The counters and the charts' figures, the open connections' bytes
        included.
        """
        return self.counters.stats(self.open.values())


class TraceCounters:
    """
    A tracer's totals and the charts' figures: connections, messages and
    bytes, the message rate of each of the last L{RATE_SECONDS} seconds, and
    the histogram of message sizes (of the messages kept: under load, a
    sample).

    @ivar total: connections seen.
    @ivar messages: messages completed.
    @ivar bytesIn: bytes received by closed connections.
    @ivar bytesOut: bytes sent by closed connections.
    @ivar sizes: messages per size bucket (L{SIZE_LABELS}).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.total = 0
        self.messages = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.sizes = [0] * SIZE_BUCKETS
        self._clock = clock
        # Messages per whole second, the current one last.
        self._rate: deque[int] = deque([0] * (RATE_SECONDS + 1), maxlen=RATE_SECONDS + 1)
        self._second = int(clock.seconds())

    def count(self, messages: int, size: int | None = None) -> None:
        """
        C{messages} messages completed now; of C{size} bytes, if one is
        kept for the histogram.
        """
        self.messages += messages
        if size is not None:
            self.sizes[min(size.bit_length(), SIZE_BUCKETS - 1)] += 1
        second = int(self._clock.seconds())
        if second != self._second:
            self._tick(second)
        self._rate[-1] += messages

    def _tick(self, second: int) -> None:
        """
        A new second began: the rate history moves on (a second with no
        message counts 0).
        """
        for _ in range(min(second - self._second, RATE_SECONDS)):
            self._rate.append(0)
        self._second = second

    def stats(self, open: Collection[ConnectionTrace]) -> dict[str, Any]:
        """
        The counters and the charts' figures, with the bytes of the C{open}
        connections.
        """
        second = int(self._clock.seconds())
        if second != self._second:
            self._tick(second)
        bytesIn = self.bytesIn
        bytesOut = self.bytesOut
        for trace in open:
            _, inNow, outNow = trace.counters()
            bytesIn += inNow
            bytesOut += outNow
        return {
            "open": len(open),
            "total": self.total,
            "messages": self.messages,
            "bytesIn": bytesIn,
            "bytesOut": bytesOut,
            # Whole seconds only: the current one is still counting.
            "rate": list(self._rate)[:-1],
            "sizes": {"labels": SIZE_LABELS, "counts": list(self.sizes)},
        }
