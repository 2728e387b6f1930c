"""
Tests for L{sockplay.server.metrics}: the metrics a server keeps, the web pages
that show them (rendered with Twisted's fake requests), and the service
that serves them, against a memory reactor and on a real loopback socket.
"""

from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY, generate_latest
from support.realreactor import DEADLINE, resultOf, spinUntil
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor, StringTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest

from sockplay.server.faults import INJECTED_KINDS
from sockplay.server.listening import ListenerService
from sockplay.server.metrics import (
    Metrics,
    makeMetricsResource,
    makeMetricsService,
    makeMetricsSite,
)
from sockplay.website import (
    HEADERS_TIMEOUT,
    MAX_SITE_CONNECTIONS,
    LimitedFactory,
    ReadOnlyChannel,
)

LOOPBACK = "127.0.0.1"

METRIC_NAMES = [
    "sockplay_connections_active",
    "sockplay_connections_total",
    "sockplay_messages_total",
    "sockplay_bytes_received_total",
    "sockplay_bytes_sent_total",
    "sockplay_connection_duration_seconds",
]


@dataclass(frozen=True)
class Record:
    """
    A connection summary, as the server's factory hands it over.
    """

    outcome: str = "ok"
    messages: int = 0
    bytesIn: int = 0
    bytesOut: int = 0
    duration: float = 0.0


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """
    The current value of one sample of C{metrics}.
    """
    return metrics.registry.get_sample_value(name, labels)


@dataclass
class Response:
    """
    What a resource answered to a fake request.
    """

    status: int
    headers: dict[str, str]
    body: bytes


def get(metrics: Metrics, path: bytes, accept: bytes | None = None) -> Response:
    """
    Render C{GET path} on the metrics site's resources with a fake request.
    """
    request = DummyRequest(path.split(b"/")[1:])
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    resource = getChildForRequest(makeMetricsResource(metrics), request)
    body = resource.render(request)
    if body == NOT_DONE_YET:
        assert request.finished
        body = b"".join(request.written)
    assert isinstance(body, bytes)
    return Response(
        status=request.responseCode or 200,
        headers={
            name.decode().lower(): values[-1].decode()
            for name, values in request.responseHeaders.getAllRawHeaders()
        },
        body=body,
    )


def test_metricsStartAtZero() -> None:
    """
    A new L{Metrics} shows no connection, no message, no byte and an empty
    duration histogram.
    """
    metrics = Metrics()
    assert [
        sample(metrics, "sockplay_connections_active"),
        sample(metrics, "sockplay_messages_total"),
        sample(metrics, "sockplay_bytes_received_total"),
        sample(metrics, "sockplay_bytes_sent_total"),
        sample(metrics, "sockplay_connection_duration_seconds_count"),
    ] == [0, 0, 0, 0, 0]
    assert metrics.draining is False


def test_faultsInjectedStartAtZeroForEveryKind() -> None:
    """
    C{sockplay_faults_injected_total} shows every kind of fault from the
    start, at 0, so that a rate over it exists before the first fault.
    """
    metrics = Metrics()
    assert {
        kind: sample(metrics, "sockplay_faults_injected_total", kind=kind)
        for kind in INJECTED_KINDS
    } == dict.fromkeys(INJECTED_KINDS, 0)
    assert set(INJECTED_KINDS) == {
        "delay", "drop", "reset", "truncate", "stall", "cut", "throttle",
    }


def test_faultsInjectedCountedByKind() -> None:
    """
    Each injection adds its count under its kind only.
    """
    metrics = Metrics()
    metrics.faultsInjected("delay", 3)
    metrics.faultsInjected("cut", 1)
    metrics.faultsInjected("delay", 1)
    assert sample(metrics, "sockplay_faults_injected_total", kind="delay") == 4
    assert sample(metrics, "sockplay_faults_injected_total", kind="cut") == 1
    assert sample(metrics, "sockplay_faults_injected_total", kind="stall") == 0


def test_connectionOpenedCountsActive() -> None:
    """
    Each opened connection adds one to the active gauge; none is counted as
    ended yet.
    """
    metrics = Metrics()
    metrics.connectionOpened()
    metrics.connectionOpened()
    assert sample(metrics, "sockplay_connections_active") == 2
    assert sample(metrics, "sockplay_connections_total", outcome="ok") is None


def test_connectionClosedAccountsForTheConnection() -> None:
    """
    A closed connection leaves the active gauge and adds its outcome, its
    messages, its bytes and its duration, all at once.
    """
    metrics = Metrics()
    metrics.connectionOpened()
    metrics.connectionOpened()
    metrics.connectionClosed(
        Record(outcome="ok", messages=3, bytesIn=30, bytesOut=84, duration=0.25)
    )
    assert sample(metrics, "sockplay_connections_active") == 1
    assert sample(metrics, "sockplay_connections_total", outcome="ok") == 1
    assert sample(metrics, "sockplay_messages_total") == 3
    assert sample(metrics, "sockplay_bytes_received_total") == 30
    assert sample(metrics, "sockplay_bytes_sent_total") == 84
    assert sample(metrics, "sockplay_connection_duration_seconds_count") == 1
    assert sample(metrics, "sockplay_connection_duration_seconds_sum") == 0.25
    assert sample(metrics, "sockplay_connection_duration_seconds_bucket", le="0.1") == 0
    assert sample(metrics, "sockplay_connection_duration_seconds_bucket", le="0.5") == 1


def test_connectionsCountedByOutcome() -> None:
    """
    Each outcome is its own series of C{sockplay_connections_total}, and
    the other counters add up across connections.
    """
    metrics = Metrics()
    for record in [Record("ok", messages=1), Record("too-long"), Record("ok", messages=2)]:
        metrics.connectionOpened()
        metrics.connectionClosed(record)
    assert sample(metrics, "sockplay_connections_total", outcome="ok") == 2
    assert sample(metrics, "sockplay_connections_total", outcome="too-long") == 1
    assert sample(metrics, "sockplay_messages_total") == 3
    assert sample(metrics, "sockplay_connections_active") == 0


def test_registriesAreSeparate() -> None:
    """
    Two L{Metrics} (two servers, or two tests) keep their own counts, and
    neither registers in prometheus_client's global registry.
    """
    first, second = Metrics(), Metrics()
    first.connectionOpened()
    assert sample(first, "sockplay_connections_active") == 1
    assert sample(second, "sockplay_connections_active") == 0
    assert REGISTRY.get_sample_value("sockplay_connections_active") is None


def test_metricsPage() -> None:
    """
    C{/metrics} is the registry in the Prometheus text format, with that
    format's content type, and lists every sockplay metric.
    """
    metrics = Metrics()
    metrics.connectionOpened()
    response = get(metrics, b"/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.body == generate_latest(metrics.registry)
    for name in METRIC_NAMES:
        assert f"# TYPE {name} ".encode() in response.body, name
    assert b"\nsockplay_connections_active 1.0\n" in response.body


def test_metricsPageOpenMetrics() -> None:
    """
    A scraper that asks for OpenMetrics gets that format, with its content
    type.
    """
    response = get(Metrics(), b"/metrics", accept=b"application/openmetrics-text; version=1.0.0")
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text;")
    assert response.body.endswith(b"# EOF\n")


def test_healthzServing() -> None:
    """
    While the server takes connections, C{/healthz} answers 200 C{ok}.
    """
    response = get(Metrics(), b"/healthz")
    assert (response.status, response.body) == (200, b"ok")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_healthzDraining() -> None:
    """
    Once the server drains, C{/healthz} answers 503 C{draining}, so that a
    load balancer stops sending it clients.
    """
    metrics = Metrics()
    metrics.draining = True
    response = get(metrics, b"/healthz")
    assert (response.status, response.body) == (503, b"draining")


@pytest.mark.parametrize("path", [b"/", b"/nope", b"/metrics/extra", b"/healthz/"])
def test_otherPathsNotFound(path: bytes) -> None:
    """
    Every path but C{/metrics} and C{/healthz} is 404.
    """
    assert get(Metrics(), path).status == 404


def test_metricsServiceListens(logged: list[str]) -> None:
    """
    The service listens on its endpoint with a web site while running,
    names the real address once started, and stops listening when stopped.
    """
    reactor = MemoryReactor()
    service = makeMetricsService("tcp:9100:interface=127.0.0.1", Metrics(), reactor)
    service.privilegedStartService()
    service.startService()
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (9100, LOOPBACK)
    assert isinstance(factory, LimitedFactory)
    assert isinstance(factory.wrappedFactory, Site)
    assert factory.limit == MAX_SITE_CONNECTIONS
    assert service.port is not None
    assert logged == ["Serving metrics on tcp:0.0.0.0:9100 (tcp:9100:interface=127.0.0.1)"]
    stopped: list[bool] = []
    service.port.stopListening = lambda: stopped.append(True)  # type: ignore[method-assign]
    service.stopService()
    assert (service.port, stopped) == (None, [True])


def test_metricsServiceCannotListen() -> None:
    """
    A metrics endpoint that cannot listen ends the program with one line
    naming it (a L{SystemExit}, no traceback).
    """
    reactor = RaisingMemoryReactor(
        listenException=CannotListenError(LOOPBACK, 9100, OSError(98, "in use"))
    )
    service = makeMetricsService("tcp:9100:interface=127.0.0.1", Metrics(), reactor)
    with pytest.raises(SystemExit) as info:
        service.privilegedStartService()
    message = str(info.value.code)
    assert message.startswith("Error: cannot listen on tcp:9100:interface=127.0.0.1 for metrics: ")
    assert "\n" not in message


def test_metricsServiceBadEndpoint() -> None:
    """
    A description that is not an endpoint string is refused when the
    service is made.
    """
    with pytest.raises(ValueError):
        makeMetricsService("bogus:1", Metrics(), MemoryReactor())


class _Received:
    """
    A stand-in socket for L{http.client.HTTPResponse}: the bytes received.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def httpGet(port: int, path: str) -> http.client.HTTPResponse:
    """
    C{GET path} over a real loopback connection to C{port}, served by the
    global reactor, which is iterated until the server closes.
    """
    with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {LOOPBACK}\r\n\r\n".encode())
        sock.setblocking(False)
        chunks: list[bytes] = []

        def closed() -> bool:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                return False
            chunks.append(chunk)
            return not chunk

        spinUntil(closed, f"the response to GET {path}")
    response = http.client.HTTPResponse(_Received(b"".join(chunks)))  # type: ignore[arg-type]
    response.begin()
    return response


@pytest.fixture
def running() -> Iterator[tuple[ListenerService, Metrics]]:
    """
    A metrics service on an ephemeral loopback port of the real reactor,
    stopped after the test.
    """
    metrics = Metrics()
    service = makeMetricsService("tcp:0:interface=127.0.0.1", metrics)
    service.privilegedStartService()
    service.startService()
    try:
        yield service, metrics
    finally:
        resultOf(service.stopService(), "the metrics port to close")


def test_metricsServiceOverRealSocket(running: tuple[ListenerService, Metrics]) -> None:
    """
    On a real port 0, the service's port tells the address it got, and an
    HTTP client there gets the metrics, then a 503 from C{/healthz} once
    the server drains.
    """
    service, metrics = running
    assert service.port is not None
    address = service.port.getHost()
    assert address.host == LOOPBACK  # type: ignore[attr-defined]
    port = address.port  # type: ignore[attr-defined]
    metrics.connectionOpened()
    response = httpGet(port, "/metrics")
    assert response.status == 200
    assert response.getheader("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert b"\nsockplay_connections_active 1.0\n" in response.read()
    assert (httpGet(port, "/healthz").status, httpGet(port, "/nope").status) == (200, 404)
    metrics.draining = True
    response = httpGet(port, "/healthz")
    assert (response.status, response.read()) == (503, b"draining")


# The metrics site's channel against hostile requests: a fake transport and
# a fake clock, through the site's factory as the listener builds it.

PEER = IPv4Address("TCP", LOOPBACK, 40000)


class SiteConnections:
    """
    The metrics site's factory on a fake clock, and a way to open fake
    connections to it.

    @ivar clock: the clock that times the connections out.
    @ivar factory: the site's factory (the connection limit around the site).
    """

    def __init__(self, limit: int = MAX_SITE_CONNECTIONS) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.factory = makeMetricsSite(self.metrics, self.clock, limit)  # type: ignore[arg-type]

    def connect(self) -> tuple[ProtocolWrapper, StringTransport]:
        """
        A new connection: its protocol, connected to a fake transport.
        """
        protocol = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport


@pytest.fixture
def site() -> SiteConnections:
    """
    The metrics site's factory, on a fake clock.
    """
    return SiteConnections()


def channelOf(protocol: ProtocolWrapper) -> ReadOnlyChannel:
    """
    The HTTP channel inside a connection of the limited factory.
    """
    channel = protocol.wrappedProtocol
    assert isinstance(channel, ReadOnlyChannel)
    return channel


def statusOf(transport: StringTransport) -> bytes:
    """
    The status line of what the site wrote.
    """
    return transport.value().split(b"\r\n", 1)[0]


def test_getServedThroughTheLimitedSite(site: SiteConnections) -> None:
    """
    A plain C{GET} goes through the connection limit and the read-only
    channel to the page, and a kept-alive connection stays open.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statusOf(transport) == b"HTTP/1.1 200 OK"
    assert transport.value().endswith(b"\r\n\r\nok")
    assert not transport.disconnecting


def test_getWithEmptyBodyServed(site: SiteConnections, noTempFiles: list[object]) -> None:
    """
    C{Content-Length: 0} announces no body: the request is served.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert statusOf(transport) == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get"])
def test_otherMethodsRefusedAtTheRequestLine(
    site: SiteConnections, noTempFiles: list[object], method: bytes
) -> None:
    """
    A method other than C{GET} or C{HEAD} is answered 405 (with C{Allow})
    as soon as its request line arrives, and the connection closes.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(method + b" /metrics HTTP/1.1\r\n")
    assert statusOf(transport) == b"HTTP/1.1 405 Method Not Allowed"
    assert b"\r\nAllow: GET, HEAD\r\n" in transport.value()
    assert b"\r\nConnection: close\r\n" in transport.value()
    assert transport.value().endswith(b"\r\n\r\nthis site only answers GET and HEAD\n")
    assert transport.disconnecting


def test_largePostAnsweredWithoutStoringItsBody(
    site: SiteConnections, noTempFiles: list[object]
) -> None:
    """
    A C{POST} that announces a 1 GB body is answered 405 at once, with no
    temporary file and none of its body read: what else arrives is ignored.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (10**9,)
        + b"x" * 65536
    )
    answer = transport.value()
    assert statusOf(transport) == b"HTTP/1.1 405 Method Not Allowed"
    assert transport.disconnecting
    channel = channelOf(protocol)
    assert channel.refused
    protocol.dataReceived(b"x" * 65536)
    assert transport.value() == answer
    assert [request.content for request in channel.requests] == [None]
    assert noTempFiles == []


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: 1000000000", b"Content-Length: 1", b"Transfer-Encoding: chunked"],
)
def test_getWithBodyRefused(
    site: SiteConnections, noTempFiles: list[object], header: bytes
) -> None:
    """
    A C{GET} whose headers announce a body is answered 413 before the body
    is read or stored, and the connection closes.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n" + header + b"\r\n\r\n" + b"x" * 1000)
    assert statusOf(transport) == b"HTTP/1.1 413 Content Too Large"
    assert transport.value().endswith(b"this site takes no request body\n")
    assert transport.disconnecting
    assert [request.content for request in channelOf(protocol).requests] == [None]
    protocol.dataReceived(b"0\r\n\r\n")
    assert noTempFiles == []


def test_tooManyHeadersRefused(site: SiteConnections) -> None:
    """
    More than L{ReadOnlyChannel.maxHeaders} headers: 400, and closed.
    """
    protocol, transport = site.connect()
    headers = b"".join(b"X-%d: 1\r\n" % (n,) for n in range(ReadOnlyChannel.maxHeaders + 1))
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n" + headers + b"\r\n")
    assert statusOf(transport) == b"HTTP/1.1 400 Bad Request"
    assert transport.disconnecting


def test_headersTooLargeRefused(site: SiteConnections) -> None:
    """
    Headers of more than L{ReadOnlyChannel.totalHeadersSize} bytes in all,
    each line within the limit: 400, and closed.
    """
    protocol, transport = site.connect()
    line = b"X-Big: " + b"a" * 2000 + b"\r\n"
    count = ReadOnlyChannel.totalHeadersSize // len(line) + 1
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n" + line * count)
    assert statusOf(transport) == b"HTTP/1.1 400 Bad Request"
    assert transport.disconnecting


@pytest.mark.parametrize("complete", [True, False], ids=["line", "unterminated"])
def test_headerLineTooLongRefused(site: SiteConnections, complete: bool) -> None:
    """
    A header line longer than L{ReadOnlyChannel.MAX_LENGTH}, whole or still
    arriving: 431, and closed.
    """
    protocol, transport = site.connect()
    line = b"X-Long: " + b"a" * ReadOnlyChannel.MAX_LENGTH + (b"\r\n" if complete else b"")
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n" + line)
    assert statusOf(transport) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert transport.disconnecting


def test_slowHeadersTimedOut(site: SiteConnections) -> None:
    """
    A client that trickles its headers, a byte at a time within the idle
    timeout, is answered 408 once L{HEADERS_TIMEOUT} has passed since it
    connected, and closed; aborted if it does not let the close finish.
    """
    protocol, transport = site.connect()
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    for byte in request[: int(HEADERS_TIMEOUT) - 1]:
        protocol.dataReceived(bytes([byte]))
        site.clock.advance(1)
    assert transport.value() == b""
    site.clock.advance(1)
    assert statusOf(transport) == b"HTTP/1.1 408 Request Timeout"
    assert transport.value().endswith(b"no complete request within 10 s\n")
    assert transport.disconnecting and not transport.disconnected
    site.clock.advance(ReadOnlyChannel.abortTimeout)
    assert transport.disconnected  # what its abortConnection sets


def test_silentConnectionTimedOut(site: SiteConnections) -> None:
    """
    A client that connects and sends nothing is timed out after
    L{HEADERS_TIMEOUT}.
    """
    transport = site.connect()[1]
    site.clock.advance(HEADERS_TIMEOUT - 0.1)
    assert not transport.disconnecting
    site.clock.advance(0.1)
    assert statusOf(transport) == b"HTTP/1.1 408 Request Timeout"


def test_headersDeadlineRestartsAfterEachResponse(site: SiteConnections) -> None:
    """
    On a kept-alive connection, the next request's headers are due within
    L{HEADERS_TIMEOUT} of the previous response: a request in time is
    served, and the connection is timed out once it waits too long.
    """
    protocol, transport = site.connect()
    site.clock.advance(HEADERS_TIMEOUT - 1)
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n\r\n")
    site.clock.advance(HEADERS_TIMEOUT - 1)
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    transport.clear()
    site.clock.advance(HEADERS_TIMEOUT)
    assert statusOf(transport) == b"HTTP/1.1 408 Request Timeout"


def test_timersGoWithTheConnection(site: SiteConnections) -> None:
    """
    A connection that closes leaves no timer behind.
    """
    protocol = site.connect()[0]
    protocol.dataReceived(b"GET /heal")
    assert site.clock.getDelayedCalls()
    protocol.connectionLost(Failure(ConnectionDone()))
    assert site.clock.getDelayedCalls() == []


def test_connectionLimit() -> None:
    """
    Past the site's connection limit, a new connection is answered 503 and
    closed, without reaching the site; once a connection closes, the next
    one is served.
    """
    site = SiteConnections(limit=2)
    connections = [site.connect() for _ in range(2)]
    extra, busy = site.connect()
    assert statusOf(busy) == b"HTTP/1.1 503 Service Unavailable"
    assert busy.value().endswith(b"too many connections to the metrics site (limit 2)\n")
    assert b"\r\nRetry-After: 1\r\n" in busy.value()
    assert busy.disconnecting
    extra.connectionLost(Failure(ConnectionDone()))
    connections[0][0].connectionLost(Failure(ConnectionDone()))
    protocol, transport = site.connect()
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert statusOf(transport) == b"HTTP/1.1 200 OK"


def test_defaultConnectionLimit(site: SiteConnections) -> None:
    """
    The site holds L{MAX_SITE_CONNECTIONS} connections by default.
    """
    for _ in range(MAX_SITE_CONNECTIONS):
        assert site.connect()[1].value() == b""
    assert statusOf(site.connect()[1]) == b"HTTP/1.1 503 Service Unavailable"
