"""
Tests for the playground's site (L{sockplay.playground.site}), its live
stream (L{sockplay.playground.stream}) and the send panel's parsing
(L{sockplay.playground.panel}), through the real site factory and HTTP
channel (L{SmallBodyChannel}) on in-memory transports and a fake clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.httpbytes import Response, request
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from sockplay.playground import site as siteModule
from sockplay.playground.panel import MAX_MESSAGE, BadSend, SendPanel, Target, _ClientSide, _OneShot
from sockplay.playground.site import MAX_STREAMS, Playground, makePlaygroundSite
from sockplay.playground.stream import STALL_LIMIT, EventStream
from sockplay.server.trace import IDLE_UPDATE_INTERVAL, UPDATE_INTERVAL
from sockplay.server.tracer import Tracer
from sockplay.website import HEADERS_TIMEOUT, SmallBodyChannel, allowedOrigin

HOST = IPv4Address("TCP", "127.0.0.1", 8080)
PEER = IPv4Address("TCP", "127.0.0.1", 50000)
ORIGIN = b"127.0.0.1:8080"

POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

TARGETS = [
    Target("tcp:127.0.0.1:12345", "127.0.0.1", 12345),
    Target("ssl:127.0.0.1:12346", None, 0, "it speaks TLS; the panel speaks plain TCP"),
]


# allowedOrigin


@dataclass
class OriginRequest:
    """
    What L{allowedOrigin} asks of a request.
    """

    host: IAddress
    headers: dict[bytes, bytes] = field(default_factory=dict)
    secure: bool = False

    def getHost(self) -> IAddress:
        return self.host

    def getHeader(self, name: bytes) -> bytes | None:
        return self.headers.get(name.lower())

    def isSecure(self) -> bool:
        return self.secure


def check(
    hostHeader: bytes | None,
    origin: bytes | None = None,
    local: IAddress = HOST,
    secure: bool = False,
) -> str | None:
    headers = {}
    if hostHeader is not None:
        headers[b"host"] = hostHeader
    if origin is not None:
        headers[b"origin"] = origin
    return allowedOrigin(OriginRequest(local, headers, secure))  # type: ignore[arg-type]


def test_originRightHostPasses() -> None:
    """
    A request naming the address it came in on, with its port, passes.
    """
    assert check(b"127.0.0.1:8080") is None


@pytest.mark.parametrize(
    "host",
    [b"evil.example:8080", b"127.0.0.1:9090", b"127.0.0.1", b"127.0.0.2:8080", b"x:y:z"],
)
def test_originWrongHostFails(host: bytes) -> None:
    """
    Another host name (a DNS rebinding), another port, or a Host that is
    not a host and port is refused, with a reason.
    """
    why = check(host)
    assert why is not None and why


def test_originMissingHostFails() -> None:
    """
    A request without a Host is refused.
    """
    assert check(None) == "the request has no Host header"


def test_localhostOnLoopback() -> None:
    """
    C{localhost} is accepted on a loopback address only.
    """
    assert check(b"localhost:8080") is None
    assert check(b"LOCALHOST:8080") is None
    assert check(b"localhost:8080", local=IPv4Address("TCP", "192.0.2.7", 8080)) is not None
    assert check(b"192.0.2.7:8080", local=IPv4Address("TCP", "192.0.2.7", 8080)) is None


def test_ipv6Loopback() -> None:
    """
    An IPv6 listener is named in brackets, with its port.
    """
    local = IPv6Address("TCP", "::1", 8080)
    assert check(b"[::1]:8080", local=local) is None
    assert check(b"localhost:8080", local=local) is None
    assert check(b"[::1]:8081", local=local) is not None
    assert check(b"[::2]:8080", local=local) is not None


def test_originHeader() -> None:
    """
    An Origin of the page's own scheme, host and port passes; any other is
    refused as cross-origin.
    """
    assert check(ORIGIN, b"http://127.0.0.1:8080") is None
    for origin in (b"http://evil.example", b"http://127.0.0.1:9090", b"https://127.0.0.1:8080",
                   b"null"):
        assert check(ORIGIN, origin) == "cross-origin requests are refused"


def test_httpsScheme() -> None:
    """
    Over TLS the origin's scheme is https, and a Host without a port means
    443.
    """
    local = IPv4Address("TCP", "127.0.0.1", 443)
    assert check(b"127.0.0.1", b"https://127.0.0.1", local=local, secure=True) is None
    assert check(b"127.0.0.1", b"http://127.0.0.1", local=local, secure=True) is not None
    assert check(b"127.0.0.1", local=local, secure=False) is not None


# The site over its real channel


class SiteTransport(StringTransport):
    """
    A site connection's transport, which records an abort.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Site:
    """
    The playground's site factory on a fake clock, with a page the test
    wrote, and a way to open connections to it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            siteModule,
            "_staticFiles",
            lambda: {
                "index.html": (b"text/html; charset=utf-8", b"<p>the page</p>"),
                "app.js": (b"text/javascript; charset=utf-8", b"// app"),
            },
        )
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.tracer = Tracer(self.clock)
        self.panel = SendPanel(MemoryReactorClock(), self.tracer, lambda: TARGETS)
        self.factory = makePlaygroundSite(self.tracer, self.panel, self.clock)  # type: ignore[arg-type]
        resource = self.factory.wrappedFactory.resource
        assert isinstance(resource, Playground)
        self.playground = resource

    def connect(self) -> tuple[ProtocolWrapper, SiteTransport]:
        protocol = self.factory.buildProtocol(PEER)
        assert protocol is not None
        transport = SiteTransport(hostAddress=HOST, peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def get(self, path: bytes, *headers: bytes, method: bytes = b"GET") -> Response:
        """
        One request on a new connection, and what the site answered.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(request(method, path, *headers))
        return Response(transport.value())


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Site:
    return Site(monkeypatch)


def assertPolicy(response: Response) -> None:
    assert response.headers[b"content-security-policy"] == POLICY
    assert response.headers[b"x-content-type-options"] == b"nosniff"


def test_rootServesThePage(site: Site) -> None:
    """
    C{/} serves C{index.html}, C{/static/<file>} the others, with their
    content types and the policy headers.
    """
    page = site.get(b"/")
    assert (page.status, page.body) == (200, b"<p>the page</p>")
    assert page.headers[b"content-type"] == b"text/html; charset=utf-8"
    assertPolicy(page)
    script = site.get(b"/static/app.js")
    assert (script.status, script.body) == (200, b"// app")
    assert script.headers[b"content-type"] == b"text/javascript; charset=utf-8"
    assertPolicy(script)


@pytest.mark.parametrize(
    "path", [b"/nope", b"/static/missing.js", b"/static/a/b", b"/api", b"/api/nope"]
)
def test_unknownPathIs404Json(site: Site, path: bytes) -> None:
    """
    An unknown path is a 404 with a JSON reason, and the policy headers.
    """
    response = site.get(path)
    assert response.status == 404
    assert response.headers[b"content-type"] == b"application/json"
    assert "error" in response.json()
    assertPolicy(response)


def test_sendWithGetIs405(site: Site) -> None:
    """
    C{/api/send} answers only C{POST}: a C{GET} is 405, saying so.
    """
    response = site.get(b"/api/send")
    assert response.status == 405
    assert response.headers[b"allow"] == b"POST"
    assert response.json() == {"error": "send with POST"}
    assertPolicy(response)


def test_foreignHostIs403(site: Site) -> None:
    """
    A request for another host (a rebound DNS name) gets 403 with the
    reason, and the policy headers, whatever the path.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(request(b"GET", b"/api/events", host=b"evil.example:8080"))
    response = Response(transport.value())
    assert response.status == 403
    assert "not this playground's address" in response.json()["error"]
    assertPolicy(response)
    assert site.tracer.feed.subscribers == []


def test_foreignOriginIs403(site: Site) -> None:
    """
    A send from another site's page is refused before it is parsed.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(
        post(json.dumps(GOOD).encode(), b"Origin: http://evil.example",
             b"Content-Type: application/json")
    )
    response = Response(transport.value())
    assert response.status == 403
    assert response.json() == {"error": "cross-origin requests are refused"}
    assert site.panel.inFlight == 0


def test_connectionDetails(site: Site) -> None:
    """
    C{/api/connections/<id>} gives a kept connection's summary and events;
    an unknown id, or one that is not a number, is 404.
    """
    trace = site.tracer.opened(PEER, "tcp:127.0.0.1:12345", "raw", _Counters())
    site.tracer.record(trace, "chunk", 2, b"hi")
    found = site.get(b"/api/connections/%d" % trace.id)
    assert found.status == 200
    details = found.json()
    assert details["connection"]["id"] == trace.id
    assert [e["kind"] for e in details["events"]] == ["connected", "chunk"]
    assert details["earlier"] == 0
    assert found.headers[b"cache-control"] == b"no-store"
    assertPolicy(found)
    for missing in (b"99", b"abc", b"-1"):
        gone = site.get(b"/api/connections/" + missing)
        assert gone.status == 404
        assert "error" in gone.json()
        assertPolicy(gone)


class _Counters:
    messages = 0
    bytesIn = 0
    bytesOut = 0
    stateName = "reading"


# EventStream


def events(raw: bytes) -> list[tuple[str, Any]]:
    """
    The Server-Sent Events in what a stream wrote: each name and its data.
    """
    found = []
    for block in raw.split(b"\n\n"):
        name = data = None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = json.loads(line[6:])
        if name is not None:
            found.append((name, data))
    return found


def openStream(site: Site) -> tuple[ProtocolWrapper, SiteTransport, EventStream]:
    """
    A live stream on a new connection to C{site}.
    """
    before = set(site.playground.streams)
    protocol, transport = site.connect()
    protocol.dataReceived(request(b"GET", b"/api/events"))
    (stream,) = site.playground.streams - before
    return protocol, transport, stream


def test_streamStartsWithASnapshot(site: Site) -> None:
    """
    A stream answers 200 as an event stream, first a snapshot that lists
    the server's listeners, then updates as connections change.
    """
    _, transport, _ = openStream(site)
    response = Response(transport.value())
    assert response.status == 200
    assert response.headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assertPolicy(response)
    (first,) = events(transport.value())
    assert first[0] == "snapshot"
    assert first[1]["server"]["listeners"] == [
        TARGETS[0].describe(0), TARGETS[1].describe(1)
    ]
    assert first[1]["bounds"]["updateInterval"] == UPDATE_INTERVAL
    site.tracer.opened(PEER, "tcp:127.0.0.1:12345", "raw", _Counters())
    site.clock.advance(UPDATE_INTERVAL)
    kinds = [name for name, _ in events(transport.value())]
    assert kinds == ["snapshot", "update"]
    update = events(transport.value())[-1][1]
    assert [e["kind"] for e in update["events"]] == ["connected"]


def test_pausedStreamSkipsThenResyncs(site: Site) -> None:
    """
    While the connection's buffer is full (the transport pauses the
    stream), updates are skipped; once resumed, the stream starts again
    from a fresh snapshot.
    """
    _, transport, stream = openStream(site)
    transport.producer.pauseProducing()
    assert stream.paused
    written = len(transport.value())
    site.tracer.opened(PEER, "tcp:127.0.0.1:12345", "raw", _Counters())
    site.clock.advance(UPDATE_INTERVAL)
    assert len(transport.value()) == written
    assert stream.skipped == 1
    transport.producer.resumeProducing()
    site.clock.advance(IDLE_UPDATE_INTERVAL)
    names = [name for name, _ in events(transport.value())]
    assert names == ["snapshot", "snapshot"]
    assert events(transport.value())[-1][1]["connections"][0]["id"] == 1
    site.clock.advance(IDLE_UPDATE_INTERVAL)
    assert [name for name, _ in events(transport.value())][-1] == "update"


def test_stalledStreamIsDropped(site: Site) -> None:
    """
    A stream paused for L{STALL_LIMIT} seconds is aborted and unsubscribed,
    and the site forgets it once its connection is lost.
    """
    protocol, transport, stream = openStream(site)
    transport.producer.pauseProducing()
    site.clock.advance(STALL_LIMIT - IDLE_UPDATE_INTERVAL)
    assert not transport.aborted
    site.clock.advance(IDLE_UPDATE_INTERVAL + UPDATE_INTERVAL)
    assert transport.aborted and stream.done
    assert site.tracer.feed.subscribers == []
    protocol.connectionLost(Failure(error.ConnectionAborted()))
    assert site.playground.streams == set()
    assert site.clock.getDelayedCalls() == []


def test_finishedStreamUnsubscribes(site: Site) -> None:
    """
    A browser that goes away ends its stream: unsubscribed, forgotten, and
    the tracer's timer stops.
    """
    protocol, _, stream = openStream(site)
    assert site.tracer.feed.subscribers == [stream]
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert stream.done
    assert site.tracer.feed.subscribers == []
    assert site.playground.streams == set()
    assert site.clock.getDelayedCalls() == []


def test_tooManyStreamsIs503(site: Site) -> None:
    """
    Past L{MAX_STREAMS} live streams, a new one is refused with 503 and a
    Retry-After; once one ends, there is room again.
    """
    opened = [openStream(site) for _ in range(MAX_STREAMS)]
    response = site.get(b"/api/events")
    assert response.status == 503
    assert response.headers[b"retry-after"] == b"5"
    assert "too many live streams" in response.json()["error"]
    assert len(site.tracer.feed.subscribers) == MAX_STREAMS
    opened[0][0].connectionLost(Failure(error.ConnectionDone()))
    openStream(site)


# SendPanel.parse


def panel() -> SendPanel:
    return SendPanel(MemoryReactorClock(), Tracer(Clock()), lambda: TARGETS)


GOOD = {"message": "hi", "framing": "line", "mode": "keep-open", "listener": 0, "session": "s1"}


def test_parseGood() -> None:
    """
    A well-formed request gives the message's bytes, the framing, the mode,
    the listener and the session.
    """
    assert panel().parse(GOOD) == (b"hi", "line", True, TARGETS[0], "s1")
    assert panel().parse({"message": "é", "framing": "eof", "mode": "one-shot"}) == (
        "é".encode(), "eof", False, TARGETS[0], ""
    )


@pytest.mark.parametrize(
    "body, why",
    [
        ([], "the request must be a JSON object"),
        ("hi", "the request must be a JSON object"),
        ({**GOOD, "message": ""}, "message must be a non-empty string"),
        ({**GOOD, "message": 5}, "message must be a non-empty string"),
        ({**GOOD, "message": "x" * (MAX_MESSAGE + 1)},
         f"message is longer than {MAX_MESSAGE} bytes"),
        ({**GOOD, "framing": "xml"}, "framing must be one of raw, line, eof, int32"),
        ({**GOOD, "mode": "forever"}, "mode must be one-shot or keep-open"),
        ({**GOOD, "framing": "eof"}, "eof framing ends a message by half-closing: use one-shot"),
        ({**GOOD, "listener": 2}, "listener must be the index of one of the server's listeners"),
        ({**GOOD, "listener": -1}, "listener must be the index of one of the server's listeners"),
        ({**GOOD, "listener": "0"}, "listener must be the index of one of the server's listeners"),
        ({**GOOD, "listener": True}, "listener must be the index of one of the server's listeners"),
        ({**GOOD, "listener": 1},
         "cannot send to ssl:127.0.0.1:12346: it speaks TLS; the panel speaks plain TCP"),
        ({**GOOD, "session": 7}, "session must be a string of at most 64 characters"),
        ({**GOOD, "session": "s" * 65}, "session must be a string of at most 64 characters"),
    ],
)
def test_parseBad(body: Any, why: str) -> None:
    """
    Each bad request is refused with a message that says what is wrong.
    """
    with pytest.raises(BadSend) as raised:
        panel().parse(body)
    assert str(raised.value) == why


def test_parseLongMultibyteMessage() -> None:
    """
    The message limit is in bytes of UTF-8, not characters.
    """
    with pytest.raises(BadSend):
        panel().parse({**GOOD, "message": "é" * (MAX_MESSAGE // 2 + 1)})
    assert panel().parse({**GOOD, "message": "é" * (MAX_MESSAGE // 2)})[0] == (
        "é".encode() * (MAX_MESSAGE // 2)
    )


# The send panel's POSTs on the real channel


def post(body: bytes, *headers: bytes) -> bytes:
    return request(
        b"POST", b"/api/send", *headers, b"Content-Length: %d" % len(body)
    ) + body


def test_bodyOverTheLimitIs413Unread(site: Site, noTempFiles: list[object]) -> None:
    """
    A body announced over L{SmallBodyChannel.maxBody} is answered 413 from
    its headers, and what follows is never read.
    """
    protocol, transport = site.connect()
    size = SmallBodyChannel.maxBody + 1
    protocol.dataReceived(
        request(b"POST", b"/api/send", b"Content-Type: application/json",
                b"Content-Length: %d" % size)
    )
    response = Response(transport.value())
    assert response.status == 413
    assert b"limited to 16384 bytes" in response.body
    protocol.dataReceived(b"x" * size)
    assert transport.value() == response.raw
    assert site.panel.inFlight == 0


def test_chunkedPostIs413(site: Site) -> None:
    """
    A body without a length (chunked) is refused: its size cannot be
    known before reading it.
    """
    protocol, transport = site.connect()
    protocol.dataReceived(
        request(b"POST", b"/api/send", b"Content-Type: application/json",
                b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n"
    )
    assert Response(transport.value()).status == 413


def test_nonJsonContentTypeIs415(site: Site) -> None:
    """
    A send must say it is JSON (a form post from another page cannot).
    """
    protocol, transport = site.connect()
    protocol.dataReceived(post(json.dumps(GOOD).encode(), b"Content-Type: text/plain"))
    response = Response(transport.value())
    assert response.status == 415
    assert "application/json" in response.json()["error"]
    assert site.panel.inFlight == 0


def test_invalidJsonIs400(site: Site) -> None:
    """
    A body that is not JSON, or not UTF-8, is a 400 that says so.
    """
    for body in (b"{not json", b"\xff\xfe"):
        protocol, transport = site.connect()
        protocol.dataReceived(post(body, b"Content-Type: application/json"))
        response = Response(transport.value())
        assert response.status == 400
        assert response.json() == {"error": "the body is not valid JSON"}


def test_badSendIs400WithItsReason(site: Site) -> None:
    """
    A JSON body the panel refuses is a 400 with the panel's reason.
    """
    protocol, transport = site.connect()
    body = json.dumps({**GOOD, "framing": "xml"}).encode()
    protocol.dataReceived(post(body, b"Content-Type: application/json; charset=utf-8"))
    response = Response(transport.value())
    assert response.status == 400
    assert response.json() == {"error": "framing must be one of raw, line, eof, int32"}


def test_tricklingBodyIs408(site: Site) -> None:
    """
    A body that does not arrive within the headers' deadline is answered
    408, and the request never reaches the panel.
    """
    protocol, transport = site.connect()
    body = json.dumps(GOOD).encode()
    protocol.dataReceived(post(body, b"Content-Type: application/json")[:-5])
    site.clock.advance(HEADERS_TIMEOUT - 0.1)
    assert transport.value() == b""
    site.clock.advance(0.1)
    response = Response(transport.value())
    assert response.status == 408
    protocol.dataReceived(body[-5:])
    assert site.panel.inFlight == 0
    assert Response(transport.value()).status == 408


def test_sendAnswersWhenTheReplyComes(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A good send is answered once the panel's conversation ends: 200, with
    the panel's answer as JSON.
    """
    pending: Deferred[dict[str, Any]] = Deferred()
    monkeypatch.setattr(site.panel, "send", lambda *parsed: pending)
    protocol, transport = site.connect()
    protocol.dataReceived(post(json.dumps(GOOD).encode(), b"Content-Type: application/json"))
    assert transport.value() == b""
    pending.callback({"ok": True, "printed": "Response from the server: Message received: hi"})
    response = Response(transport.value())
    assert response.status == 200
    assert response.json()["printed"] == "Response from the server: Message received: hi"


def test_sendToAPageThatLeftWritesNothing(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    If the page goes away before the panel's reply comes, the reply is
    dropped: nothing is written to the closed connection, and nothing is
    raised.
    """
    pending: Deferred[dict[str, Any]] = Deferred()
    monkeypatch.setattr(site.panel, "send", lambda *parsed: pending)
    protocol, transport = site.connect()
    protocol.dataReceived(post(json.dumps(GOOD).encode(), b"Content-Type: application/json"))
    protocol.connectionLost(Failure(error.ConnectionLost()))
    pending.callback({"ok": True})
    assert transport.value() == b""
    # Twisted raises if a request is finished after its connection is lost:
    # the answer did not try (the result is not a Failure).
    assert pending.result is None


def test_panelClientFindsItsServerSide() -> None:
    """
    The panel's client records its events in the trace of the server's
    side of its connection, whichever side the reactor makes first; one
    whose server side never appears stops waiting for it when it closes.
    """
    clock = Clock()
    tracer = Tracer(clock)
    clientAddress = IPv4Address("TCP", "127.0.0.1", 50000)
    server = tracer.opened(clientAddress, "tcp:127.0.0.1:12345", "raw", _Counters())
    side = _ClientSide(tracer)
    client = _OneShot(side, b"hi", "raw")
    client.makeConnection(StringTransport(hostAddress=clientAddress))
    assert side.trace is server and server.panel
    assert [e.kind for e in server.events if e.side == "client"] == ["connect", "send"]

    lonely = _ClientSide(tracer)
    other = _OneShot(lonely, b"hi", "raw")
    other.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 50001)))
    assert ("127.0.0.1", 50001) in tracer.expecting
    other.connectionLost(Failure(error.ConnectionLost()))
    assert tracer.expecting == {}
