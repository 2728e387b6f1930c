"""
The playground's web site: the page (three static files from the
package), its live stream, one connection's whole timeline, and the send
panel.

  - C{GET /}, C{GET /static/<file>}: the page.
  - C{GET /api/events}: the live stream (L{EventStream}).
  - C{GET /api/connections/<id>}: one connection's summary and every event
    kept, as JSON.
  - C{POST /api/send}: the send panel (L{SendPanel}), a small JSON body.
  - C{GET} and C{PUT /faults}: the faults in force
    (L{sockplay.server.faultcontrol.FaultsPage}).

Every request must name the page's own origin
(L{sockplay.website.allowedOrigin}): its C{Host} must be the
address the request came in on (or C{localhost} on a loopback address),
with the same port, and its C{Origin}, if any, that same host. A page on
another site cannot read the stream or send through the panel, even
through a DNS name rebound to this address. Every response carries a
Content-Security-Policy that allows scripts, styles and connections only
from this origin, and no inline script: client bytes, which the page
shows only as text, could not run even if they were taken for markup.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from sockplay.playground.panel import MAX_IN_FLIGHT, BadSend, SendPanel, Target
from sockplay.playground.stream import EventStream
from sockplay.server.faultcontrol import FaultsPage
from sockplay.server.listening import ListenerService, describeListener, isTLS
from sockplay.server.proxy import ProxiedEndpoint
from sockplay.server.tracer import Tracer
from sockplay.website import (
    LimitedFactory,
    SmallBodyChannel,
    allowedOrigin,
    boundedSite,
    hostPort,
)

__all__ = [
    "MAX_STREAMS",
    "Playground",
    "PlaygroundService",
    "makePlaygroundSite",
    "targetOf",
    "webSocketTargetOf",
]

# Live streams at once: each is an open HTTP connection, and the site holds
# at most 16 (website.MAX_SITE_CONNECTIONS); the rest stay for the page's
# other requests.
MAX_STREAMS = 8

_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "png": b"image/png",
    "svg": b"image/svg+xml",
}

def _staticFiles() -> dict[str, tuple[bytes, bytes]]:
    """
    The page's files, read once from the package: each name with its
    content type and bytes.
    """
    files = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        kind = entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and kind in _TYPES:
            files[entry.name] = (_TYPES[kind], entry.read_bytes())
    return files


def _reachable(host: str) -> str:
    """
    The loopback address to reach a listener on every address (C{0.0.0.0},
    C{::}) by; any other address as it is.
    """
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


class Playground(Resource):
    """
    The whole site, one resource: it routes by path, after the origin
    check.

    @ivar tracer: where the events come from.
    @ivar panel: the send panel.
    @ivar streams: the live streams open now.
    @ivar faults: C{/faults}, or C{None}.
    """

    isLeaf = True

    def __init__(
        self,
        tracer: Tracer,
        panel: SendPanel,
        clock: IReactorTime,
        faults: FaultsPage | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.tracer = tracer
        self.panel = panel
        self.faults = faults
        self.streams: set[EventStream] = set()
        self._clock = clock
        self._files = _staticFiles()

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"content-security-policy", _POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        why = allowedOrigin(request)
        if why is not None:
            return _error(request, 403, why)
        path = [segment.decode("utf-8", "replace") for segment in request.postpath or []]
        method = request.method
        if path == [""] or not path:
            return self._file(request, "index.html")
        if path[0] == "static" and len(path) == 2:
            return self._file(request, path[1])
        if path == ["faults"] and self.faults is not None:
            return self.faults.answer(request)
        if path[0] == "api":
            request.setHeader(b"cache-control", b"no-store")
            if path[1:] == ["events"] and method in (b"GET", b"HEAD"):
                return self._stream(request)
            if len(path) == 3 and path[1] == "connections" and method in (b"GET", b"HEAD"):
                return self._connection(request, path[2])
            if path[1:] == ["send"]:
                if method != b"POST":
                    request.setHeader(b"allow", b"POST")
                    return _error(request, 405, "send with POST")
                return self._send(request)
        return _error(request, 404, "no such page")

    def _file(self, request: Request, name: str) -> bytes:
        found = self._files.get(name)
        if found is None:
            return _error(request, 404, "no such file")
        kind, body = found
        request.setHeader(b"content-type", kind)
        return body

    def _stream(self, request: Request) -> bytes | int:
        if request.method == b"HEAD":
            request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
            return b""
        if len(self.streams) >= MAX_STREAMS:
            request.setHeader(b"retry-after", b"5")
            return _error(request, 503, f"too many live streams (limit {MAX_STREAMS})")
        self.tracer.server["listeners"] = [
            target.describe(index) for index, target in enumerate(self.panel.targets)
        ]
        stream = EventStream(request, self.tracer, self._clock)
        self.streams.add(stream)
        request.notifyFinish().addBoth(lambda _: self.streams.discard(stream))
        stream.start()
        return NOT_DONE_YET

    def _connection(self, request: Request, which: str) -> bytes:
        trace = self.tracer.find(int(which)) if which.isdigit() else None
        if trace is None:
            return _error(request, 404, "no such connection (it may have been forgotten)")
        return _json(request, 200, trace.details())

    def _send(self, request: Request) -> bytes | int:
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
        if contentType.lower() != b"application/json":
            return _error(request, 415, "send a JSON body (Content-Type: application/json)")
        if self.panel.inFlight >= MAX_IN_FLIGHT:
            return _error(request, 429, f"too many sends at once (limit {MAX_IN_FLIGHT})")
        assert request.content is not None
        try:
            body = json.loads(request.content.read())
            parsed = self.panel.parse(body)
        except (ValueError, UnicodeDecodeError) as e:
            reason = str(e) if isinstance(e, BadSend) else "the body is not valid JSON"
            return _error(request, 400, reason)
        # The page may go away before the reply: then nothing is written.
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(status: int, result: dict[str, Any]) -> None:
            if not gone:
                request.write(_json(request, status, result))
                request.finish()

        self.panel.send(*parsed).addCallbacks(
            lambda result: answer(200, result),
            lambda failure: answer(500, {"error": failure.getErrorMessage()}),
        )
        return NOT_DONE_YET


def _json(request: Request, status: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode("utf-8")


def _error(request: Request, status: int, why: str) -> bytes:
    """
    An error for the page: JSON with the reason in one line.
    """
    return _json(request, status, {"error": why})


def makePlaygroundSite(
    tracer: Tracer, panel: SendPanel, reactor: IReactorCore, faults: FaultsPage | None = None
) -> LimitedFactory:
    """
    The factory of the playground's site (L{Playground}), bounded as every
    sockplay site is (L{boundedSite}), taking the send panel's small
    C{POST}s and C{/faults}' C{PUT}s (L{SmallBodyChannel}).
    """
    return boundedSite(
        Playground(tracer, panel, cast(IReactorTime, reactor), faults),
        reactor,
        "the playground",
        channel=SmallBodyChannel,
    )


class PlaygroundService(ListenerService):
    """
    The playground's listener: serves the site, says where to open it, and
    closes the send panel's kept connections when it stops.
    """

    def __init__(
        self,
        description: str,
        tracer: Tracer,
        panel: SendPanel,
        reactor: IReactorCore,
        faults: FaultsPage | None = None,
    ) -> None:
        endpoint = serverFromString(reactor, description)
        site = makePlaygroundSite(tracer, panel, reactor, faults)
        super().__init__(description, endpoint, site, reactor, purpose="the playground")
        self.panel = panel

    def startService(self) -> None:
        super().startService()
        if self.port is not None:
            address = self.port.getHost()
            host = _reachable(getattr(address, "host", ""))
            scheme = "https" if isTLS(self.endpoint) else "http"
            self.log.info(
                "Playground: open {url} in a browser",
                url=f"{scheme}://{hostPort(host, getattr(address, 'port', ''))}/",
            )

    def stopService(self) -> Deferred[None] | None:
        self.panel.closeAll()
        return super().stopService()


def webSocketTargetOf(service: ListenerService) -> Target | None:
    """
    What the send panel can make of one WebSocket listener: a C{ws://}
    URL it can connect to, or why not; C{None} before it listens.
    """
    port = service.port
    if port is None:
        return None
    address = port.getHost()
    if not isinstance(address, (IPv4Address, IPv6Address)) or address.type != "TCP":
        return Target(str(address), None, 0, "the panel connects over TCP only", webSocket=True)
    host = _reachable(address.host)
    url = f"ws://{f'[{host}]' if ':' in host else host}:{address.port}/"
    if isTLS(service.endpoint):
        name = f"wss://{url[len('ws://'):]}"
        return Target(name, None, 0, "it speaks TLS; the panel speaks plain WebSocket", True)
    return Target(url, host, address.port, webSocket=True)


def targetOf(service: ListenerService) -> Target | None:
    """
    What the send panel can make of one echo listener: a plain TCP
    listener it can connect to, or why not; C{None} before it listens.
    """
    port = service.port
    if port is None:
        return None
    address = port.getHost()
    name = describeListener(service.endpoint, address)
    if isinstance(service.endpoint, ProxiedEndpoint):
        return Target(name, None, 0, "it expects a PROXY header, which the panel does not send")
    if isTLS(service.endpoint):
        return Target(name, None, 0, "it speaks TLS; the panel speaks plain TCP")
    if not isinstance(address, (IPv4Address, IPv6Address)) or address.type != "TCP":
        return Target(name, None, 0, "the panel connects over TCP only")
    return Target(name, _reachable(address.host), address.port)
