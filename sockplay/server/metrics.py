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

The site is read-only and small, and it may face a hostile peer, so it is
a L{sockplay.website.boundedSite}: a method other than C{GET} or
C{HEAD}, or any request body, is answered at once (405, 413), unread;
headers are bounded in size, count and time; and the site holds at most
L{MAX_SITE_CONNECTIONS} connections, so that it cannot take the file
descriptors the echo listeners need.
"""

from __future__ import annotations

import typing
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.web.http import Request
from twisted.web.resource import IResource, Resource

from sockplay.server.faults import INJECTED_KINDS
from sockplay.server.listening import ListenerService
from sockplay.website import (
    MAX_SITE_CONNECTIONS,
    LimitedFactory,
    Page,
    ReadOnlyChannel,
    RegistryPage,
    SmallPutChannel,
    boundedSite,
)

__all__ = [
    "DURATION_BUCKETS",
    "ConnectionSummary",
    "Metrics",
    "makeMetricsResource",
    "makeMetricsService",
    "makeMetricsSite",
]

# Connection durations, in seconds: from a one-shot exchange on loopback
# (about a millisecond) to keep-open sessions of minutes. 5 s is how long a
# server lingers for a client that does not close, 10 s the drain timeout.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_TEXT = "text/plain; charset=utf-8"

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
          connections lasted;
        - C{sockplay_faults_injected_total{kind}}: faults injected, by kind
          (L{INJECTED_KINDS}, every one present from the start): C{delay}
          and C{throttle} per message whose reply they held back, the others
          per connection they ended or stalled.

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
        self._faults = Counter(
            "sockplay_faults_injected_total",
            "Faults injected, by kind: per message delayed or throttled, per connection "
            "dropped, reset, truncated, stalled or cut.",
            ["kind"],
            registry=self.registry,
        )
        for kind in INJECTED_KINDS:
            self._faults.labels(kind=kind)

    def faultsInjected(self, kind: str, count: int) -> None:
        """
        C{count} faults of C{kind} were injected.
        """
        self._faults.labels(kind=kind).inc(count)

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


class _HealthPage(Page):
    """
    C{/healthz}: 200 C{ok} while serving, 503 C{draining} while shutting
    down.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("content-type", _TEXT)
        request.setHeader("cache-control", "no-store")
        if self._metrics.draining:
            request.setResponseCode(503)
            return b"draining"
        return b"ok"


def makeMetricsResource(metrics: Metrics, faults: IResource | None = None) -> Resource:
    """
    The root of the metrics web site: C{/metrics} and C{/healthz}, with
    C{faults} at C{/faults} if given, and 404 for any other path (C{/}
    included).
    """
    root = Page()
    root.putChild(b"metrics", RegistryPage(metrics.registry))
    root.putChild(b"healthz", _HealthPage(metrics))
    if faults is not None:
        root.putChild(b"faults", faults)
    return root


def makeMetricsSite(
    metrics: Metrics,
    reactor: IReactorCore,
    limit: int = MAX_SITE_CONNECTIONS,
    faults: IResource | None = None,
) -> LimitedFactory:
    """
    The factory of the metrics web site: C{/metrics} and C{/healthz}
    (L{makeMetricsResource}), bounded, with at most C{limit} connections at
    once (L{sockplay.website.boundedSite}). It is read-only, but for
    the small C{PUT}s of C{/faults} when C{faults} is given.

    @param reactor: the reactor whose clock times the connections out.
    """
    return boundedSite(
        makeMetricsResource(metrics, faults),
        reactor,
        "the metrics site",
        limit,
        ReadOnlyChannel if faults is None else SmallPutChannel,
    )


def makeMetricsService(
    description: str,
    metrics: Metrics,
    reactor: IReactorCore | None = None,
    faults: IResource | None = None,
) -> ListenerService:
    """
    A service that serves C{metrics} over HTTP (C{/metrics}, C{/healthz},
    and C{faults} at C{/faults} if given) on the Twisted server endpoint
    C{description}, such as C{tcp:9100:interface=127.0.0.1}, with the
    bounds of L{makeMetricsSite}.

    @param reactor: the reactor to listen with; the global one by default.
    @raise ValueError: if C{description} is not an endpoint string.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = cast(IReactorCore, globalReactor)
    endpoint = serverFromString(reactor, description)
    return ListenerService(
        description,
        endpoint,
        makeMetricsSite(metrics, reactor, faults=faults),
        reactor,
        purpose="metrics",
    )
