"""
How the client's requests fail: its own exceptions, which failures are worth
another attempt, and the one line that tells the user what went wrong.
"""

from __future__ import annotations

from typing import cast

from twisted.internet import error
from twisted.internet.defer import TimeoutError
from twisted.python.failure import Failure

from sockplay.client.options import Options
from sockplay.client.retry import RetriesExhausted
from sockplay.framing import MessageTooLong, TruncatedMessage

__all__ = ["ClientError", "NoReply", "describeFailure", "isRetryable"]


class NoReply(Exception):
    """
    The server closed the connection without sending a reply.
    """


class ClientError(Exception):
    """
    An expected failure, with the one-line message to show the user.
    """


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
    # By name, so that TLS support is imported only when a TLS failure,
    # which needs it, has happened.
    if failure.check("OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError"):
        from sockplay.client.tls import describeTLSFailure

        return describeTLSFailure(failure, target, config["ca"])
    if failure.check(error.ConnectError, error.ConnectionLost, error.ConnectionDone, OSError):
        return f"cannot talk to {target}: {failure.getErrorMessage()}"
    return None
