"""
C{python -m sockplay.client}: send one message, print the server's reply.

With the defaults it is the socket tutorial's client: it connects to
127.0.0.1:12345, sends C{Hello Server !} and prints
C{Response from the server: Message received: Hello Server !}.

The reply is read the way the framing defines it, so the same client works
against a sockplay server of any framing and against the tutorial's blocking
server (one C{recv(1024)}, a reply, a close).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn, cast

from twisted.internet import error
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, clientFromString, connectProtocol
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay._transport import canHalfClose
from sockplay.framing import (
    LF,
    Framer,
    MessageTooLong,
    TruncatedMessage,
    framingOption,
    makeFramer,
)

__all__ = [
    "DEFAULT_MESSAGE",
    "NoReply",
    "Options",
    "ReplyClientProtocol",
    "formatReply",
    "main",
    "request",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345
DEFAULT_MESSAGE = "Hello Server !"
DEFAULT_TIMEOUT = 10.0

# A reply larger than this is refused rather than held in memory: it is far
# above any reply a sockplay server sends for a message within its limit.
MAX_REPLY = 16 * 1024 * 1024


class NoReply(Exception):
    """
    The server closed the connection without sending a reply.
    """


class ClientError(Exception):
    """
    An expected failure, with the one-line message to show the user.
    """


@implementer(IHalfCloseableProtocol)
class ReplyClientProtocol(Protocol):
    """
    Send one framed message and wait for the one framed reply.

    For C{eof} framing the reply is everything the server sends until it
    closes (or half-closes) the connection. For C{raw} it is the same, except
    that a reply that ends with the message sent is complete at once, so that
    a C{--keep-open} server, which does not close, still answers. For C{line}
    the reply ends at the first LF; for C{int32}, after its length-prefixed
    payload.

    @ivar reply: fires with the reply payload (without its framing), or
        fails with L{NoReply}, L{TruncatedMessage} or L{MessageTooLong}.
        Cancelling it aborts the connection.
    """

    def __init__(self, message: bytes, framing: str = "raw", maxReply: int = MAX_REPLY) -> None:
        self.message = message
        self.framing = framing
        self.reply: Deferred[bytes] = Deferred(self._cancel)
        self._framer: Framer = makeFramer(framing, maxReply)
        self._maxReply = maxReply
        self._chunks: list[bytes] = []
        self._size = 0

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._framer.encode(self.message, LF))
        if self._framer.needsEndOfInput:
            if canHalfClose(self.transport):
                cast(ITCPTransport, self.transport).loseWriteConnection()
            else:
                reason = "eof framing needs a transport that can half-close"
                self._fail(Failure(ClientError(reason)))

    def dataReceived(self, data: bytes) -> None:
        if self.reply.called:
            return
        if self.framing in ("raw", "eof"):
            self._size += len(data)
            if self._size > self._maxReply:
                self._fail(Failure(MessageTooLong(self._maxReply)))
                return
            self._chunks.append(data)
            if self.framing == "raw" and self._replyHasEcho():
                self._succeed(b"".join(self._chunks))
            return
        try:
            messages = self._framer.feed(data)
        except MessageTooLong:
            self._fail(Failure())
            return
        if messages:
            self._succeed(messages[0].payload)

    def _replyHasEcho(self) -> bool:
        """
        Whether the raw reply received so far ends with the message we sent:
        an echo-reply is then complete, even if the server keeps the
        connection open.
        """
        size = len(self.message)
        tail = b"".join(self._chunks)[-size:] if size else b""
        return tail == self.message

    def readConnectionLost(self) -> None:
        """
        The server finished sending (a sockplay server half-closes after its
        reply): the reply is complete.
        """
        self._endOfReply()

    def writeConnectionLost(self) -> None:
        """
        Our half-close (eof framing) went out.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._endOfReply(reason)

    def _endOfReply(self, reason: Failure | None = None) -> None:
        if self.reply.called:
            return
        if self._chunks:
            self._succeed(b"".join(self._chunks))
            return
        try:
            last = self._framer.finish()
        except TruncatedMessage:
            self._fail(Failure())
            return
        if last is not None and last.payload and self.framing == "line":
            # A reply whose line the server never terminated: keep it.
            self._succeed(last.payload)
            return
        if reason is not None and not reason.check(error.ConnectionDone):
            self._fail(reason)
        else:
            self._fail(Failure(NoReply("connection closed without a reply")))

    # Fire before closing: once our write side is shut (eof framing), closing
    # reports connectionLost at once, which re-enters _endOfReply and would
    # fire the reply a second time.
    def _succeed(self, payload: bytes) -> None:
        self.reply.callback(payload)
        self._close()

    def _fail(self, failure: Failure) -> None:
        self.reply.errback(failure)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _cancel(self, reply: Deferred[bytes]) -> None:
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


def formatReply(reply: bytes) -> str:
    """
    The line the client prints: UTF-8, with any byte that is not valid UTF-8
    shown as a backslash escape, so that nothing is silently lost.
    """
    return "Response from the server: " + reply.decode("utf-8", "backslashreplace")


def _positiveFloat(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, not {value!r}")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise ValueError(f"--port must be a whole number from 1 to 65535, not {value!r}")
    return number


class Options(usage.Options):
    """
    Command-line options of the sockplay client.
    """

    synopsis = "[options]"
    longdesc = "Send one message to an echo-reply server and print its reply."
    optParameters = [
        ["host", "H", DEFAULT_HOST, "Server host name or address."],
        ["port", "p", DEFAULT_PORT, "Server TCP port.", _port],
        ["connect", "c", None, "A Twisted client endpoint string (tcp:host=...:port=..., "
         "unix:path=..., ...); overrides --host and --port."],
        ["message", "m", DEFAULT_MESSAGE, "The message to send."],
        ["framing", "f", "raw", "raw, line, eof or int32: must match the server's.", framingOption],
        ["timeout", "t", DEFAULT_TIMEOUT, "Seconds allowed for connect plus reply.",
         _positiveFloat],
    ]

    def postOptions(self) -> None:
        # Any byte the shell can pass round-trips, even if it is not UTF-8.
        self["message"] = self["message"].encode("utf-8", "surrogateescape")
        if not self["message"] and self["framing"] == "raw":
            raise usage.UsageError(
                "an empty --message cannot be sent in raw framing (nothing would be sent); "
                "use line, eof or int32"
            )

    def target(self) -> str:
        """
        What we connect to, for messages.
        """
        if self["connect"]:
            return str(self["connect"])
        host = self["host"]
        return f"[{host}]:{self['port']}" if ":" in host else f"{host}:{self['port']}"


def makeEndpoint(reactor: IReactorCore, config: Options) -> IStreamClientEndpoint:
    """
    The endpoint that C{config} names.

    @raise ClientError: if C{--connect} is not a valid endpoint string.
    """
    if config["connect"]:
        try:
            return cast(IStreamClientEndpoint, clientFromString(reactor, config["connect"]))
        except Exception as e:
            raise ClientError(f"bad --connect endpoint {config['connect']!r}: {e}") from None
    return HostnameEndpoint(reactor, config["host"], config["port"], timeout=config["timeout"])


def describeFailure(failure: Failure, config: Options) -> str | None:
    """
    The one-line message for an expected failure, or C{None} for a bug.
    """
    target = config.target()
    if failure.check(ClientError, NoReply):
        return str(failure.value)
    if failure.check(TimeoutError, error.TimeoutError):
        return f"no reply from {target} within {config['timeout']:g} s"
    if failure.check(error.ConnectionRefusedError):
        return f"connection refused by {target}"
    if failure.check(error.DNSLookupError):
        return f"cannot resolve {config['host']!r}"
    if failure.check(TruncatedMessage):
        return f"connection closed in the middle of a reply ({failure.getErrorMessage()})"
    if failure.check(MessageTooLong):
        return f"reply too long ({failure.getErrorMessage()})"
    if failure.check(error.ConnectError, error.ConnectionLost, error.ConnectionDone, OSError):
        return f"cannot talk to {target}: {failure.getErrorMessage()}"
    return None


async def request(reactor: IReactorCore, config: Options) -> bytes:
    """
    Connect, send C{config["message"]} and return the reply payload.

    The whole exchange, connect included, is bounded by C{config["timeout"]}.
    """
    endpoint = makeEndpoint(reactor, config)
    protocol = ReplyClientProtocol(config["message"], config["framing"])
    connecting = connectProtocol(endpoint, protocol)

    def awaitReply(_: object) -> Deferred[bytes]:
        return protocol.reply

    exchange = connecting.addCallback(awaitReply)
    timeout = config["timeout"]

    def timedOut(result: object, timeout: float) -> NoReturn:
        # Whatever cancelling produced (CancelledError, or the endpoint's
        # ConnectingCancelledError), the cause was the timeout.
        raise TimeoutError(f"no reply within {timeout} s")

    exchange.addTimeout(timeout, cast(IReactorTime, reactor), onTimeoutCancel=timedOut)
    return cast(bytes, await exchange)


async def _main(reactor: IReactorCore, config: Options) -> None:
    try:
        reply = await request(reactor, config)
    except Exception:
        failure = Failure()
        message = describeFailure(failure, config)
        if message is None:
            failure.printTraceback(file=sys.stderr)
            raise SystemExit(1) from None
        print(f"Error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    print(formatReply(reply), flush=True)


def main(argv: Sequence[str] | None = None, _reactor: Any = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), run one exchange and exit:
    0 with a reply, 1 on a failure, 2 on a usage error.
    """
    config = Options()  # type: ignore[no-untyped-call]
    try:
        config.parseOptions(list(argv) if argv is not None else None)  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        print("Try 'python -m sockplay.client --help'.", file=sys.stderr)
        sys.exit(2)
    react(_main, (config,), _reactor=_reactor)


if __name__ == "__main__":
    main()
