"""
One browser's live view: L{EventStream}, a Server-Sent Events stream of the
tracer's updates.

A browser that stops reading is dropped, not buffered for: the stream is
the producer of its HTTP connection, so the transport pauses it once its
write buffer is full; a paused stream skips updates (and sends a fresh
snapshot instead once it resumes), and one paused for L{STALL_LIMIT}
seconds is closed. Memory per stream is thus one write buffer, whatever
the load.
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from sockplay.server.tracer import Tracer

__all__ = ["RETRY_MILLISECONDS", "STALL_LIMIT", "EventStream"]

# Seconds a stream may stay paused (its browser not reading) before it is
# closed; the browser's EventSource reconnects by itself if it is alive.
STALL_LIMIT = 5.0

# How long a browser waits before reconnecting a lost stream.
RETRY_MILLISECONDS = 2000


def _message(event: str, data: str) -> bytes:
    """
    One Server-Sent Event: its name and its (single-line JSON) data.
    """
    return f"event: {event}\ndata: {data}\n\n".encode()


@implementer(IPushProducer)
class EventStream:
    """
    The tracer's updates, as Server-Sent Events on one HTTP response: a
    C{snapshot} first, then an C{update} each time the tracer publishes.

    @ivar request: the response it writes.
    @ivar paused: the connection's write buffer is full.
    @ivar skipped: updates skipped while paused, since the last resync.
    @ivar done: the stream has ended.
    """

    def __init__(self, request: Request, tracer: Tracer, clock: IReactorTime) -> None:
        self.request = request
        self.paused = False
        self.skipped = 0
        self.done = False
        self._tracer = tracer
        self._clock = clock
        self._pausedAt = 0.0

    def start(self) -> None:
        """
        Send the headers, the reconnection delay and a snapshot; then
        follow the tracer.
        """
        request = self.request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)
        request.write(b"retry: %d\n\n" % (RETRY_MILLISECONDS,))
        self._send("snapshot", self._tracer.feed.snapshot())
        self._tracer.feed.subscribe(self)

    def deliver(self, update: str) -> None:
        """
        Send one update; while paused, skip it, and close the stream once it
        has been paused for L{STALL_LIMIT} seconds.
        """
        if self.done:
            return
        if self.paused:
            self.skipped += 1
            if self._clock.seconds() - self._pausedAt >= STALL_LIMIT:
                self._drop()
            return
        if self.skipped:
            # What was skipped is lost: start again from the whole state.
            self.skipped = 0
            self._send("snapshot", self._tracer.feed.snapshot())
        else:
            self.request.write(_message("update", update))

    def _send(self, event: str, payload: dict[str, Any]) -> None:
        self.request.write(_message(event, json.dumps(payload, separators=(",", ":"))))

    # IPushProducer: the connection's transport says when it is full.

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self._pausedAt = self._clock.seconds()

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self._end()

    def _drop(self) -> None:
        """
        Close the stream of a browser that does not read it.
        """
        self._end()
        transport = self.request.channel.transport
        if transport is not None:
            cast(ITCPTransport, transport).abortConnection()

    def _finished(self, result: Failure | None) -> None:
        # The response is over (the browser went away, or was dropped).
        self._end()

    def _end(self) -> None:
        if not self.done:
            self.done = True
            self._tracer.feed.unsubscribe(self)
