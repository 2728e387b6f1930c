"""
A small web site that may face a hostile peer: the server's metrics site,
the playground, the client's probe exporter, and any other page sockplay
serves over HTTP. Shared (it imports nothing of sockplay's own), so that
the client may serve one as the server does.

Twisted's L{Site} reads a request's whole body, into a temporary file if it
is large, before any resource sees the request, and waits for headers for
as long as a client cares to trickle them. A read-only site has no use for
a body, so L{ReadOnlyChannel} refuses what it cannot use before reading
it: a method other than C{GET} or C{HEAD}, or any request body, is answered
at once (405, 413) and the connection closed, its body never read nor
stored; headers are bounded in size, count and time. L{SmallBodyChannel}
is the same for a site that takes small C{POST}s and C{PUT}s (the
playground's send panel and C{/faults}), and L{SmallPutChannel} for one
that takes small C{PUT}s (the metrics site's C{/faults}): a body over its
limit is refused unread. L{allowedOrigin} is the check of a site that
takes changes, that a request comes from its own origin. L{LimitedFactory}
holds at most L{MAX_SITE_CONNECTIONS} connections, so that the site cannot
take the file descriptors the echo listeners need. L{boundedSite} puts the
two together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet.abstract import isIPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorCore, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

__all__ = [
    "HEADERS_TIMEOUT",
    "MAX_SITE_CONNECTIONS",
    "LimitedFactory",
    "Page",
    "QuietSite",
    "ReadOnlyChannel",
    "RegistryPage",
    "SmallBodyChannel",
    "SmallPutChannel",
    "allowedOrigin",
    "boundedSite",
    "hostPort",
]

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
MAX_SITE_CONNECTIONS = 16


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
    # What the site answers, and the largest request body it reads.
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")
    maxBody = 0

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
            if method not in self.methods:
                names = [name.decode("ascii") for name in self.methods]
                self._refuse(
                    405,
                    b"Method Not Allowed",
                    f"this site only answers {', '.join(names[:-1])} and {names[-1]}",
                    [b"Allow: " + ", ".join(names).encode("ascii")],
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
        if self.length is None or self.length > self.maxBody:
            # A Transfer-Encoding (length None), or a Content-Length above
            # the limit.
            self._refuse(
                413,
                b"Content Too Large",
                f"request bodies are limited to {self.maxBody} bytes, with a Content-Length"
                if self.maxBody
                else "this site takes no request body",
            )
            return
        if not self.length:
            self._cancelHeadersDeadline()
        # Otherwise the deadline holds the body too: a body that trickles
        # holds the connection no longer than headers that do.
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        self._cancelHeadersDeadline()
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


class SmallBodyChannel(ReadOnlyChannel):
    """
    A L{ReadOnlyChannel} that also takes C{POST} and C{PUT} requests with a
    small body (at most L{maxBody} bytes, with a C{Content-Length}): the
    playground's send panel and C{/faults}. A larger body is answered 413 before it is read, and the
    whole request, body included, is due within L{headersTimeout}.
    """

    methods = (b"GET", b"HEAD", b"POST", b"PUT")
    maxBody = 16384


class SmallPutChannel(ReadOnlyChannel):
    """
    A L{ReadOnlyChannel} that also takes C{PUT} requests with a small body
    (at most L{maxBody} bytes, with a C{Content-Length}): the metrics site
    with C{/faults}. A larger body is answered 413 before it is read.
    """

    methods = (b"GET", b"HEAD", b"PUT")
    maxBody = 4096


class _Busy(Protocol):
    """
    What a connection over the site's limit gets: a 503 that says why, and
    a close.

    @ivar limit: the limit it is over.
    @ivar name: what the site is (C{"the metrics site"}).
    """

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name

    def connectionMade(self) -> None:
        transport = cast(ITransport, self.transport)
        transport.write(
            _response(
                503,
                b"Service Unavailable",
                f"too many connections to {self.name} (limit {self.limit})",
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
    @ivar name: what the site is, for the 503 (C{"the metrics site"}).
    """

    noisy = False

    def __init__(
        self, wrappedFactory: Any, limit: int = MAX_SITE_CONNECTIONS, name: str = "this site"
    ) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limit = limit
        self.name = name

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper:
        # self.protocols holds the connections made and not yet lost.
        if len(self.protocols) >= self.limit:
            return self.protocol(self, _Busy(self.limit, self.name))
        return super().buildProtocol(addr)


class QuietSite(Site):
    """
    A L{Site} without an access log: scrapers and probes call every few
    seconds, and their lines would drown the server's own log. Its
    connections are L{ReadOnlyChannel}s.
    """

    protocol = ReadOnlyChannel  # type: ignore[assignment]
    noisy = False

    def log(self, request: Request) -> None:
        pass


class Page(Resource):
    """
    A read-only page whose sub-paths do not exist: any method but C{GET}
    and C{HEAD} is answered 405.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return notFound()

    def render(self, request: IRequest) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            # Twisted says 501 for a method it does not know (PUT, which
            # a site with /faults takes), where 405 is the answer.
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", _TEXT.encode("ascii"))
            return b"this page only answers GET and HEAD\n"
        return cast(bytes, super().render(request))  # type: ignore[no-untyped-call]


class RegistryPage(Page):
    """
    C{/metrics}: a Prometheus registry in the format the scraper asks for
    (its C{Accept} header), the Prometheus text format by default. The
    server's metrics and the client's probe exporter serve one each.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        encode, contentType = choose_encoder(
            (request.getHeader(b"accept") or b"").decode("latin-1")
        )
        request.setHeader(b"content-type", contentType.encode("latin-1"))
        return encode(self._registry)


def boundedSite(
    resource: IResource,
    reactor: IReactorCore,
    name: str,
    limit: int = MAX_SITE_CONNECTIONS,
    channel: type[ReadOnlyChannel] = ReadOnlyChannel,
) -> LimitedFactory:
    """
    The factory of a read-only web site that serves C{resource}, bounded
    (L{ReadOnlyChannel}), with at most C{limit} connections at once
    (L{LimitedFactory}), and no access log.

    @param reactor: the reactor whose clock times the connections out.
    @param name: what the site is, for the 503 of a connection over the
        limit: C{"the metrics site"}.
    @param channel: the HTTP channel: L{ReadOnlyChannel}, or
        L{SmallBodyChannel} for a site that takes small C{POST}s, or
        L{SmallPutChannel}.
    """
    site = QuietSite(resource, reactor=cast(Any, reactor))  # type: ignore[no-untyped-call]
    site.protocol = channel
    site.displayTracebacks = False
    return LimitedFactory(site, limit, name)


# Names a browser may give a loopback address by.
_LOOPBACK_NAMES = ("localhost",)


def _isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hostPort(host: object, port: object) -> str:
    """
    A host and port as a URL writes them: an IPv6 address in brackets.
    """
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def allowedOrigin(request: Request) -> str | None:
    """
    Why C{request} does not come from the site's own origin, or C{None} if
    it does: its C{Host} must be the address the request came in on (or
    C{localhost} on a loopback address), with the same port, and its
    C{Origin}, if any, that same host. So a page on another site cannot
    use the site, even through a DNS name rebound to this address (the
    playground, C{/faults}).
    """
    local = request.getHost()
    localHost = getattr(local, "host", None)
    localPort = getattr(local, "port", None)
    hostHeader = request.getHeader(b"host")
    if hostHeader is None:
        return "the request has no Host header"
    host = hostHeader.decode("latin-1").lower()
    parts = urlsplit("//" + host)
    try:
        port = parts.port
    except ValueError:
        return "the Host header is not a host and port"
    name = parts.hostname or ""
    scheme = "https" if request.isSecure() else "http"
    if port is None:
        port = 443 if scheme == "https" else 80
    if isinstance(localHost, str) and isIPv6Address(localHost):
        localHost = localHost.lower()
    sameAddress = name == localHost or (
        name in _LOOPBACK_NAMES and isinstance(localHost, str) and _isLoopback(localHost)
    )
    if not sameAddress or port != localPort:
        return (
            f"Host {host!r} is not this playground's address: open it by its address, "
            f"such as http://{hostPort(localHost, localPort)}/"
        )
    origin = request.getHeader(b"origin")
    if origin is not None and origin.decode("latin-1").lower() != f"{scheme}://{host}":
        return "cross-origin requests are refused"
    return None
