"""
C{python -m sockplay.client}: send one message, print the server's reply.

With the defaults it is the socket tutorial's client: it connects to
127.0.0.1:12345, sends C{Hello Server !} and prints
C{Response from the server: Message received: Hello Server !}.

The reply is read the way the framing defines it, so the same client works
against a sockplay server of any framing and against the tutorial's blocking
server (one C{recv(1024)}, a reply, a close).

With C{--tls} it speaks TLS and verifies the server's certificate. With
C{--count} it is a probe: it sends several messages, prints each reply with
its round-trip time, and ends with ping-style statistics. With C{--retries}
it tries again, on a new connection, after a failure that may pass (a
refused or reset connection, no reply, a timeout).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from random import Random
from typing import Any, NamedTuple, NoReturn, TypeVar, cast

from twisted.internet import error
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    clientFromString,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater, react
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.cli import number, port
from sockplay.client.retry import Backoff, RetriesExhausted, Retry, retry
from sockplay.framing import (
    FRAMINGS,
    LF,
    Framer,
    MessageTooLong,
    TruncatedMessage,
    framingOption,
    makeFramer,
)
from sockplay.server._twisted import canHalfClose

__all__ = [
    "DEFAULT_MESSAGE",
    "KeepOpenClientProtocol",
    "NoReply",
    "Options",
    "ProbeResult",
    "ReplyClientProtocol",
    "formatProbe",
    "formatReply",
    "formatRetry",
    "formatSummary",
    "isRetryable",
    "main",
    "probe",
    "probeReport",
    "request",
]

_T = TypeVar("_T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345
DEFAULT_MESSAGE = "Hello Server !"
DEFAULT_TIMEOUT = 10.0

# ping's default: one probe a second.
DEFAULT_INTERVAL = 1.0

# No retries unless asked: a failure is reported at once, as it always was.
DEFAULT_RETRIES = 0
# The first retry comes within a tenth of a second (a dropped or reset
# connection is usually fine again at once), and no wait is longer than five
# seconds, well within a person's patience and the default --timeout.
DEFAULT_BACKOFF = 0.1
DEFAULT_BACKOFF_MAX = 5.0

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


class _ReplyReader:
    """
    Put together the one reply to one message, as the framing defines it.

    For C{eof} framing the reply is everything the server sends until it
    closes (or half-closes) the connection. For C{raw} it is the same, except
    that a reply that ends with the message sent is complete at once, so that
    a C{--keep-open} server, which does not close, still answers. For C{line}
    the reply ends at the first LF; for C{int32}, after its length-prefixed
    payload.
    """

    def __init__(self, framer: Framer, message: bytes, maxReply: int) -> None:
        """
        @param framer: the connection's framer (in C{line} and C{int32}
            framing it holds the bytes of the connection's next reply).
        @param message: the message that this reply answers.
        @param maxReply: the largest reply accepted, in bytes.
        """
        self._framer = framer
        self._message = message
        self._maxReply = maxReply
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> bytes | None:
        """
        Take received bytes.

        @return: the reply payload, once complete, else C{None}.
        @raise MessageTooLong: if the reply grows past the limit.
        """
        if self._framer.name in ("raw", "eof"):
            self._size += len(data)
            if self._size > self._maxReply:
                raise MessageTooLong(self._maxReply)
            self._chunks.append(data)
            if self._framer.name == "raw" and self._hasEcho():
                return b"".join(self._chunks)
            return None
        messages = self._framer.feed(data)
        return messages[0].payload if messages else None

    def _hasEcho(self) -> bool:
        """
        Whether the raw reply received so far ends with the message we sent:
        an echo-reply is then complete, even if the server keeps the
        connection open.
        """
        size = len(self._message)
        tail = b"".join(self._chunks)[-size:] if size else b""
        return tail == self._message

    def finish(self) -> bytes | None:
        """
        The server finished sending.

        @return: the reply payload, or C{None} if there was no reply.
        @raise TruncatedMessage: if the input ended inside a framed reply.
        @raise MessageTooLong: if the bytes held are over the limit.
        """
        if self._chunks:
            return b"".join(self._chunks)
        last = self._framer.finish()
        if last is not None and last.payload and self._framer.name == "line":
            # A reply whose line the server never terminated: keep it.
            return last.payload
        return None


@implementer(IHalfCloseableProtocol)
class ReplyClientProtocol(Protocol):
    """
    Send one framed message and wait for the one framed reply (read as
    L{_ReplyReader} says), then close.

    @ivar reply: fires with the reply payload (without its framing), or
        fails with L{NoReply}, L{TruncatedMessage} or L{MessageTooLong}.
        Cancelling it aborts the connection.
    """

    def __init__(self, message: bytes, framing: str = "raw", maxReply: int = MAX_REPLY) -> None:
        self.message = message
        self.framing = framing
        self.reply: Deferred[bytes] = Deferred(self._cancel)
        self._framer: Framer = makeFramer(framing, maxReply)
        self._reader = _ReplyReader(self._framer, message, maxReply)

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
        try:
            reply = self._reader.feed(data)
        except MessageTooLong:
            self._fail(Failure())
            return
        if reply is not None:
            self._succeed(reply)

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
        try:
            reply = self._reader.finish()
        except (TruncatedMessage, MessageTooLong):
            self._fail(Failure())
            return
        if reply is not None:
            self._succeed(reply)
        elif reason is not None and not reason.check(error.ConnectionDone):
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


class KeepOpenClientProtocol(Protocol):
    """
    Several exchanges on one connection, one at a time: send a framed
    message, wait for its framed reply (read as L{_ReplyReader} says), and
    keep the connection open for the next one. For a C{--keep-open} server
    in C{line}, C{int32} or C{raw} framing (not C{eof}, whose message ends
    only when the client half-closes).
    """

    def __init__(self, framing: str = "line", maxReply: int = MAX_REPLY) -> None:
        if FRAMINGS[framing].needsEndOfInput:
            raise ValueError(f"{framing} framing cannot keep the connection open")
        self._framer = makeFramer(framing, maxReply)
        self._maxReply = maxReply
        self._reader: _ReplyReader | None = None
        self._pending: Deferred[bytes] | None = None
        self._lost = False
        self._closeWaiters: list[Deferred[None]] = []

    @property
    def isOpen(self) -> bool:
        """
        Whether the connection is made and not yet lost.
        """
        return self.transport is not None and not self._lost

    def ask(self, message: bytes) -> Deferred[bytes]:
        """
        Send C{message} and wait for its reply.

        @return: fires with the reply payload, or fails like
            L{ReplyClientProtocol.reply}, or with L{NoReply} if the
            connection is already closed. Cancelling it aborts the
            connection.
        """
        if self._pending is not None:
            raise RuntimeError("one exchange at a time")
        if not self.isOpen or self.transport is None:
            return fail(NoReply("connection closed before the message was sent"))
        self._reader = _ReplyReader(self._framer, message, self._maxReply)
        pending: Deferred[bytes] = Deferred(self._cancel)
        self._pending = pending
        self.transport.write(self._framer.encode(message, LF))
        return pending

    def dataReceived(self, data: bytes) -> None:
        if self._reader is None:
            # Nothing asked: not a reply to anything.
            return
        try:
            reply = self._reader.feed(data)
        except MessageTooLong:
            # Whatever follows cannot be told apart from the next reply.
            self._settle(Failure())
            self._abort()
            return
        if reply is not None:
            self._settle(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._reader is not None:
            try:
                reply = self._reader.finish()
            except (TruncatedMessage, MessageTooLong):
                self._settle(Failure())
            else:
                if reply is not None:
                    self._settle(reply)
                elif not reason.check(error.ConnectionDone):
                    self._settle(reason)
                else:
                    self._settle(Failure(NoReply("connection closed without a reply")))
        self._lost = True
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """
        Close the connection.

        @return: fires with C{None} once it is closed.
        """
        closed: Deferred[None] = Deferred()
        if not self.isOpen or self.transport is None:
            closed.callback(None)
            return closed
        self._closeWaiters.append(closed)
        self.transport.loseConnection()
        return closed

    def _settle(self, result: bytes | Failure) -> None:
        pending, self._pending, self._reader = self._pending, None, None
        if pending is not None:
            if isinstance(result, Failure):
                pending.errback(result)
            else:
                pending.callback(result)

    def _abort(self) -> None:
        if self.isOpen and self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def _cancel(self, pending: Deferred[bytes]) -> None:
        self._pending = self._reader = None
        self._abort()


def formatReply(reply: bytes) -> str:
    """
    The line the client prints: UTF-8, with any byte that is not valid UTF-8
    shown as a backslash escape, so that nothing is silently lost.
    """
    return "Response from the server: " + _text(reply)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


class Options(usage.Options):
    """
    Command-line options of the sockplay client.
    """

    synopsis = "[options]"
    longdesc = (
        "Send one message to an echo-reply server and print its reply; with --count, "
        "probe it: several messages, each reply with its round-trip time, then statistics. "
        "With --retries, a request that fails in a way that may pass is tried again."
    )
    optFlags = [
        ["tls", None, "Use TLS, and verify the server's certificate and name."],
        ["insecure", None, "With --tls: do not verify the server's certificate (a warning "
         "says so)."],
        ["keep-open", "k", "With --count: send every message on one connection (for a "
         "--keep-open server; line, int32 or raw framing)."],
        ["json", None, "With --count: print one JSON object (every probe and the "
         "statistics) instead of text."],
    ]
    optParameters = [
        ["host", "H", DEFAULT_HOST, "Server host name or address."],
        ["port", "p", DEFAULT_PORT, "Server TCP port.", port],
        ["connect", "c", None, "A Twisted client endpoint string (tcp:host=...:port=..., "
         "unix:path=..., ...); overrides --host and --port."],
        ["message", "m", DEFAULT_MESSAGE, "The message to send."],
        ["framing", "f", "raw", "raw, line, eof or int32: must match the server's.", framingOption],
        ["timeout", "t", DEFAULT_TIMEOUT, "Seconds allowed for connect plus reply, for each "
         "attempt (each message with --count; each retry has its own).",
         number("--timeout", float, 0.0, positive=True)],
        ["ca", None, None, "With --tls: trust the CA certificates in this PEM file instead "
         "of the system's."],
        ["server-name", None, None, "With --tls: the name the server's certificate must be "
         "valid for (default: --host); also sent as the TLS server name."],
        ["count", "n", None, "Probe: send this many messages and print statistics.",
         number("--count", int, 1)],
        ["interval", "i", None, f"With --count: seconds from one message to the next "
         f"(default: {DEFAULT_INTERVAL:g}).", number("--interval", float, 0.0)],
        ["retries", None, None, f"Try again, on a new connection, up to this many more times "
         f"after a failure that may pass: refused or reset connection, closed without a reply, "
         f"timed out; not a TLS or name error (default: {DEFAULT_RETRIES}; with --count, for "
         f"each message). Each retry is one line on stderr.",
         number("--retries", int, 0)],
        ["backoff", None, None, f"With --retries: the longest wait before the first retry, "
         f"in seconds; it doubles for each next one, and each wait is drawn at random from 0 "
         f"up to it (default: {DEFAULT_BACKOFF:g}).", number("--backoff", float, 0.0)],
        ["backoff-max", None, None, f"With --retries: the cap on that doubling, in seconds "
         f"(default: {DEFAULT_BACKOFF_MAX:g}, or --backoff if more).",
         number("--backoff-max", float, 0.0)],
    ]

    def postOptions(self) -> None:
        # Any byte the shell can pass round-trips, even if it is not UTF-8.
        self["message"] = self["message"].encode("utf-8", "surrogateescape")
        if not self["message"] and self["framing"] == "raw":
            raise usage.UsageError(
                "an empty --message cannot be sent in raw framing (nothing would be sent); "
                "use line, eof or int32"
            )
        self._checkTLS()
        self._checkProbe()
        self._checkRetries()

    def _checkTLS(self) -> None:
        for option in ("ca", "server-name", "insecure"):
            if self[option] and not self["tls"]:
                raise usage.UsageError(f"--{option} needs --tls")
        if not self["tls"]:
            return
        if self["insecure"] and self["ca"]:
            raise usage.UsageError("--insecure verifies nothing, so --ca would not be used")
        if self["framing"] == "eof":
            raise usage.UsageError(
                "--framing eof cannot be used with --tls: a TLS connection cannot half-close, "
                "which is how an eof message ends"
            )
        if self["connect"] and not (self["server-name"] or self["insecure"]):
            raise usage.UsageError(
                "--tls with --connect needs --server-name: the name the server's certificate "
                "must be valid for"
            )

    def _checkProbe(self) -> None:
        if self["count"] is None:
            for option in ("interval", "keep-open", "json"):
                if self[option]:
                    raise usage.UsageError(f"--{option} needs --count")
            return
        if self["interval"] is None:
            self["interval"] = DEFAULT_INTERVAL
        if self["keep-open"] and FRAMINGS[self["framing"]].needsEndOfInput:
            raise usage.UsageError(
                f"--keep-open cannot be used with --framing {self['framing']}: "
                "the message ends only when the client half-closes"
            )

    def _checkRetries(self) -> None:
        if self["retries"] is None:
            for option in ("backoff", "backoff-max"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} needs --retries")
            self["retries"] = DEFAULT_RETRIES
        if self["backoff"] is None:
            self["backoff"] = DEFAULT_BACKOFF
        if self["backoff-max"] is None:
            self["backoff-max"] = max(DEFAULT_BACKOFF_MAX, self["backoff"])
        if self["backoff-max"] < self["backoff"]:
            raise usage.UsageError(
                f"--backoff-max {self['backoff-max']:g} is less than --backoff "
                f"{self['backoff']:g}"
            )

    def target(self) -> str:
        """
        What we connect to, for messages.
        """
        if self["connect"]:
            return str(self["connect"])
        host = self["host"]
        return f"[{host}]:{self['port']}" if ":" in host else f"{host}:{self['port']}"

    def serverName(self) -> str:
        """
        The name the server's TLS certificate must be valid for.
        """
        return str(self["server-name"] or self["host"])


def makeEndpoint(reactor: IReactorCore, config: Options) -> IStreamClientEndpoint:
    """
    The endpoint that C{config} names, wrapped in TLS with C{--tls}.

    @raise ClientError: if C{--connect} is not a valid endpoint string, or
        TLS cannot be set up as asked.
    """
    if config["connect"]:
        try:
            endpoint = cast(IStreamClientEndpoint, clientFromString(reactor, config["connect"]))
        except Exception as e:
            raise ClientError(f"bad --connect endpoint {config['connect']!r}: {e}") from None
    else:
        endpoint = HostnameEndpoint(
            reactor, config["host"], config["port"], timeout=config["timeout"]
        )
    if config["tls"]:
        try:
            from sockplay.client.tls import TrustError, clientConnectionCreator
        except ImportError as e:
            raise ClientError(
                f"--tls needs Twisted's TLS support ({e.name} is missing): "
                "pip install 'sockplay[tls]'"
            ) from None
        try:
            creator = clientConnectionCreator(
                config.serverName(), config["ca"], bool(config["insecure"])
            )
        except TrustError as e:
            raise ClientError(str(e)) from None
        endpoint = wrapClientTLS(creator, endpoint)
    return endpoint


# Failures that may pass, so that a new connection may succeed: the server or
# the path to it refused, dropped or lost the connection (a reply cut short
# is a lost connection too), or was too slow this time. Not retried: a name
# that does not resolve, a TLS certificate that does not verify, a reply that
# is too long, a bad endpoint or option; another attempt would end the same
# way.
_RETRYABLE = (
    error.ConnectionRefusedError,
    error.NoRouteError,
    error.TCPTimedOutError,
    error.TimeoutError,
    TimeoutError,
    error.ConnectionLost,
    NoReply,
    TruncatedMessage,
)


def isRetryable(failure: Failure) -> bool:
    """
    Whether a request that failed with C{failure} is worth another attempt,
    on a new connection, with C{--retries}.
    """
    # A plain ConnectError is an OS error without a class of its own, such
    # as "no route to host" (EHOSTUNREACH); its subclasses are told apart.
    return failure.check(*_RETRYABLE) is not None or type(failure.value) is error.ConnectError


def describeFailure(failure: Failure, config: Options) -> str | None:
    """
    The one-line message for an expected failure, or C{None} for a bug.
    """
    if failure.check(RetriesExhausted):
        exhausted = cast(RetriesExhausted, failure.value)
        message = describeFailure(exhausted.failure, config)
        return f"{message} (after {exhausted.attempts} attempts)" if message else None
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
    # By name: TLS support (pyOpenSSL, service_identity) is optional, and
    # is installed whenever one of these can happen.
    if failure.check("OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError"):
        from sockplay.client.tls import describeTLSFailure

        return describeTLSFailure(failure, target, config["ca"])
    if failure.check(error.ConnectError, error.ConnectionLost, error.ConnectionDone, OSError):
        return f"cannot talk to {target}: {failure.getErrorMessage()}"
    return None


def _bounded(d: Deferred[_T], reactor: IReactorCore, timeout: float) -> Deferred[_T]:
    """
    C{d}, cancelled after C{timeout} seconds, in which case it fails with
    L{TimeoutError}.
    """

    def timedOut(result: object, timeout: float) -> NoReturn:
        # Whatever cancelling produced (CancelledError, or the endpoint's
        # ConnectingCancelledError), the cause was the timeout.
        raise TimeoutError(f"no reply within {timeout} s")

    return d.addTimeout(timeout, cast(IReactorTime, reactor), onTimeoutCancel=timedOut)


def formatRetry(retry: Retry, config: Options, seq: int | None = None) -> str:
    """
    The line printed on stderr before a retry: C{Retrying (attempt 2 of 4)
    after <why the last attempt failed>: waiting 0.137 s}; with C{--count},
    C{Retrying seq=3 (attempt 2 of 4) after ...}.
    """
    which = "" if seq is None else f" seq={seq}"
    why = describeFailure(retry.failure, config) or retry.failure.getErrorMessage()
    return (
        f"Retrying{which} (attempt {retry.attempt} of {retry.attempts}) after {why}: "
        f"waiting {retry.wait:.3f} s"
    )


def _retrying(
    reactor: IReactorCore,
    config: Options,
    attempt: Callable[[], Awaitable[_T]],
    random: Random | None,
    notify: Callable[[Retry], object],
) -> Awaitable[_T]:
    """
    C{attempt}, retried as C{config} says (L{isRetryable} failures, up to
    C{--retries} more times, after waits of C{--backoff} doubling up to
    C{--backoff-max}, with full jitter from C{random}).
    """
    backoff = Backoff(config["backoff"], config["backoff-max"], random or Random())
    return retry(
        cast(IReactorTime, reactor), attempt, config["retries"], backoff, isRetryable, notify
    )


async def request(
    reactor: IReactorCore,
    config: Options,
    endpoint: IStreamClientEndpoint | None = None,
    random: Random | None = None,
    notify: Callable[[Retry], object] = lambda retry: None,
) -> bytes:
    """
    Connect, send C{config["message"]} and return the reply payload; with
    C{config["retries"]}, try again on a new connection after a failure
    that L{isRetryable}.

    Each attempt, connect included, is bounded by C{config["timeout"]}.

    @param endpoint: where to connect; by default, L{makeEndpoint}.
    @param random: the source of the backoff's jitter.
    @param notify: called with each L{Retry}, before its wait.
    @raise RetriesExhausted: if every attempt failed, with retries.
    """
    if endpoint is None:
        endpoint = makeEndpoint(reactor, config)
    attempt = partial(_exchange, reactor, config, endpoint)
    return await _retrying(reactor, config, attempt, random, notify)


async def _exchange(
    reactor: IReactorCore, config: Options, endpoint: IStreamClientEndpoint
) -> bytes:
    """
    One attempt of L{request}: connect, send, and wait for the reply, all
    within C{config["timeout"]}.
    """
    protocol = ReplyClientProtocol(config["message"], config["framing"])
    connecting = connectProtocol(endpoint, protocol)

    def awaitReply(_: object) -> Deferred[bytes]:
        return protocol.reply

    exchange = connecting.addCallback(awaitReply)
    return cast(bytes, await _bounded(exchange, reactor, config["timeout"]))


class ProbeResult(NamedTuple):
    """
    How one probe went.

    @ivar seq: its sequence number, from 1.
    @ivar rtt: seconds from the start of the probe's connection (from
        sending the message, with C{--keep-open}) to the complete reply, on
        its last attempt (retries and their waits are not counted); C{None}
        if lost.
    @ivar reply: the reply payload; C{None} if lost.
    @ivar error: why it was lost (one line); C{None} if not.
    """

    seq: int
    rtt: float | None = None
    reply: bytes | None = None
    error: str | None = None


class _KeepOpenSession:
    """
    The one connection of C{--count --keep-open}: opened by the first probe,
    and opened again by the next probe after a failure (which leaves the
    connection in an unknown state, so it is aborted) or after the server
    closed it.
    """

    def __init__(
        self,
        reactor: IReactorCore,
        config: Options,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._endpoint = endpoint
        self._clock = clock
        self._protocol: KeepOpenClientProtocol | None = None

    async def ask(self) -> tuple[bytes, float]:
        """
        Send the message, connecting first if needed.

        @return: the reply payload and the seconds from sending it to its
            complete reply.
        """
        protocol = self._protocol
        if protocol is None or not protocol.isOpen:
            protocol = KeepOpenClientProtocol(self._config["framing"])
            await connectProtocol(self._endpoint, protocol)
            self._protocol = protocol
        sent = self._clock.seconds()
        reply = await protocol.ask(self._config["message"])
        return reply, self._clock.seconds() - sent

    def drop(self) -> None:
        """
        Abandon the connection after a failure.
        """
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.isOpen and protocol.transport is not None:
            cast(ITCPTransport, protocol.transport).abortConnection()

    async def close(self) -> None:
        """
        Close the connection, aborting it if it takes longer than the timeout.
        """
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return
        try:
            await _bounded(protocol.close(), self._reactor, self._config["timeout"])
        except TimeoutError:
            if protocol.transport is not None:
                cast(ITCPTransport, protocol.transport).abortConnection()


async def probe(
    reactor: IReactorCore,
    config: Options,
    report: Callable[[ProbeResult], object],
    clock: IReactorTime | None = None,
    random: Random | None = None,
    notify: Callable[[int, Retry], object] = lambda seq, retry: None,
) -> list[ProbeResult]:
    """
    Send C{config["count"]} messages, C{config["interval"]} seconds apart
    (start to start; a slower probe delays the next, they never overlap),
    each on a new connection, or all on one with C{config["keep-open"]}.
    Each attempt is bounded by C{config["timeout"]}; with
    C{config["retries"]}, a probe is tried again as L{request} is; a
    failure or a timeout (on the last attempt) loses that probe only.

    @param report: called with each probe's result as soon as it is known.
    @param clock: the time source for round-trip times and intervals; the
        reactor by default.
    @param random: the source of the backoff's jitter.
    @param notify: called with a probe's sequence number and each L{Retry}
        of it, before its wait.
    @return: every probe's result, in order.
    @raise ClientError: if the endpoint cannot be made (before any probe).
    """
    if clock is None:
        clock = cast(IReactorTime, reactor)
    if random is None:
        random = Random()
    endpoint = makeEndpoint(reactor, config)
    session = (
        _KeepOpenSession(reactor, config, endpoint, clock) if config["keep-open"] else None
    )
    results: list[ProbeResult] = []
    try:
        for seq in range(1, config["count"] + 1):
            started = clock.seconds()
            attempt = partial(_probeOnce, reactor, config, endpoint, session, clock)
            try:
                reply, rtt = await _retrying(
                    reactor, config, attempt, random, partial(notify, seq)
                )
            except Exception:
                message = describeFailure(Failure(), config)
                if message is None:
                    raise
                result = ProbeResult(seq, error=message)
            else:
                result = ProbeResult(seq, rtt, reply)
            results.append(result)
            report(result)
            if seq < config["count"]:
                wait = started + config["interval"] - clock.seconds()
                await deferLater(clock, max(wait, 0.0))
    finally:
        if session is not None:
            await session.close()
    return results


async def _probeOnce(
    reactor: IReactorCore,
    config: Options,
    endpoint: IStreamClientEndpoint,
    session: _KeepOpenSession | None,
    clock: IReactorTime,
) -> tuple[bytes, float]:
    """
    One attempt of one probe, on a new connection or on C{session}'s.

    @return: the reply payload and the round-trip time.
    """
    if session is None:
        started = clock.seconds()
        reply = await _exchange(reactor, config, endpoint)
        return reply, clock.seconds() - started
    try:
        exchange = Deferred.fromCoroutine(session.ask())
        return await _bounded(exchange, reactor, config["timeout"])
    except Exception:
        # The connection is in an unknown state: the next attempt, or the
        # next probe, opens a new one.
        session.drop()
        raise


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def formatProbe(result: ProbeResult) -> str:
    """
    The line printed for one probe: C{seq=1 rtt=0.412 ms reply=...} or
    C{seq=2 error=...}.
    """
    if result.error is not None or result.rtt is None or result.reply is None:
        return f"seq={result.seq} error={result.error}"
    return f"seq={result.seq} rtt={_ms(result.rtt)} ms reply={_text(result.reply)}"


class _Statistics(NamedTuple):
    """
    The statistics of a run of probes.

    @ivar rtt: the minimum, average, maximum and standard deviation of the
        round-trip times, in seconds; C{None} if nothing was received.
    """

    sent: int
    received: int
    lossPercent: float
    rtt: tuple[float, float, float, float] | None

    @classmethod
    def of(cls, results: Sequence[ProbeResult]) -> _Statistics:
        rtts = [r.rtt for r in results if r.error is None and r.rtt is not None]
        sent = len(results)
        loss = 100.0 * (sent - len(rtts)) / sent if sent else 0.0
        rtt = None
        if rtts:
            rtt = (min(rtts), statistics.fmean(rtts), max(rtts), statistics.pstdev(rtts))
        return cls(sent, len(rtts), loss, rtt)


def formatSummary(results: Sequence[ProbeResult], target: str) -> list[str]:
    """
    The ping-style statistics printed after the probes: a header line, then
    C{N sent, M received, X% loss, rtt min/avg/max/mdev = a/b/c/d ms} (the
    times in milliseconds; no rtt part if nothing was received).
    """
    stats = _Statistics.of(results)
    line = f"{stats.sent} sent, {stats.received} received, {stats.lossPercent:g}% loss"
    if stats.rtt is not None:
        line += ", rtt min/avg/max/mdev = " + "/".join(_ms(v) for v in stats.rtt) + " ms"
    return [f"--- {target} probe statistics ---", line]


def probeReport(results: Sequence[ProbeResult], target: str) -> dict[str, Any]:
    """
    What C{--json} prints: every probe and the statistics. Times are in
    milliseconds, rounded to the microsecond.
    """
    probes: list[dict[str, Any]] = []
    for result in results:
        if result.error is None and result.rtt is not None and result.reply is not None:
            probes.append(
                {
                    "seq": result.seq,
                    "rtt_ms": round(result.rtt * 1000, 3),
                    "reply": _text(result.reply),
                }
            )
        else:
            probes.append({"seq": result.seq, "error": result.error})
    stats = _Statistics.of(results)
    rtt = None
    if stats.rtt is not None:
        names = ("min", "avg", "max", "mdev")
        rtt = {name: round(value * 1000, 3) for name, value in zip(names, stats.rtt, strict=True)}
    return {
        "target": target,
        "probes": probes,
        "sent": stats.sent,
        "received": stats.received,
        "loss_percent": stats.lossPercent,
        "rtt_ms": rtt,
    }


def _reportFailure(config: Options) -> NoReturn:
    """
    Report the exception being handled in one line if it is an expected
    failure (with its traceback if it is a bug), and exit 1.
    """
    failure = Failure()
    message = describeFailure(failure, config)
    if message is None:
        failure.printTraceback(file=sys.stderr)
        raise SystemExit(1) from None
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(1) from None


async def _probeMain(reactor: IReactorCore, config: Options, random: Random | None) -> None:
    def report(result: ProbeResult) -> None:
        if not config["json"]:
            print(formatProbe(result), flush=True)

    def notify(seq: int, retry: Retry) -> None:
        print(formatRetry(retry, config, seq), file=sys.stderr, flush=True)

    try:
        results = await probe(reactor, config, report, random=random, notify=notify)
    except Exception:
        _reportFailure(config)
    if config["json"]:
        print(json.dumps(probeReport(results, config.target())), flush=True)
    else:
        for line in formatSummary(results, config.target()):
            print(line, flush=True)
    if any(result.error is not None for result in results):
        raise SystemExit(1)


async def _main(reactor: IReactorCore, config: Options, random: Random | None = None) -> None:
    """
    The command: one exchange (with C{--count}, the probes), its output and
    its exit status.

    @param random: the source of the backoff's jitter; seeded from the
        system by default.
    """
    if config["insecure"]:
        print(
            "Warning: --insecure: the server's TLS certificate is not verified; "
            "anyone in the path can pose as the server",
            file=sys.stderr,
            flush=True,
        )
    if config["count"] is not None:
        await _probeMain(reactor, config, random)
        return

    def notify(retry: Retry) -> None:
        print(formatRetry(retry, config), file=sys.stderr, flush=True)

    try:
        reply = await request(reactor, config, random=random, notify=notify)
    except Exception:
        _reportFailure(config)
    print(formatReply(reply), flush=True)


def main(argv: Sequence[str] | None = None, _reactor: Any = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), run one exchange (with
    C{--count}, the probes) and exit: 0 with the reply (every reply), 1 on a
    failure (any probe lost), 2 on a usage error.
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
