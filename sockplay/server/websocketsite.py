"""
The HTTP side of C{--websocket}: the site a WebSocket listener serves
(L{webSocketSite}), where every path upgrades to a
L{WebSocketEchoProtocol<sockplay.server.websocket.WebSocketEchoProtocol>}.

A request that is not a WebSocket upgrade is answered C{426 Upgrade
Required} with a one-line body; the HTTP side is bounded as the metrics
site is (L{sockplay.website}): C{GET} only, no bodies, headers bounded in
size and time, and at most L{MAX_HANDSHAKES} connections not yet upgraded
at once. A client over the server's connection limits gets C{503} before
the upgrade. Any C{Origin} may connect: this is a public echo service, and
no credentials or cookies are involved.

Beneath the HTTP channel, each connection's L{_Guard} reads the frame
headers (L{FrameScanner}) so that a message over C{--max-message} is
refused with close code 1009 before Twisted buffers it, and lets the
connection's bytes out no faster than the C{throttle} in force.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorCore
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.websocket import WebSocketResource

from sockplay.server.factory import EchoReplyFactory
from sockplay.server.protocol import ConnectionState
from sockplay.server.websocket import WebSocketEchoProtocol, WebSocketOwner
from sockplay.website import LimitedFactory, QuietSite, ReadOnlyChannel
from sockplay.wsframes import FrameScanner

__all__ = ["MAX_HANDSHAKES", "WebSocketSiteFactory", "webSocketSite"]

# Connections of one WebSocket listener still speaking HTTP (before or
# instead of the upgrade) at once: a handshake takes one round trip, so
# even many browsers opening at once need few; upgraded connections are
# counted by --max-connections instead.
MAX_HANDSHAKES = 64

# --throttle lets a tenth of a second's worth of bytes through at a time:
# smooth enough for any client to see the rate, few timers.
_THROTTLE_STEPS = 10


class _Prebuilt:
    """
    What L{WebSocketResource} asks for a protocol: the one already built
    and admitted for this request.
    """

    def __init__(self, protocol: WebSocketEchoProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, request: Request) -> WebSocketEchoProtocol:
        return self._protocol


def _isUpgrade(request: Request) -> bool:
    """
    Whether C{request} asks to upgrade to a WebSocket.
    """
    upgrade = request.getHeader(b"upgrade") or b""
    return b"websocket" in upgrade.lower().split(b",") or upgrade.strip().lower() == b"websocket"


class EchoResource(Resource):
    """
    Every path of a WebSocket listener: an upgrade request becomes an echo
    connection, if the server's limits admit it (else 503); any other
    request gets 426 and a line that says what this is.
    """

    isLeaf = True

    def __init__(self, owner: WebSocketOwner) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.owner = owner

    def render_GET(self, request: Request) -> bytes | int:
        if not _isUpgrade(request):
            request.setHeader(b"upgrade", b"websocket")
            return _refuse(
                request,
                426,
                b"Upgrade Required",
                "this is a WebSocket echo endpoint: connect with a WebSocket client "
                "(such as python -m sockplay.client --connect ws://HOST:PORT/)",
            )
        # The channel's transport is the connection's guard (the site's
        # protocol factory wraps every channel in one).
        guard = cast(_Guard, request.channel.transport)
        protocol = self.owner.buildProtocol(None)
        protocol.makeConnection(guard)  # type: ignore[no-untyped-call]
        if protocol.state is ConnectionState.REFUSED:
            protocol.refused()
            request.setHeader(b"retry-after", b"1")
            return _refuse(request, 503, b"Service Unavailable", protocol.detail)
        result = WebSocketResource(_Prebuilt(protocol)).render_GET(request)
        if result is not NOT_DONE_YET:
            # A malformed handshake: Twisted answered 400.
            protocol.outcome = "bad-handshake"
            protocol.refused()
            return result
        guard.upgraded(protocol)
        return result

    render_HEAD = render_GET


def _refuse(request: Request, code: int, phrase: bytes, line: str) -> bytes:
    """
    Answer C{request} with C{code} and C{line} as its text body, and close
    the connection once the answer is written: a refused client gets no
    second request on it, and holds no handshake's place meanwhile.
    """
    request.setResponseCode(code, phrase)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"connection", b"close")
    # (Twisted lets go of the request's channel before it says it finished.)
    channel = request.channel
    request.notifyFinish().addBoth(lambda _: channel.loseConnection())
    return line.encode("utf-8") + b"\n"


class _Guard(ProtocolWrapper):
    """
    One connection of a WebSocket listener, beneath its HTTP channel: once
    upgraded, it reads the client's frame headers (L{FrameScanner}) before
    the WebSocket does, and stops a message over C{--max-message} before it
    is buffered.

    @ivar startedAt: when the connection was accepted.
    """

    factory: WebSocketSiteFactory
    startedAt = 0.0
    _scanner: FrameScanner | None = None
    _connection: WebSocketEchoProtocol | None = None
    # --throttle: bytes held back, the timer that lets the next go, and a
    # close asked for while bytes were held.
    _held = b""
    _release: IDelayedCall | None = None
    _closeWhenSent = False

    def makeConnection(self, transport: Any) -> None:
        self.startedAt = self.factory.owner.clock.seconds()
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def upgraded(self, connection: WebSocketEchoProtocol) -> None:
        """
        The connection is a WebSocket now: watch its messages' sizes, and
        stop counting it as a handshake.
        """
        self._connection = connection
        self._scanner = FrameScanner(connection.factory.settings.maxMessage)
        self.factory.upgraded += 1
        # The HTTP channel's own timeout would end a quiet WebSocket: the
        # server's idle timeout holds it instead.
        channel = self.wrappedProtocol
        setTimeout = getattr(channel, "setTimeout", None)
        if setTimeout is not None:
            setTimeout(None)

    def dataReceived(self, data: bytes) -> None:
        scanner = self._scanner
        if scanner is None:
            super().dataReceived(data)  # type: ignore[no-untyped-call]
            return
        connection = self._connection
        assert connection is not None
        if connection.state is not ConnectionState.READING and connection.outcome == "too-long":
            return
        if scanner.feed(data):
            # The whole frames before the one over the limit are read (and
            # their messages answered) first, as on TCP.
            if scanner.overAt:
                super().dataReceived(data[: scanner.overAt])  # type: ignore[no-untyped-call]
            connection.messageTooLong()
            return
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def write(self, data: bytes) -> None:
        """
        Write C{data}; with a C{throttle} fault in force, no faster than it
        says (a tenth of a second's worth at a time), after whatever is
        still held back.
        """
        connection = self._connection
        throttle = 0 if connection is None else connection.factory.server.faults.throttle
        if not (throttle or self._held):
            super().write(data)  # type: ignore[no-untyped-call]
            return
        self._held += data
        if self._release is None:
            self._letThrough()

    def _letThrough(self) -> None:
        """
        Write the next tenth of a second's worth of held bytes, and come
        back for the rest when the throttle allows.
        """
        self._release = None
        connection = self._connection
        throttle = 0 if connection is None else connection.factory.server.faults.throttle
        size = max(1, throttle // _THROTTLE_STEPS) if throttle else len(self._held)
        chunk, self._held = self._held[:size], self._held[size:]
        super().write(chunk)  # type: ignore[no-untyped-call]
        if self._held:
            clock = self.factory.owner.clock
            self._release = clock.callLater(size / throttle, self._letThrough)
        elif self._closeWhenSent:
            super().loseConnection()  # type: ignore[no-untyped-call]

    def loseConnection(self) -> None:
        if self._held:
            self._closeWhenSent = True
            return
        super().loseConnection()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        release, self._release = self._release, None
        if release is not None and release.active():
            release.cancel()
        self._held = b""
        if self._scanner is not None:
            self._scanner = None
            self.factory.upgraded -= 1
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class WebSocketSiteFactory(LimitedFactory):
    """
    The protocol factory of the WebSocket listeners: the HTTP site under a
    L{_Guard} per connection, holding at most L{MAX_HANDSHAKES} connections
    that have not upgraded (a 503 beyond).

    @ivar owner: the L{WebSocketOwner} of the upgraded connections.
    @ivar upgraded: connections that are WebSockets now.
    """

    protocol = _Guard

    def __init__(self, site: QuietSite, owner: WebSocketOwner) -> None:
        super().__init__(site, MAX_HANDSHAKES, "this WebSocket listener's handshakes")
        self.owner = owner
        self.upgraded = 0

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper:
        # self.protocols holds every connection made and not yet lost.
        if len(self.protocols) - self.upgraded >= self.limit:
            return super().buildProtocol(addr)
        return super(LimitedFactory, self).buildProtocol(addr)


def webSocketSite(server: EchoReplyFactory, reactor: IReactorCore) -> WebSocketSiteFactory:
    """
    The protocol factory of the C{--websocket} listeners of C{server}.

    @param reactor: the reactor whose clock times the HTTP side out.
    """
    owner = WebSocketOwner(server)
    site = QuietSite(EchoResource(owner), reactor=cast(Any, reactor))  # type: ignore[no-untyped-call]
    site.protocol = ReadOnlyChannel
    site.displayTracebacks = False
    return WebSocketSiteFactory(site, owner)
