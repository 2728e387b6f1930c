"""
The send panel: the page asks, and the server sends a message to one of
its own listeners through sockplay's client (L{ReplyClientProtocol}, or
L{KeepOpenClientProtocol} for a connection kept for the next message), and
answers with the reply as the tutorial's client prints it.

The panel reaches only the server's own plain TCP listeners and plain
WebSocket listeners (through sockplay's WebSocket client, one message a
WebSocket message), by their index: never an address from the page. Its client's side of each
conversation (connected, sent, received, the printed reply) is recorded
in the timeline of the server's side of the same connection.

Bounded: at most L{MAX_IN_FLIGHT} sends at once, L{MAX_SESSIONS}
connections kept open (the oldest closed first), and L{REPLY_TIMEOUT}
seconds for a reply.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.defer import TimeoutError as DeferTimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from sockplay.client.failures import ClientError, NoReply
from sockplay.client.output import formatReply
from sockplay.client.protocol import KeepOpenClientProtocol, ReplyClientProtocol
from sockplay.client.websocket import WebSocketSession, exchange
from sockplay.framing import FRAMINGS, LF, makeFramer
from sockplay.server.trace import ConnectionTrace, peerKey
from sockplay.server.tracer import Tracer

__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_MESSAGE",
    "MAX_SESSIONS",
    "REPLY_TIMEOUT",
    "BadSend",
    "SendPanel",
    "Target",
]

# Sends under way at once; more are refused (429).
MAX_IN_FLIGHT = 8
# Keep-open connections kept between sends, one per page session.
MAX_SESSIONS = 4
# Seconds to wait for a reply (a framing the server does not use never ends
# its message).
REPLY_TIMEOUT = 5.0
# The longest message the panel sends, in bytes of UTF-8.
MAX_MESSAGE = 4096

_MODES = ("one-shot", "keep-open")


class BadSend(ValueError):
    """
    The page's request cannot be sent: the reason is the answer (400).
    """


@dataclass(frozen=True)
class Target:
    """
    One of the server's listeners, as the panel offers it.

    @ivar name: as the logs name it (C{tcp:127.0.0.1:12345}).
    @ivar host: the address to connect to (a loopback address for a
        listener on every address), or C{None} if the panel cannot send.
    @ivar port: its port.
    @ivar why: why the panel cannot send to it, or C{None}.
    @ivar webSocket: a WebSocket listener (C{--websocket}), whose C{name}
        is its C{ws://} URL: each message goes as one WebSocket message,
        whatever the framing.
    """

    name: str
    host: str | None
    port: int
    why: str | None = None
    webSocket: bool = False

    def describe(self, index: int) -> dict[str, Any]:
        """
        The listener for the page.
        """
        return {
            "index": index,
            "name": self.name,
            "sendable": self.why is None,
            "why": self.why,
            "kind": "websocket" if self.webSocket else "tcp",
        }


class _ClientSide:
    """
    The panel client's events, for the timeline of the server's side of
    its connection: held until that side is known, then recorded there.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.trace: ConnectionTrace | None = None
        self._held: list[tuple[float, str, int, bytes | None, str | None]] = []

    def record(
        self, kind: str, size: int = 0, data: bytes | None = None, detail: str | None = None
    ) -> None:
        if self.trace is not None:
            self.tracer.record(self.trace, kind, size, data, detail, side="client")
        else:
            self._held.append((self.tracer.clock.seconds(), kind, size, data, detail))

    def found(self, trace: ConnectionTrace) -> None:
        """
        The server's side is made: record what was held there.
        """
        self.trace = trace
        held, self._held = self._held, []
        for at, kind, size, data, detail in held:
            self.tracer.record(trace, kind, size, data, detail, side="client", at=at)


class _Recorded(Protocol):
    """
    What both panel clients record, whichever client protocol they are.
    """

    side: _ClientSide
    # The client's address, once connected, which its server side has.
    key: tuple[str, int] | None = None

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        host = transport.getHost()
        key = self.key = peerKey(host)
        self.side.tracer.claim(key, self.side.found)
        where = f"{key[0]}:{key[1]}" if key is not None else str(host)
        self.side.record("connect", detail=f"connected from {where}")
        self.sending()
        super().connectionMade()  # type: ignore[no-untyped-call]

    def sending(self) -> None:
        """
        The client is about to send what connecting sends, if anything.
        """

    def dataReceived(self, data: bytes) -> None:
        self.side.record("receive", len(data), data)
        super().dataReceived(data)

    def writeConnectionLost(self) -> None:
        self.side.record("half-close", detail="end of the message (eof framing)")
        super().writeConnectionLost()  # type: ignore[misc]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.side.record("closed", detail=reason.getErrorMessage())
        if self.side.trace is None and self.key is not None:
            # Its server side was never found: stop waiting for it.
            self.side.tracer.expecting.pop(self.key, None)
        super().connectionLost(reason)


class _OneShot(_Recorded, ReplyClientProtocol):
    """
    The panel's one-shot client: the tutorial's, recorded.
    """

    def __init__(self, side: _ClientSide, message: bytes, framing: str) -> None:
        super().__init__(message, framing)
        self.side = side

    def sending(self) -> None:
        framed = makeFramer(self.framing).encode(self.message, LF)
        self.side.record("send", len(framed), framed)


class _KeepOpen(_Recorded, KeepOpenClientProtocol):
    """
    The panel's keep-open client, recorded.
    """

    def __init__(self, side: _ClientSide, framing: str) -> None:
        super().__init__(framing)
        self.side = side
        self.framing = framing

    def ask(self, message: bytes) -> Deferred[bytes]:
        if self.isOpen:
            framed = makeFramer(self.framing).encode(message, LF)
            self.side.record("send", len(framed), framed)
        return super().ask(message)


class _Once(Factory):
    """
    The factory of one panel connection: its protocol, made already, and
    no log line of its own (Twisted's factories log their start and stop).
    """

    noisy = False

    def __init__(self, made: Protocol) -> None:
        self.made = made

    def buildProtocol(self, addr: object) -> Protocol:
        self.made.factory = self
        return self.made


class SendPanel:
    """
    Sends the page's messages to the server's own listeners.

    @ivar inFlight: sends under way.
    """

    def __init__(
        self, reactor: IReactorCore, tracer: Tracer, findTargets: Callable[[], list[Target]]
    ) -> None:
        self.inFlight = 0
        self._findTargets = findTargets
        self._reactor = reactor
        self._tracer = tracer
        self._sessions: OrderedDict[str, _KeepOpen] = OrderedDict()
        # The kept WebSockets, by page session and listener.
        self._webSockets: OrderedDict[str, WebSocketSession] = OrderedDict()

    @property
    def targets(self) -> list[Target]:
        """
        The server's listeners, as the page lists them.
        """
        return self._findTargets()

    def parse(self, body: Any) -> tuple[bytes, str, bool, Target, str]:
        """
        Check the page's request: a JSON object with C{message}, C{framing},
        C{mode}, C{listener} and C{session}.

        @return: the message, the framing, whether to keep the connection
            open, the listener, the session.
        @raise BadSend: saying what is wrong.
        """
        if not isinstance(body, dict):
            raise BadSend("the request must be a JSON object")
        message = body.get("message")
        if not isinstance(message, str) or not message:
            raise BadSend("message must be a non-empty string")
        payload = message.encode("utf-8", "surrogateescape")
        if len(payload) > MAX_MESSAGE:
            raise BadSend(f"message is longer than {MAX_MESSAGE} bytes")
        framing = body.get("framing")
        if framing not in FRAMINGS:
            raise BadSend(f"framing must be one of {', '.join(FRAMINGS)}")
        mode = body.get("mode")
        if mode not in _MODES:
            raise BadSend("mode must be one-shot or keep-open")
        keepOpen = mode == "keep-open"
        index = body.get("listener", 0)
        targets = self.targets
        # bool is an int in Python, and JSON's true is not an index.
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(targets):
            raise BadSend("listener must be the index of one of the server's listeners")
        target = targets[index]
        if keepOpen and makeFramer(framing).needsEndOfInput and not target.webSocket:
            # (A WebSocket message has no framing: each is whole.)
            raise BadSend("eof framing ends a message by half-closing: use one-shot")
        if target.why is not None:
            raise BadSend(f"cannot send to {target.name}: {target.why}")
        session = body.get("session", "")
        if not isinstance(session, str) or len(session) > 64:
            raise BadSend("session must be a string of at most 64 characters")
        return payload, framing, keepOpen, target, session

    def send(
        self, message: bytes, framing: str, keepOpen: bool, target: Target, session: str
    ) -> Deferred[dict[str, Any]]:
        """
        Send C{message} to C{target} and wait for its reply.

        @return: fires with the page's answer: C{ok}, and the reply as the
            tutorial prints it, or the error in one line.
        """
        self.inFlight += 1
        d = self._send(message, framing, keepOpen, target, session)

        def done(result: dict[str, Any]) -> dict[str, Any]:
            self.inFlight -= 1
            return result

        return d.addCallback(done)

    @inlineCallbacks
    def _send(
        self, message: bytes, framing: str, keepOpen: bool, target: Target, session: str
    ) -> Any:
        if target.webSocket:
            result = yield self._sendWebSocket(message, keepOpen, target, session)
            return result
        kept = self._sessions.get(session) if keepOpen else None
        reused = kept is not None and kept.isOpen and kept.framing == framing
        if kept is not None and not reused:
            self._forget(session)
            kept = None
        side = kept.side if kept is not None else _ClientSide(self._tracer)
        try:
            if keepOpen:
                if kept is None:
                    kept = _KeepOpen(side, framing)
                    yield self._timed(self._endpoint(target).connect(_Once(kept)))
                    self._keep(session, kept)
                reply = yield self._timed(kept.ask(message))
            else:
                oneShot = _OneShot(side, message, framing)
                yield self._timed(self._endpoint(target).connect(_Once(oneShot)))
                reply = yield self._timed(oneShot.reply)
        except Exception as e:
            error = _describe(Failure(e), framing)
            side.record("error", detail=error)
            return {"ok": False, "error": error, "connection": _id(side)}
        printed = formatReply(reply)
        line = printed.encode("utf-8")
        side.record("response", len(line), line)
        note = None
        # The client may read the reply before the server's FIN: the
        # server's side of the connection (this process) knows already.
        serverDone = side.trace is not None and side.trace.currentState() in ("closing", "closed")
        if kept is not None and (not kept.isOpen or serverDone):
            note = "the server closed the connection after its reply: it keeps none open"
        return {
            "ok": True,
            "printed": printed,
            "reply": reply.decode("utf-8", "backslashreplace"),
            "connection": _id(side),
            "reused": reused,
            "note": note,
        }

    @inlineCallbacks
    def _sendWebSocket(self, message: bytes, keepOpen: bool, target: Target, session: str) -> Any:
        """
        Send C{message} to a WebSocket listener with sockplay's client: on a
        WebSocket of its own, or on the page session's kept one.
        """
        clock: IReactorTime = self._reactor  # type: ignore[assignment]
        key = f"{session} {target.name}"
        kept = self._webSockets.get(key) if keepOpen else None
        reused = kept is not None and kept.connections > 0
        try:
            if keepOpen:
                if kept is None:
                    kept = WebSocketSession(self._endpoint(target), target.name, clock)
                    self._keepWebSocket(key, kept)
                reply, _ = yield self._timed(Deferred.fromCoroutine(kept.ask(message)))
            else:
                reply = yield self._timed(
                    Deferred.fromCoroutine(
                        exchange(self._endpoint(target), target.name, message, clock)
                    )
                )
        except Exception as e:
            if kept is not None:
                kept.drop()
            return {"ok": False, "error": _describeWebSocket(Failure(e)), "connection": None}
        return {
            "ok": True,
            "printed": formatReply(reply),
            "reply": reply.decode("utf-8", "backslashreplace"),
            "connection": None,
            "reused": reused,
            "note": None,
        }

    def _keepWebSocket(self, key: str, session: WebSocketSession) -> None:
        self._webSockets[key] = session
        while len(self._webSockets) > MAX_SESSIONS:
            oldest = next(iter(self._webSockets))
            self._webSockets.pop(oldest).close()

    def _timed(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        C{d}, cancelled after L{REPLY_TIMEOUT} seconds.
        """
        clock: IReactorTime = self._reactor  # type: ignore[assignment]
        return d.addTimeout(REPLY_TIMEOUT, clock)

    def _endpoint(self, target: Target) -> TCP4ClientEndpoint | TCP6ClientEndpoint:
        reactor: IReactorTCP = self._reactor  # type: ignore[assignment]
        assert target.host is not None
        if ":" in target.host:
            return TCP6ClientEndpoint(reactor, target.host, target.port, timeout=REPLY_TIMEOUT)
        return TCP4ClientEndpoint(reactor, target.host, target.port, timeout=REPLY_TIMEOUT)

    def _keep(self, session: str, protocol: _KeepOpen) -> None:
        self._sessions[session] = protocol
        while len(self._sessions) > MAX_SESSIONS:
            oldest = next(iter(self._sessions))
            self._forget(oldest)

    def _forget(self, session: str) -> None:
        protocol = self._sessions.pop(session, None)
        if protocol is not None and protocol.isOpen:
            protocol.close()

    def closeAll(self) -> None:
        """
        Close every kept connection (the server is stopping).
        """
        for session in list(self._sessions):
            self._forget(session)
        while self._webSockets:
            _, kept = self._webSockets.popitem()
            kept.close()


def _id(side: _ClientSide) -> int | None:
    return side.trace.id if side.trace is not None else None


def _describe(failure: Failure, framing: str) -> str:
    """
    A failed send in one line that says what to try.
    """
    if failure.check(TimeoutError, DeferTimeoutError):
        return (
            f"no reply within {REPLY_TIMEOUT:g} s: does the server frame messages as {framing}? "
            "Choose the server's framing."
        )
    message = failure.getErrorMessage()
    return f"{type(failure.value).__name__}: {message}" if message else type(failure.value).__name__



def _describeWebSocket(failure: Failure) -> str:
    """
    A failed send to a WebSocket listener in one line: the client's own
    line where it has one (a close 1009, a refused upgrade).
    """
    if failure.check(TimeoutError, DeferTimeoutError):
        return f"no reply within {REPLY_TIMEOUT:g} s"
    if failure.check(ClientError, NoReply):
        return str(failure.value)
    return _describe(failure, "raw")
