"""
Prometheus metrics and a health check for a sockplay server, over HTTP.

L{Metrics} holds one server's metrics in a registry of its own, so that
several servers (or tests) in one process never clash. The server's factory
tells it when a connection opens and, once, what a connection did when it
closes: the metrics cost nothing per byte or per message.

L{makeMetricsService} serves them on a Twisted endpoint:

    - C{/metrics}: the Prometheus text format (or OpenMetrics, if the
      scraper asks for it);
    - C{/healthz}: 200 C{ok} while the server takes connections, 503
      C{draining} once it is shutting down, so that a load balancer stops
      sending it new clients;
    - anything else: 404.

The site is read-only and small, and it may face a hostile peer, so it
refuses what it has no use for before reading it (L{ReadOnlyChannel}): a
method other than C{GET} or C{HEAD}, or any request body, is answered at
once (405, 413) and the connection closed, its body never read nor
stored; headers are bounded in size, count and time; and the site holds
at most L{MAX_METRICS_CONNECTIONS} connections (L{LimitedFactory}), so
that it cannot take the file descriptors the echo listeners need.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorCore, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from sockplay.server.listening import ListenerService

__all__ = [
    "DURATION_BUCKETS",
    "HEADERS_TIMEOUT",
    "MAX_METRICS_CONNECTIONS",
    "ConnectionSummary",
    "LimitedFactory",
    "Metrics",
    "ReadOnlyChannel",
    "makeMetricsResource",
    "makeMetricsService",
    "makeMetricsSite",
]

# Connection durations, in seconds: from a one-shot exchange on loopback
# (about a millisecond) to keep-open sessions of minutes. 5 s is how long a
# server lingers for a client that does not close, 10 s the drain timeout.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_TEXT = "text/plain; charset=utf-8"

# Seconds a client has to send a request's headers, from when it connects
# or when the previous response ends: a scraper sends them in one segment,
# so this is generous, yet a header slowloris holds a connection no longer.
# It also bounds how long a kept-alive connection may sit idle between
# requests (a scraper reconnects for its next scrape).
HEADERS_TIMEOUT = 10.0

# Connections the site holds at once. Prometheus keeps one per target, a
# load balancer's health check and a person with curl one each: 16 is room
# for several of each at the same time, and a negligible share of the file
# descriptors a server has (1,024 at the least), which the echo listeners
# need.
MAX_METRICS_CONNECTIONS = 16

# The methods of a read-only site: everything else is refused unread.
_METHODS = (b"GET", b"HEAD")


class ConnectionSummary(typing.Protocol):
    """
    What one finished connection did, as L{Metrics.connectionClosed} reads
    it (the server's connection record provides it).
    """

    @property
    def outcome(self) -> str:
        """
        Why the connection ended (C{ok}, C{too-long}, ...): a label value.
        """

    @property
    def messages(self) -> int:
        """
        Messages answered.
        """

    @property
    def bytesIn(self) -> int:
        """
        Bytes received from the client.
        """

    @property
    def bytesOut(self) -> int:
        """
        Bytes sent to the client.
        """

    @property
    def duration(self) -> float:
        """
        Seconds from the connection's start to its end.
        """


class Metrics:
    """
    One server's metrics, in a L{CollectorRegistry} of their own:

        - C{sockplay_connections_active}: connections open now;
        - C{sockplay_connections_total{outcome}}: connections that have
          ended, by why they ended;
        - C{sockplay_messages_total}, C{sockplay_bytes_received_total},
          C{sockplay_bytes_sent_total}: counted when a connection ends;
        - C{sockplay_connection_duration_seconds}: a histogram of how long
          connections lasted.

    @ivar registry: the registry that holds them (not the global one).
    @ivar draining: C{True} once the server has stopped taking connections;
        C{/healthz} then answers 503.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.draining = False
        self._active = Gauge(
            "sockplay_connections_active",
            "Client connections open now.",
            registry=self.registry,
        )
        self._connections = Counter(
            "sockplay_connections_total",
            "Client connections that have ended, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._messages = Counter(
            "sockplay_messages_total",
            "Messages answered, counted when their connection ends.",
            registry=self.registry,
        )
        self._bytesIn = Counter(
            "sockplay_bytes_received_total",
            "Bytes received from clients, counted when their connection ends.",
            registry=self.registry,
        )
        self._bytesOut = Counter(
            "sockplay_bytes_sent_total",
            "Bytes sent to clients, counted when their connection ends.",
            registry=self.registry,
        )
        self._duration = Histogram(
            "sockplay_connection_duration_seconds",
            "How long client connections lasted.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def connectionOpened(self) -> None:
        """
        A connection was accepted.
        """
        self._active.inc()

    def connectionClosed(self, record: ConnectionSummary) -> None:
        """
        A connection that L{connectionOpened} counted has ended: account for
        everything it did.
        """
        self._active.dec()
        self._connections.labels(outcome=record.outcome).inc()
        self._messages.inc(record.messages)
        self._bytesIn.inc(record.bytesIn)
        self._bytesOut.inc(record.bytesOut)
        self._duration.observe(record.duration)


class _Page(Resource):
    """
    A page whose sub-paths do not exist.
    """

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return notFound()


class _MetricsPage(_Page):
    """
    C{/metrics}: the registry in the format the scraper asks for (its
    C{Accept} header), the Prometheus text format by default.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        encode, contentType = choose_encoder(request.getHeader("accept") or "")
        request.setHeader("content-type", contentType)
        return encode(self._metrics.registry)


class _HealthPage(_Page):
    """
    C{/healthz}: 200 C{ok} while serving, 503 C{draining} while shutting
    down.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("content-type", _TEXT)
        request.setHeader("cache-control", "no-store")
        if self._metrics.draining:
            request.setResponseCode(503)
            return b"draining"
        return b"ok"


def makeMetricsResource(metrics: Metrics) -> Resource:
    """
    The root of the metrics web site: C{/metrics} and C{/healthz}, and 404
    for any other path (C{/} included).
    """
    root = _Page()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", _MetricsPage(metrics))
    root.putChild(b"healthz", _HealthPage(metrics))
    return root


class ReadOnlyChannel(HTTPChannel):
    """
    An HTTP channel for a site that only answers C{GET} and C{HEAD}, and so
    never needs a request body: it refuses one before reading it.

    Twisted's channel reads a request's whole body, into a temporary file
    if it is large, before any resource sees the request; this one answers
    as soon as the request line shows another method (405) or the headers
    announce a body (C{Content-Length} above 0, or C{Transfer-Encoding}:
    413), then closes without reading further. A request whose headers
    take longer than L{headersTimeout} seconds is answered 408 and closed.

    The size and count limits are Twisted's, made small: a line longer
    than L{MAX_LENGTH} is answered 431; headers over L{totalHeadersSize}
    bytes or L{maxHeaders} in number, 400 (Twisted's own answer).

    @cvar MAX_LENGTH: the longest request line or header line, in bytes.
    @cvar totalHeadersSize: the most bytes of request line and headers.
    @cvar maxHeaders: the most headers in one request.
    @cvar headersTimeout: seconds from the connection's start, or the end
        of the previous response, to the end of a request's headers.
    @ivar refused: C{True} once a request has been refused: whatever else
        arrives is ignored until the connection closes.
    """

    # A scraper's Accept header is the longest line it sends (about 200
    # bytes); browsers' cookies are why servers allow 4 or 8 KB.
    MAX_LENGTH = 4096
    totalHeadersSize = 8192
    # Scrapers and curl send fewer than 10, browsers about 15.
    maxHeaders = 32
    headersTimeout = HEADERS_TIMEOUT

    refused = False
    _headersDeadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._startHeadersDeadline()

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        """
        Refuse a request line whose method is not C{GET} or C{HEAD} at once,
        before its headers are read.
        """
        pending = len(self.requests)
        super().lineReceived(line)  # type: ignore[no-untyped-call]
        if len(self.requests) > pending and not self.refused:
            # That was a request line (Twisted queued a request for it):
            # its first word is the method.
            method = line.split(b" ", 1)[0]
            if method not in _METHODS:
                self._refuse(
                    405,
                    b"Method Not Allowed",
                    "this site only answers GET and HEAD",
                    [b"Allow: GET, HEAD"],
                )

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(
            431,
            b"Request Header Fields Too Large",
            f"a request line or header line is longer than {self.MAX_LENGTH} bytes",
        )

    def allHeadersReceived(self) -> None:
        """
        The headers are in: refuse a request that announces a body before
        Twisted makes a place to store it.
        """
        self._cancelHeadersDeadline()
        if self.length != 0:
            # Content-Length above 0, or a Transfer-Encoding (None).
            self._refuse(413, b"Content Too Large", "this site takes no request body")
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        if not self.refused:
            super().allContentReceived()  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)  # type: ignore[no-untyped-call]
        # The next request's headers are due within the same time.
        self._startHeadersDeadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelHeadersDeadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _startHeadersDeadline(self) -> None:
        self._cancelHeadersDeadline()
        callLater = cast(Callable[..., IDelayedCall], self.callLater)
        self._headersDeadline = callLater(self.headersTimeout, self._headersTimedOut)

    def _cancelHeadersDeadline(self) -> None:
        deadline, self._headersDeadline = self._headersDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _headersTimedOut(self) -> None:
        self._headersDeadline = None
        if self._answer(
            408, b"Request Timeout", f"no complete request within {self.headersTimeout:g} s"
        ):
            # Twisted's timeout: it closes, and aborts a peer that does not
            # let the close finish.
            self.timeoutConnection()  # type: ignore[no-untyped-call]

    def _refuse(
        self, status: int, phrase: bytes, why: str, headers: list[bytes] | None = None
    ) -> None:
        """
        Answer C{status} with C{why} (see L{_answer}), and close the
        connection.
        """
        if self._answer(status, phrase, why, headers):
            self.loseConnection()  # type: ignore[no-untyped-call]

    def _answer(
        self, status: int, phrase: bytes, why: str, headers: list[bytes] | None = None
    ) -> bool:
        """
        Answer C{status} with C{why} as a one-line text body, once; from now
        on, ignore everything the client sends.

        @return: whether this answered (C{False} if a refusal came first).
        """
        if self.refused:
            return False
        self.refused = True
        assert self.transport is not None
        self.transport.write(_response(status, phrase, why, headers or []))
        return True


def _response(status: int, phrase: bytes, why: str, headers: list[bytes]) -> bytes:
    """
    A whole HTTP/1.1 response that ends its connection: C{status}, its
    C{phrase}, C{headers}, and C{why} and a newline as a text body.
    """
    body = why.encode("ascii") + b"\n"
    head = [
        b"HTTP/1.1 %d %s" % (status, phrase),
        b"Content-Type: " + _TEXT.encode("ascii"),
        b"Content-Length: %d" % (len(body),),
        b"Connection: close",
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Busy(Protocol):
    """
    What a connection over the site's limit gets: a 503 that says why, and
    a close.

    @ivar limit: the limit it is over.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connectionMade(self) -> None:
        transport = cast(ITransport, self.transport)
        transport.write(
            _response(
                503,
                b"Service Unavailable",
                f"too many connections to the metrics site (limit {self.limit})",
                [b"Retry-After: 1"],
            )
        )
        transport.loseConnection()


class LimitedFactory(WrappingFactory):
    """
    A factory that holds at most C{limit} connections of the factory it
    wraps at once; a connection over the limit is answered by L{_Busy}
    (a 503) and closed.

    @ivar limit: the most connections open at once.
    """

    def __init__(self, wrappedFactory: Any, limit: int = MAX_METRICS_CONNECTIONS) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limit = limit

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper:
        # self.protocols holds the connections made and not yet lost.
        if len(self.protocols) >= self.limit:
            return self.protocol(self, _Busy(self.limit))
        return super().buildProtocol(addr)


class _QuietSite(Site):
    """
    A L{Site} without an access log: scrapers and probes call every few
    seconds, and their lines would drown the server's own log. Its
    connections are L{ReadOnlyChannel}s.
    """

    protocol = ReadOnlyChannel  # type: ignore[assignment]

    def log(self, request: Request) -> None:
        pass


def makeMetricsSite(
    metrics: Metrics, reactor: IReactorCore, limit: int = MAX_METRICS_CONNECTIONS
) -> LimitedFactory:
    """
    The factory of the metrics web site: C{/metrics} and C{/healthz}
    (L{makeMetricsResource}), read-only and bounded (L{ReadOnlyChannel}),
    at most C{limit} connections at once (L{LimitedFactory}).

    @param reactor: the reactor whose clock times the connections out.
    """
    site = _QuietSite(makeMetricsResource(metrics), reactor=cast(Any, reactor))  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    return LimitedFactory(site, limit)


def makeMetricsService(
    description: str, metrics: Metrics, reactor: IReactorCore | None = None
) -> ListenerService:
    """
    A service that serves C{metrics} over HTTP (C{/metrics}, C{/healthz})
    on the Twisted server endpoint C{description}, such as
    C{tcp:9100:interface=127.0.0.1}, with the bounds of L{makeMetricsSite}.

    @param reactor: the reactor to listen with; the global one by default.
    @raise ValueError: if C{description} is not an endpoint string.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = cast(IReactorCore, globalReactor)
    endpoint = serverFromString(reactor, description)
    return ListenerService(
        description, endpoint, makeMetricsSite(metrics, reactor), reactor, purpose="metrics"
    )
