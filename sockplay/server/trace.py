"""
What a traced connection leaves: its L{TraceEvent}s and its
L{ConnectionTrace}, within fixed bounds, and how an event reads in words.

Every protocol event of a traced connection (L{sockplay.server.traced}) is
recorded: the connection made, each chunk C{dataReceived} got, each
message the framing completed (and the bytes a partial one holds), each
write, the state changes, the half-close, the client's end of input, and
the close with its reason. L{sockplay.server.tracer.Tracer} keeps them;
L{sockplay.server.tracefeed.TraceFeed} publishes them to the playground's
streams. Nothing here runs unless C{--web} or C{--trace} asks for it.

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

import os
import typing
from collections import deque
from typing import Any, NamedTuple

from twisted.internet.interfaces import IAddress

from sockplay.server.address import describeAddress

__all__ = [
    "BULK",
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
    "SIZE_BUCKETS",
    "SIZE_LABELS",
    "UPDATE_INTERVAL",
    "ConnectionTrace",
    "Counted",
    "TraceEvent",
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
BULK = frozenset({"chunk", "message", "partial", "reply"})
# Seconds of message-rate history (one figure per second).
RATE_SECONDS = 60

# Message sizes, in powers of two: 0, 1, 2-3, 4-7 ... 8192-16383, 16384+.
SIZE_BUCKETS = 16
SIZE_LABELS = ["0", "1"] + [
    f"{1 << n}-{(1 << (n + 1)) - 1}" for n in range(1, SIZE_BUCKETS - 2)
] + [f"{1 << (SIZE_BUCKETS - 2)}+"]


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


_NO_EVENTS: deque[TraceEvent] = deque(maxlen=0)


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

    # A server under load keeps hundreds of these: no per-instance dict.
    __slots__ = (
        "_final",
        "closedAt",
        "count",
        "events",
        "framing",
        "id",
        "key",
        "light",
        "listener",
        "openedAt",
        "outcome",
        "panel",
        "peer",
        "reason",
        "source",
        "state",
    )

    def __init__(
        self,
        id: int,
        peer: IAddress | None,
        listener: str,
        framing: str,
        openedAt: float,
        source: Counted,
        light: bool = False,
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
        # A light one shares one empty deque: it keeps nothing.
        self.events: deque[TraceEvent] = (
            _NO_EVENTS if light else deque(maxlen=EVENTS_PER_CONNECTION)
        )
        self.count = 0
        self.source: Counted | None = source
        self.light = light
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
