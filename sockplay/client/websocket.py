"""
The client over WebSocket: C{--connect ws://HOST:PORT/PATH}, or
C{wss://...} with the client's TLS (C{--ca}, C{--cert}, C{--insecure}).

The message is sent as one text message, or as one binary message if it
is not UTF-8; the reply is the next message the server sends. One
L{WebSocketConnection} per request, or one for all the probes of
C{--count --keep-open} (L{WebSocketSession}, which has the interface of
L{sockplay.client.session.KeepOpenSession}).

The WebSocket is Twisted's (L{WebSocketClientEndpoint}), over the
endpoint the client would use for TCP (L{sockplay.client.endpoint}).
Beneath it, a L{FrameScanner} reads the server's frame headers: it bounds a
reply before Twisted buffers it, and reads the close frame's code, which
Twisted does not pass on (1009: the message was too long for the server).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import error
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.http import RESPONSES
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from twisted.web.websocket import ConnectionRejected, WebSocketClientEndpoint, WebSocketTransport
from wsproto.utilities import RemoteProtocolError
from zope.interface import implementer

from sockplay.client.failures import ClientError, ClosedAfterReply, NoReply
from sockplay.client.reply import MAX_REPLY
from sockplay.framing import MessageTooLong
from sockplay.wsframes import FrameScanner

__all__ = ["CLOSE_TOO_BIG", "CLOSE_WAIT", "WebSocketConnection", "WebSocketSession", "exchange"]

# The close code of a server that refuses a message for its size.
CLOSE_TOO_BIG = 1009
# Seconds the client waits for the server to answer its close, once it has
# the reply: a server answers at once; one that does not costs no more.
CLOSE_WAIT = 1.0
# How much of a refusal's body the message quotes: its first line.
_MAX_REFUSAL = 200


def _encode(message: bytes) -> tuple[bool, bytes]:
    """
    Whether C{message} goes as text (it is UTF-8), and the message.
    """
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return False, message
    return True, message


class _Body(Protocol):
    """
    The first bytes of a refused upgrade's response body, for the message.
    """

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self.data) < _MAX_REFUSAL:
            self.data += data[: _MAX_REFUSAL - len(self.data)]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass


class WebSocketConnection:
    """
    One WebSocket to the server, on which messages are sent one at a time,
    each awaiting its reply.

    @ivar opened: fires once the WebSocket is open, or fails with a one-line
        L{ClientError} (the upgrade refused, not a WebSocket server) or the
        connection's failure. Cancelling it aborts the connection.
    @ivar scanner: reads the server's frames beneath the WebSocket.
    @ivar transport: the connection beneath the WebSocket, once made.
    """

    def __init__(self, target: str, maxReply: int = MAX_REPLY) -> None:
        """
        @param target: the URL, as messages name the server.
        @param maxReply: the largest reply accepted, in bytes.
        """
        self._target = target
        self.opened: Deferred[None] = Deferred(self._cancelOpening)
        self._connecting: Deferred[Any] | None = None
        self.scanner = FrameScanner(maxReply)
        self.transport: ITCPTransport | None = None
        self._ws: WebSocketTransport | None = None
        self._pending: Deferred[bytes] | None = None
        self._lost = False
        self._answered = 0
        self._rejected: IResponse | None = None
        self._closeWaiters: list[Deferred[None]] = []

    def open(self, endpoint: IStreamClientEndpoint, url: str) -> Deferred[None]:
        """
        Connect through C{endpoint} and upgrade to a WebSocket at C{url}.

        @return: L{opened}.
        """
        webSocket = WebSocketClientEndpoint(_Beneath(endpoint, self), url)
        connecting = self._connecting = Deferred.fromCoroutine(webSocket.connect(self))
        connecting.addErrback(self._connectFailed)
        return self.opened

    def _cancelOpening(self, opened: Deferred[None]) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.called:
            connecting.cancel()
        self.abort()

    def buildProtocol(self, url: str) -> WebSocketConnection:
        """
        The WebSocket's protocol (Twisted asks its factory): this connection.
        """
        return self

    @property
    def isOpen(self) -> bool:
        """
        Whether the WebSocket is open and not yet lost.
        """
        return self.opened.called and self._ws is not None and not self._lost

    def ask(self, message: bytes) -> Deferred[bytes]:
        """
        Send C{message} and wait for its reply.

        @return: fires with the reply (a text reply as UTF-8), or fails with
            L{NoReply}, L{ClosedAfterReply}, a L{ClientError} (close code
            1009) or L{MessageTooLong}. Cancelling it aborts the connection.
        @raise RuntimeError: if the previous exchange is not over.
        """
        if self._pending is not None:
            raise RuntimeError("one exchange at a time")
        if not self.isOpen or self._ws is None:
            return fail(NoReply("the WebSocket closed before the message was sent"))
        pending: Deferred[bytes] = Deferred(lambda d: self.abort())
        self._pending = pending
        text, payload = _encode(message)
        if text:
            self._ws.sendTextMessage(payload.decode("utf-8"))
        else:
            self._ws.sendBytesMessage(payload)
        return pending

    def close(self) -> Deferred[None]:
        """
        Close the WebSocket (code 1000).

        @return: fires once the connection is closed.
        """
        closed: Deferred[None] = Deferred()
        if self._lost or self.transport is None:
            closed.callback(None)
            return closed
        self._closeWaiters.append(closed)
        if self._ws is not None and self.opened.called:
            cast(Any, self._ws).loseConnection(1000)
        else:
            self.transport.loseConnection()
        return closed

    def abort(self) -> None:
        """
        Drop the connection now (a timeout, or a failed exchange).
        """
        if self.transport is not None and not self._lost:
            self.transport.abortConnection()

    # WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self._ws = transport

    def negotiationFinished(self) -> None:
        if not self.opened.called:
            self.opened.callback(None)

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self._settle(message.encode("utf-8"))

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self._settle(bytes(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._rejected is not None:
            # The response's body is in by now (the server closed after it),
            # buffered until delivered: delivering it hands it over at once.
            body = _Body()
            self._rejected.deliverBody(body)
            self._fail(Failure(self._refusal(self._rejected, body.data)))
        else:
            self._fail(self._lostBecause(reason))
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # What reaches it beneath the WebSocket

    def replyTooLong(self) -> None:
        """
        The server's next message is over the largest reply accepted.
        """
        self._settle(Failure(MessageTooLong(self.scanner.limit)))
        self.abort()

    def _connectFailed(self, failure: Failure) -> None:
        if failure.check(ConnectionRejected):
            self._rejected = cast(ConnectionRejected, failure.value).response
            return
        self._fail(failure)

    def _fail(self, failure: Failure) -> None:
        if not self.opened.called:
            self.opened.errback(failure)
        else:
            self._settle(failure)

    def _settle(self, outcome: bytes | Failure) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if isinstance(outcome, Failure):
            pending.errback(outcome)
        else:
            self._answered += 1
            pending.callback(outcome)

    def _refusal(self, response: IResponse, body: bytes) -> ClientError:
        """
        The one line for a server that answered the upgrade request with an
        HTTP response instead.
        """
        code = response.code
        phrase = RESPONSES.get(code, b"").decode("ascii", "replace")
        line = body.decode("utf-8", "replace").strip().splitlines()
        why = f": {line[0]}" if line else ""
        return ClientError(
            f"{self._target} refused the WebSocket upgrade with HTTP {code} {phrase}{why}"
        )

    def _lostBecause(self, reason: Failure) -> Failure:
        """
        Why the exchange failed, given why the connection was lost: what its
        close frame said, if the server sent one.
        """
        code = self.scanner.closeCode
        if not self.opened.called:
            if reason.check(error.ConnectError, error.DNSLookupError, "OpenSSL.SSL.Error"):
                # Not the upgrade's fault: the connection or TLS beneath.
                return reason
            return Failure(
                ClientError(
                    f"{self._target} did not answer as a WebSocket server (is it a "
                    "--websocket listener? a --listen one speaks TCP: use tcp:host=...:port=...)"
                )
            )
        if code is None:
            return reason
        said = self.scanner.closeReason
        said = f"code {code}" + (f": {said}" if said else "")
        if code == CLOSE_TOO_BIG:
            return Failure(
                ClientError(
                    f"the message is too long for {self._target}: it closed the WebSocket ({said})"
                )
            )
        if self._answered:
            return Failure(ClosedAfterReply(self._answered))
        return Failure(NoReply(f"{self._target} closed the WebSocket without a reply ({said})"))


class _Scanning(ProtocolWrapper):
    """
    The connection beneath a WebSocket: the server's bytes pass through
    the connection's L{FrameScanner} on their way up, from the end of the
    upgrade's HTTP response on.
    """

    connection: WebSocketConnection
    # Still in the HTTP response; its last bytes, to find its end.
    _inResponse = True
    _tail = b""

    def makeConnection(self, transport: Any) -> None:
        self.connection.transport = transport
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        frames = data
        if self._inResponse:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            if end < 0:
                self._tail = seen[-3:]
                super().dataReceived(data)  # type: ignore[no-untyped-call]
                return
            self._inResponse = False
            frames = seen[end + 4 :]
        if self.connection.scanner.feed(frames):
            self.connection.replyTooLong()
            return
        try:
            super().dataReceived(data)  # type: ignore[no-untyped-call]
        except RemoteProtocolError:
            # Not WebSocket (or HTTP) at all: the connection is lost as not
            # a WebSocket server, rather than logged as a crash.
            self.connection.abort()


class _ScanningFactory(WrappingFactory):
    protocol = _Scanning

    def __init__(self, wrapped: Factory[Any], connection: WebSocketConnection) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.connection = connection

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper:
        wrapper = super().buildProtocol(addr)
        cast(_Scanning, wrapper).connection = self.connection
        return wrapper


@implementer(IStreamClientEndpoint)
class _ScannedEndpoint:
    """
    The client's own endpoint (TCP, or TLS for C{wss://}), with the
    connection's bytes read by its L{FrameScanner}.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, connection: WebSocketConnection) -> None:
        self._endpoint = endpoint
        self._connection = connection

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        connecting = self._endpoint.connect(_ScanningFactory(protocolFactory, self._connection))

        def unwrapped(wrapper: Any) -> Any:
            # Twisted's WebSocket endpoint expects its own protocol back.
            return wrapper.wrappedProtocol

        return connecting.addCallback(unwrapped)


@implementer(IAgentEndpointFactory)
class _Beneath:
    """
    What Twisted's WebSocket endpoint connects through: the client's
    endpoint, whatever the URL, scanned.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, connection: WebSocketConnection) -> None:
        self._endpoint = endpoint
        self._connection = connection

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return _ScannedEndpoint(self._endpoint, self._connection)


async def exchange(
    endpoint: IStreamClientEndpoint, url: str, message: bytes, clock: IReactorTime
) -> bytes:
    """
    Open a WebSocket at C{url} through C{endpoint}, send C{message}, and
    return the reply, once the WebSocket is closed (or, if the server does
    not answer the close within L{CLOSE_WAIT} seconds, aborted).
    Cancelling aborts it.
    """
    connection = WebSocketConnection(url)
    await connection.open(endpoint, url)
    reply = await connection.ask(message)
    try:
        await connection.close().addTimeout(CLOSE_WAIT, clock)
    except TimeoutError:
        connection.abort()
    return reply


class WebSocketSession:
    """
    The one WebSocket of C{--count --keep-open}: opened by the first
    L{ask}, and again by the next L{ask} after a failure (L{drop}) or after
    the server closed it; the interface of
    L{sockplay.client.session.KeepOpenSession}.

    @ivar connections: how many WebSockets it has opened so far.
    """

    negotiatedProtocol: bytes | None = None

    def __init__(self, endpoint: IStreamClientEndpoint, url: str, clock: Any) -> None:
        self._endpoint = endpoint
        self._url = url
        self._clock = clock
        self._connection: WebSocketConnection | None = None
        self.connections = 0

    async def ask(self, message: bytes) -> tuple[bytes, float]:
        """
        Send C{message} and wait for its reply, opening a WebSocket first
        if needed.

        @return: the reply and the seconds from sending it to the reply.
        """
        connection = self._connection
        if connection is None or not connection.isOpen:
            connection = WebSocketConnection(self._url)
            self.connections += 1
            self._connection = connection
            await connection.open(self._endpoint, self._url)
        sent = self._clock.seconds()
        reply = await connection.ask(message)
        return reply, self._clock.seconds() - sent

    def drop(self) -> None:
        """
        Abandon the WebSocket: abort it, so that the next L{ask} opens a new
        one.
        """
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()

    def close(self) -> Deferred[None]:
        """
        Close the WebSocket.

        @return: fires once it is closed.
        """
        if self._connection is None:
            return succeed(None)
        return self._connection.close()
