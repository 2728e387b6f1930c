"""
The probe exporter: C{--count 0 --metrics ENDPOINT} probes a server until
stopped and serves what it sees as Prometheus metrics, as smokeping_prober
does for ping.

L{ProbeMetrics} holds the metrics, in a registry of their own (never the
global one), and is told of each probe as it ends:

    - C{sockplay_probe_rtt_seconds}: a histogram of the round-trip times
      of the probes answered with an echo (L{RTT_BUCKETS}); with
      C{--tally}, labelled with the C{backend} that answered;
    - C{sockplay_probe_results_total{result}}: the probes by how they
      ended (L{sockplay.client.failures.OUTCOMES}), every result present
      from the start at 0, so that C{rate()} sees the first failure;
    - C{sockplay_probe_up}: 1 if the last probe was answered with an echo,
      else 0.

L{listenForMetrics} serves them on C{/metrics} of a Twisted server
endpoint, on the same bounded, read-only site as the server's metrics
(L{sockplay.website.boundedSite}).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.web.resource import Resource

from sockplay.client.failures import INTERRUPTED, OK, OUTCOMES, ClientError
from sockplay.client.requests import ProbeResult
from sockplay.tally import IDENTITY_KEPT, MAX_IDENTITIES, identityOf
from sockplay.website import Page, RegistryPage, boundedSite

__all__ = [
    "OTHER_BACKENDS",
    "RTT_BUCKETS",
    "ProbeMetrics",
    "backendLabel",
    "listenForMetrics",
    "makeExporterResource",
    "metricsURL",
]

# Round-trip times, in seconds: from a keep-open probe on loopback (about
# 100 µs) to a probe that takes the whole default --timeout (10 s), in
# steps of about 2.5x, as Prometheus's own default buckets step.
RTT_BUCKETS = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# The backend label of the replies past the tally's MAX_IDENTITIES
# identities: the tally's "(other identities)" row.
OTHER_BACKENDS = "(other identities)"


def backendLabel(identity: bytes) -> str:
    """
    An identity (as L{identityOf} gives it) as the C{backend} label's
    value: the text C{--tally} shows for it, unquoted (UTF-8, any byte
    that is not as a backslash escape), cut to L{IDENTITY_KEPT} bytes with
    C{...} after a cut one.
    """
    text = identity[:IDENTITY_KEPT].decode("utf-8", "backslashreplace")
    return text + "..." if len(identity) > IDENTITY_KEPT else text


class ProbeMetrics:
    """
    The exporter's metrics, updated as each probe ends (L{observe}).

    @ivar registry: the registry that holds them (not the global one).
    """

    def __init__(self, message: bytes | None = None) -> None:
        """
        @param message: with C{--tally}, the message the probes send, so
            that the round-trip times are labelled with the identity of
            the backend that answered (what comes before the echoed
            message); C{None} for no C{backend} label.
        """
        self.registry = CollectorRegistry()
        self._message = message
        self._backends: set[bytes] = set()
        self._rtt = Histogram(
            "sockplay_probe_rtt_seconds",
            "Round-trip time of the probes answered with an echo: connect (without "
            "--keep-open) and send to the complete reply.",
            [] if message is None else ["backend"],
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )
        self._results = Counter(
            "sockplay_probe_results_total",
            "Probes that have ended, by result.",
            ["result"],
            registry=self.registry,
        )
        for result in OUTCOMES:
            self._results.labels(result=result)
        self._up = Gauge(
            "sockplay_probe_up",
            "1 if the last probe was answered with an echo, else 0.",
            registry=self.registry,
        )

    def observe(self, result: ProbeResult) -> None:
        """
        Count a probe that has ended. One cut short by SIGINT or SIGTERM
        (L{INTERRUPTED}) says nothing of the server and is not counted.
        """
        if result.outcome == INTERRUPTED:
            return
        self._results.labels(result=result.outcome).inc()
        answered = result.outcome == OK and result.rtt is not None
        self._up.set(1 if answered else 0)
        if not answered or result.rtt is None:
            return
        if self._message is None:
            self._rtt.observe(result.rtt)
            return
        self._rtt.labels(backend=self._backend(result.reply or b"")).observe(result.rtt)

    def _backend(self, reply: bytes) -> str:
        """
        The C{backend} label of C{reply}: its identity, or past
        L{MAX_IDENTITIES} identities, L{OTHER_BACKENDS}, as the tally
        counts them.
        """
        assert self._message is not None
        identity = identityOf(reply, self._message)
        if identity is None:  # An OK reply is an echo; kept safe all the same.
            return OTHER_BACKENDS
        if identity not in self._backends:
            if len(self._backends) >= MAX_IDENTITIES:
                return OTHER_BACKENDS
            self._backends.add(identity)
        return backendLabel(identity)


def makeExporterResource(metrics: ProbeMetrics) -> Resource:
    """
    The root of the exporter's site: C{/metrics}, and 404 for any other
    path.
    """
    root = Page()
    root.putChild(b"metrics", RegistryPage(metrics.registry))
    return root


def metricsURL(port: IListeningPort) -> str:
    """
    Where a scraper finds the metrics served on C{port}: C{http://HOST:PORT/metrics}
    for a TCP port, else what the port's address says.
    """
    address = port.getHost()
    if isinstance(address, IPv6Address):
        return f"http://[{address.host}]:{address.port}/metrics"
    if isinstance(address, IPv4Address):
        return f"http://{address.host}:{address.port}/metrics"
    return str(address)


async def listenForMetrics(
    reactor: IReactorCore, description: str, metrics: ProbeMetrics
) -> IListeningPort:
    """
    Serve C{metrics} on C{/metrics} of the Twisted server endpoint
    C{description} (C{tcp:9465:interface=127.0.0.1}), on a bounded,
    read-only site (L{boundedSite}).

    @raise ClientError: if it cannot listen there (a port in use, an
        address that is not the host's), with the one line that says so.
    @raise ValueError: if C{description} is not an endpoint string (the
        options have checked it).
    """
    endpoint = serverFromString(reactor, description)
    site = boundedSite(makeExporterResource(metrics), reactor, "the metrics site")
    try:
        port: IListeningPort = await endpoint.listen(site)
    except CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
        raise ClientError(f"cannot listen on {description} for --metrics: {reason}") from None
    except (OSError, OverflowError) as e:  # OverflowError: a port number over 65535
        raise ClientError(f"cannot listen on {description} for --metrics: {e}") from None
    return port
