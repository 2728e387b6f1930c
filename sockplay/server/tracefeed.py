"""
L{TraceFeed}: what the playground's streams get from a tracer
(L{sockplay.server.tracer.Tracer}): a snapshot to start from, then an update
at most every L{UPDATE_INTERVAL} seconds with what changed, within the
bounds of L{sockplay.server.trace} (the newest L{EVENTS_PER_UPDATE}
events, and how many were left out).
"""

from __future__ import annotations

import itertools
import json
import typing
from collections import deque
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sockplay.server.trace import (
    CLOSED_KEPT,
    CONNECTIONS_PER_UPDATE,
    EVENTS_PER_CONNECTION,
    EVENTS_PER_UPDATE,
    IDLE_UPDATE_INTERVAL,
    PREVIEW,
    UPDATE_INTERVAL,
    ConnectionTrace,
    TraceEvent,
)

__all__ = ["Subscriber", "TraceFeed", "Traces"]


class Traces(typing.Protocol):
    """
    What the feed reads from its tracer (L{sockplay.server.tracer.Tracer}).
    """

    clock: IReactorTime
    server: dict[str, Any]
    open: dict[int, ConnectionTrace]
    closed: deque[ConnectionTrace]

    def stats(self) -> dict[str, Any]:
        """
        The counters and the charts' figures.
        """


class Subscriber(typing.Protocol):
    """
    What the L{Tracer} publishes to: a playground stream.
    """

    def deliver(self, update: str) -> None:
        """
        Take one update, as JSON text.
        """


class TraceFeed:
    """
    The updates of one tracer, for its subscribers: what changed since the
    last update is gathered as it happens (L{add}), and sent at most every
    L{UPDATE_INTERVAL} seconds, or every L{IDLE_UPDATE_INTERVAL} seconds
    when nothing happens (the counters and the rate still move).

    @ivar subscribers: the streams that get each update.
    @ivar skipped: events since the last update that it will not carry.
    """

    def __init__(self, tracer: Traces) -> None:
        self.subscribers: list[Subscriber] = []
        self.skipped = 0
        self._tracer = tracer
        # Since the last update: the connections that changed, the pruned
        # ones, and the newest events.
        self._changed: dict[int, ConnectionTrace] = {}
        self._removed: list[int] = []
        self._recent: deque[tuple[ConnectionTrace, TraceEvent]] = deque(maxlen=EVENTS_PER_UPDATE)
        self._update: IDelayedCall | None = None
        self._idle = False

    def add(self, trace: ConnectionTrace, event: TraceEvent) -> None:
        """
        C{event} happened on C{trace}'s connection: for the next update,
        sooner than an idle one.
        """
        self._changed[trace.id] = trace
        recent = self._recent
        if len(recent) == EVENTS_PER_UPDATE:
            self.skipped += 1
        recent.append((trace, event))
        if self.subscribers and (self._update is None or self._idle):
            self._schedule(UPDATE_INTERVAL)

    def touched(self, trace: ConnectionTrace) -> None:
        """
        C{trace}'s summary changed without an event.
        """
        self._changed[trace.id] = trace

    def forget(self, trace: ConnectionTrace) -> None:
        """
        C{trace} is no longer kept: the next update says so.
        """
        self._changed.pop(trace.id, None)
        # Only for a stream that will get the update: with none, the ids
        # would pile up without bound (a new stream starts from a snapshot).
        if self.subscribers:
            self._removed.append(trace.id)

    def snapshot(self) -> dict[str, Any]:
        """
        Everything a new stream starts from: the server, the connections
        kept (open ones newest first, at most L{CLOSED_KEPT} of them), the
        counters and the bounds.
        """
        tracer = self._tracer
        newestOpen = list(itertools.islice(reversed(tracer.open.values()), CLOSED_KEPT))
        connections = [trace.summary() for trace in tracer.closed] + [
            trace.summary() for trace in reversed(newestOpen)
        ]
        return {
            "server": tracer.server,
            "now": self._tracer.clock.seconds(),
            "connections": connections,
            "stats": self._tracer.stats(),
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
        self._update = self._tracer.clock.callLater(delay, self.publish)
        self._idle = delay >= IDLE_UPDATE_INTERVAL

    def takeUpdate(self) -> dict[str, Any]:
        """
        What changed since the last update, within its bounds; the next
        update starts afresh.
        """
        changed = list(self._changed.values())[-CONNECTIONS_PER_UPDATE:]
        update = {
            "now": self._tracer.clock.seconds(),
            "connections": [trace.summary() for trace in changed],
            "removed": self._removed,
            "events": [trace.eventJSON(event) for trace, event in self._recent],
            "skipped": self.skipped,
            "stats": self._tracer.stats(),
        }
        self._changed = {}
        self._removed = []
        self._recent.clear()
        self.skipped = 0
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


