"""
What the client does: one request (L{request}), or a run of probes
(L{probe}); each bounded by C{--timeout} and retried as C{--retries} says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from itertools import count
from random import Random
from typing import NamedTuple, NoReturn, TypeVar, cast

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IReactorCore, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from sockplay.client.endpoint import makeEndpoint
from sockplay.client.failures import (
    BAD_REPLY,
    OK,
    Interrupted,
    describeFailure,
    isRetryable,
    outcomeOf,
)
from sockplay.client.options import Options
from sockplay.client.protocol import ReplyClientProtocol
from sockplay.client.reply import Reply
from sockplay.client.retry import Backoff, Retry, retry
from sockplay.client.session import KeepOpenSession
from sockplay.client.verdict import problem
from sockplay.client.websocket import WebSocketSession
from sockplay.client.websocket import exchange as webSocketExchange

__all__ = ["ProbeResult", "probe", "request"]

_T = TypeVar("_T")

# What cancelling an exchange raises: CancelledError, or, while it is still
# connecting, the endpoint's ConnectingCancelledError.
_CANCELLED = (CancelledError, error.ConnectingCancelledError)


def _withTimeout(d: Deferred[_T], reactor: IReactorCore, timeout: float) -> Deferred[_T]:
    """
    C{d}, cancelled after C{timeout} seconds, in which case it fails with
    L{TimeoutError}.
    """

    def timedOut(result: object, timeout: float) -> NoReturn:
        # Whatever cancelling produced (CancelledError, or the endpoint's
        # ConnectingCancelledError), the cause was the timeout.
        raise TimeoutError(f"no reply within {timeout} s")

    return d.addTimeout(timeout, cast(IReactorTime, reactor), onTimeoutCancel=timedOut)


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
) -> Reply:
    """
    Connect, send C{config["message"]} and return the reply; with
    C{config["retries"]}, try again on a new connection after a failure
    that L{isRetryable}.

    Each attempt, connect included, is bounded by C{config["timeout"]}.

    @param endpoint: where to connect; by default, L{makeEndpoint}.
    @param random: the source of the backoff's jitter.
    @param notify: called with each L{Retry}, before its wait.
    @raise RetriesExhausted: if every attempt failed, with retries.
    @raise Interrupted: if cancelled (on SIGINT or SIGTERM) before the
        reply.
    """
    if endpoint is None:
        endpoint = makeEndpoint(reactor, config)
    attempt = partial(_exchange, reactor, config, endpoint)
    try:
        return await _retrying(reactor, config, attempt, random, notify)
    except _CANCELLED:
        raise Interrupted() from None


async def _exchange(
    reactor: IReactorCore, config: Options, endpoint: IStreamClientEndpoint
) -> Reply:
    """
    One attempt of L{request}: connect, send, and wait for the reply, all
    within C{config["timeout"]}.

    A message that is neither an echo nor an error, held in case it was a
    banner (see L{ReplyReader}), is the reply if nothing follows it within
    the timeout: a server that keeps the connection open does not end it.

    With a C{ws://} or C{wss://} URL, the exchange is one message and its
    reply on a WebSocket of its own.
    """
    if config.webSocket is not None:
        asking = Deferred.fromCoroutine(
            webSocketExchange(
                endpoint, config.webSocket.url, config["message"], cast(IReactorTime, reactor)
            )
        )
        return Reply(await _withTimeout(asking, reactor, config["timeout"]))
    protocol = ReplyClientProtocol(config["message"], config["framing"])
    connecting = connectProtocol(endpoint, protocol)

    def awaitReply(_: object) -> Deferred[bytes]:
        return protocol.reply

    exchange = connecting.addCallback(awaitReply)
    try:
        payload = cast(bytes, await _withTimeout(exchange, reactor, config["timeout"]))
    except TimeoutError:
        held = protocol.held
        if held is None:
            raise
        return Reply(held, alpn=protocol.negotiatedProtocol)
    return Reply(payload, protocol.banners, protocol.negotiatedProtocol)


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
    @ivar alpn: the protocol the server selected in ALPN for the probe's
        connection; C{None} if none (or lost).
    @ivar connection: with C{--keep-open}, which connection its reply
        came on, numbered from 1 in the order they were opened; C{None}
        without (each probe has a connection of its own) or if lost.
    @ivar outcome: how it ended, in one word: L{OK}, or why it was lost
        (one of L{sockplay.client.failures.OUTCOMES}, or
        L{sockplay.client.failures.INTERRUPTED}).
    """

    seq: int
    rtt: float | None = None
    reply: bytes | None = None
    error: str | None = None
    alpn: bytes | None = None
    connection: int | None = None
    outcome: str = OK


async def probe(
    reactor: IReactorCore,
    config: Options,
    report: Callable[[ProbeResult], object],
    clock: IReactorTime | None = None,
    random: Random | None = None,
    notify: Callable[[int, Retry], object] = lambda seq, retry: None,
) -> None:
    """
    Send C{config["count"]} messages (0: until cancelled),
    C{config["interval"]} seconds apart (start to start; a slower probe
    delays the next, they never overlap), each on a new connection, or all
    on one with C{config["keep-open"]}. Each attempt is bounded by
    C{config["timeout"]}; with C{config["retries"]}, a probe is tried again
    as L{request} is; a failure or a timeout (on the last attempt), or a
    reply that is not an echo of the message, loses that probe only.

    Cancelling the returned Deferred (on SIGINT or SIGTERM) ends the run;
    a probe still waiting for its reply is lost, as interrupted.

    Nothing of the probes is kept here, so that C{--count 0} runs for as
    long as it is let run in the same memory: C{report} keeps what it
    needs (L{sockplay.client.summary.ProbeSummary}, the exporter's
    metrics).

    @param report: called with each probe's result, in order, as soon as
        it is known.
    @param clock: the time source for round-trip times and intervals; the
        reactor by default.
    @param random: the source of the backoff's jitter.
    @param notify: called with a probe's sequence number and each L{Retry}
        of it, before its wait.
    @raise ClientError: if the endpoint cannot be made (before any probe).
    """
    if clock is None:
        clock = cast(IReactorTime, reactor)
    if random is None:
        random = Random()
    endpoint = makeEndpoint(reactor, config)
    session: KeepOpenSession | WebSocketSession | None = None
    if config["keep-open"]:
        if config.webSocket is not None:
            session = WebSocketSession(endpoint, config.webSocket.url, clock)
        else:
            session = KeepOpenSession(endpoint, config["framing"], clock)
    last = config["count"] or None
    try:
        for seq in count(1):
            started = clock.seconds()
            attempt = partial(_probeOnce, reactor, config, endpoint, session, clock)
            try:
                reply, rtt, alpn = await _retrying(
                    reactor, config, attempt, random, partial(notify, seq)
                )
            except _CANCELLED:
                failure = Failure(Interrupted())
                report(
                    ProbeResult(
                        seq, error=describeFailure(failure, config), outcome=outcomeOf(failure)
                    )
                )
                break
            except Exception:
                failure = Failure()
                message = describeFailure(failure, config)
                if message is None:
                    raise
                result = ProbeResult(seq, error=message, outcome=outcomeOf(failure))
            else:
                wrong = problem(reply, config["message"], config["framing"], config.target())
                if wrong is None:
                    connection = None if session is None else session.connections
                    result = ProbeResult(seq, rtt, reply, alpn=alpn, connection=connection)
                else:
                    result = ProbeResult(seq, error=wrong[1], outcome=BAD_REPLY)
            report(result)
            if seq == last:
                break
            wait = started + config["interval"] - clock.seconds()
            try:
                await deferLater(clock, max(wait, 0.0))
            except CancelledError:
                break
    finally:
        if session is not None:
            await _close(session, reactor, config["timeout"])


async def _probeOnce(
    reactor: IReactorCore,
    config: Options,
    endpoint: IStreamClientEndpoint,
    session: KeepOpenSession | WebSocketSession | None,
    clock: IReactorTime,
) -> tuple[bytes, float, bytes | None]:
    """
    One attempt of one probe, on a new connection or on C{session}'s.

    @return: the reply payload, the round-trip time and the protocol
        selected in ALPN (or C{None}).
    """
    if session is None:
        started = clock.seconds()
        reply = await _exchange(reactor, config, endpoint)
        return reply.payload, clock.seconds() - started, reply.alpn
    try:
        exchange = Deferred.fromCoroutine(session.ask(config["message"]))
        payload, rtt = await _withTimeout(exchange, reactor, config["timeout"])
        return payload, rtt, session.negotiatedProtocol
    except Exception:
        # The connection is in an unknown state: the next attempt, or the
        # next probe, opens a new one.
        session.drop()
        raise


async def _close(
    session: KeepOpenSession | WebSocketSession, reactor: IReactorCore, timeout: float
) -> None:
    """
    Close C{session}'s connection, aborting it if that takes longer than
    C{timeout} seconds.
    """
    try:
        await _withTimeout(session.close(), reactor, timeout)
    except TimeoutError:
        session.drop()
