"""
How the client's requests fail: its own exceptions, which failures are worth
another attempt, and the one line that tells the user what went wrong.
"""

from __future__ import annotations

from typing import cast

from twisted.internet import error
from twisted.internet.defer import TimeoutError
from twisted.python.failure import Failure

from sockplay.cli import counted
from sockplay.client.options import Options
from sockplay.client.retry import RetriesExhausted
from sockplay.client.verdict import FAILED
from sockplay.framing import MessageTooLong, TruncatedMessage

__all__ = [
    "BAD_REPLY",
    "CLOSED",
    "INTERRUPTED",
    "OK",
    "OUTCOMES",
    "REFUSED",
    "RESET",
    "TIMEOUT",
    "TLS",
    "ClientError",
    "ClosedAfterReply",
    "Interrupted",
    "NoReply",
    "describeFailure",
    "exitStatus",
    "isRetryable",
    "outcomeOf",
]

# How a probe ended, in one word: the result label of the probe exporter's
# sockplay_probe_results_total, and what the docs' mapping table lists.
OK = "ok"  # an echo of the message
REFUSED = "refused"  # no connection: refused, unreachable, a name that does not resolve
TIMEOUT = "timeout"  # no complete reply within --timeout (connect included)
RESET = "reset"  # the connection was reset or lost in a non-clean way
CLOSED = "closed"  # the server closed without a reply, or in the middle of one
BAD_REPLY = "bad-reply"  # a reply that is not an echo: an Error: reply, another, too long
TLS = "tls"  # the TLS handshake or the certificate check failed
OUTCOMES = (OK, REFUSED, TIMEOUT, RESET, CLOSED, BAD_REPLY, TLS)
# A probe cut short by SIGINT or SIGTERM: lost, but it says nothing of the server.
INTERRUPTED = "interrupted"


class NoReply(Exception):
    """
    The server closed the connection without sending a reply.
    """


class ClosedAfterReply(NoReply):
    """
    On a connection kept open for several messages, the server closed (or
    reset) the connection after answering some, without answering the
    next: the mark of a one-shot server.

    @ivar replies: how many messages the connection had answered.
    """

    def __init__(self, replies: int) -> None:
        super().__init__(replies)
        self.replies = replies


class Interrupted(Exception):
    """
    SIGINT or SIGTERM stopped the client before the reply came.
    """


class ClientError(Exception):
    """
    An expected failure, with the one-line message to show the user.

    @ivar status: the exit status it ends the command with.
    """

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


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


def exitStatus(failure: Failure) -> int:
    """
    The exit status for an expected failure: a L{ClientError}'s own, else
    L{FAILED}.
    """
    if failure.check(ClientError):
        return cast(ClientError, failure.value).status
    return FAILED


# For each framing, the server framing that most likely explains a reply
# that never comes or never ends: the one the server waits in.
_LIKELY_FRAMING = {"raw": "line", "line": "int32", "int32": "line", "eof": "line"}


def _framingHint(config: Options) -> str:
    """
    The hint for a reply that never came or never ended: the framings may
    not match.
    """
    framing = config["framing"]
    guess = _LIKELY_FRAMING[framing]
    return (
        f"is the server's framing {guess}, not {framing}? "
        f"try --framing {guess} (it must match the server's)"
    )


def describeFailure(failure: Failure, config: Options, hint: bool = True) -> str | None:
    """
    The one-line message for an expected failure, or C{None} for a bug.

    @param hint: add, where the cause is likely, what to try (another
        framing, C{--tls}, C{--keep-open} on the server); not for a line
        that will be followed by another attempt.
    """
    if failure.check(RetriesExhausted):
        exhausted = cast(RetriesExhausted, failure.value)
        message = describeFailure(exhausted.failure, config, hint)
        return f"{message} (after {exhausted.attempts} attempts)" if message else None
    target = config.target()
    if failure.check(ClosedAfterReply):
        replies = cast(ClosedAfterReply, failure.value).replies
        message = (
            f"{target} closed the connection after {counted(replies, 'reply', 'replies')} "
            "without answering the next message"
        )
        if hint:
            message += (
                ": is it a one-shot server? run it with --keep-open, or drop --keep-open here"
            )
        return message
    if failure.check(Interrupted):
        return "interrupted before the reply"
    if failure.check(NoReply):
        message = str(failure.value)
        if hint and not config.usesTLS() and config.webSocket is None:
            message += f" (is {target} a TLS listener? try --tls)"
        return message
    if failure.check(ClientError):
        return str(failure.value)
    if failure.check(TimeoutError, error.TimeoutError):
        message = f"no reply from {target} within {config['timeout']:g} s"
        # A WebSocket message has no framing to get wrong.
        framed = config.webSocket is None
        return f"{message}: {_framingHint(config)}" if hint and framed else message
    if failure.check(error.ConnectionRefusedError):
        return f"connection refused by {target}"
    if failure.check(error.DNSLookupError):
        host = config.lookupHost()
        if host is None:
            return f"cannot resolve the host of {target}: {failure.getErrorMessage()}"
        return f"cannot resolve {host!r}"
    if failure.check(TruncatedMessage):
        message = f"connection closed in the middle of a reply ({failure.getErrorMessage()})"
        return f"{message}: {_framingHint(config)}" if hint else message
    if failure.check(MessageTooLong):
        return f"reply too long ({failure.getErrorMessage()})"
    # By name, so that TLS support is imported only when a TLS failure,
    # which needs it, has happened.
    if failure.check("OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError"):
        from sockplay.client.tls import describeTLSFailure

        return describeTLSFailure(failure, target, config["ca"], config["cert"])
    if failure.check(error.ConnectionLost):
        # Twisted's text ("lost in a non-clean fashion") means a reset.
        return f"connection reset by {target}"
    if failure.check(error.ConnectError, error.ConnectionDone, OSError):
        return f"cannot talk to {target}: {failure.getErrorMessage()}"
    return None


def outcomeOf(failure: Failure) -> str:
    """
    What a probe that failed with C{failure} counts as: one of L{OUTCOMES}
    (never L{OK}), or L{INTERRUPTED}. With retries, the last attempt's
    failure decides.

    A failure to connect that is not a refusal or a timeout (no route to
    the host, a name that does not resolve) counts as L{REFUSED}: no
    connection was made. A failure that is not one of the kinds below
    (another L{ClientError}, an L{OSError} while talking) counts as
    L{RESET}: the connection was lost.
    """
    if failure.check(RetriesExhausted):
        return outcomeOf(cast(RetriesExhausted, failure.value).failure)
    if failure.check(Interrupted):
        return INTERRUPTED
    if failure.check(TimeoutError, error.TimeoutError, error.TCPTimedOutError):
        return TIMEOUT
    if failure.check(error.DNSLookupError, error.ConnectionRefusedError, error.NoRouteError):
        return REFUSED
    if failure.check(NoReply, TruncatedMessage, error.ConnectionDone):
        return CLOSED
    if failure.check(MessageTooLong):
        return BAD_REPLY
    # By name, as in describeFailure: TLS support is imported only when needed.
    if failure.check("OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError"):
        return TLS
    if failure.check(error.ConnectionLost):
        return RESET
    if failure.check(error.ConnectError):
        return REFUSED
    return RESET
