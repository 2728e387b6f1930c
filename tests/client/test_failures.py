"""
Tests for L{sockplay.client.failures}: the one-line message of each expected
failure, and which failures are worth another attempt.
"""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.internet.defer import TimeoutError
from twisted.python.failure import Failure

from sockplay.client.failures import ClientError, NoReply, describeFailure, isRetryable
from sockplay.client.options import Options
from sockplay.framing import MessageTooLong, TruncatedMessage


@pytest.mark.parametrize(
    "exception, message",
    [
        (error.ConnectionRefusedError(), "connection refused by 127.0.0.1:12345"),
        (NoReply("connection closed without a reply"), "connection closed without a reply"),
        (error.DNSLookupError(), "cannot resolve '127.0.0.1'"),
    ],
)
def test_describeFailure(exception: Exception, message: str) -> None:
    """
    Expected failures become one readable line.
    """
    config = Options()
    config.parseOptions([])
    assert describeFailure(Failure(exception), config) == message


def test_describeFailureBug() -> None:
    """
    An unexpected exception is not dressed up as an expected failure: it
    keeps its traceback.
    """
    config = Options()
    config.parseOptions([])
    assert describeFailure(Failure(ZeroDivisionError()), config) is None



# Which failures are retried.


@pytest.mark.parametrize(
    "exception",
    [
        error.ConnectionRefusedError(),
        error.NoRouteError(),
        error.TCPTimedOutError(),
        error.ConnectError(osError=113, string="No route to host"),
        error.TimeoutError(),
        TimeoutError(),
        error.ConnectionLost(),
        NoReply("connection closed without a reply"),
        TruncatedMessage(4, 32),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transientFailuresRetried(exception: Exception) -> None:
    """
    A refused, unreachable, reset or lost connection, no reply, a reply cut
    short, and a timeout are worth another attempt on a new connection.
    """
    assert isRetryable(Failure(exception))


@pytest.mark.parametrize(
    "exception",
    [
        error.DNSLookupError(),
        ClientError("bad --connect endpoint"),
        MessageTooLong(10),
        SSL.Error([("SSL routines", "", "certificate verify failed")]),
        VerificationError(errors=[]),
        ZeroDivisionError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_lastingFailuresNotRetried(exception: Exception) -> None:
    """
    A name that does not resolve, a bad endpoint, a reply that is too long,
    a TLS failure and a bug would end the same way again.
    """
    assert not isRetryable(Failure(exception))

