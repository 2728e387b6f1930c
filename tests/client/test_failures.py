"""
Tests for L{sockplay.client.failures}: the one-line message of each expected
failure, which failures are worth another attempt, and what a probe's
failure counts as on the exporter's metrics.
"""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.internet.defer import TimeoutError
from twisted.python.failure import Failure

from sockplay.client.failures import (
    ClientError,
    ClosedAfterReply,
    Interrupted,
    NoReply,
    describeFailure,
    isRetryable,
    outcomeOf,
)
from sockplay.client.options import Options
from sockplay.client.retry import RetriesExhausted
from sockplay.framing import MessageTooLong, TruncatedMessage


@pytest.mark.parametrize(
    "exception, message",
    [
        (error.ConnectionRefusedError(), "connection refused by 127.0.0.1:12345"),
        (
            NoReply("connection closed without a reply"),
            "connection closed without a reply (is 127.0.0.1:12345 a TLS listener? try --tls)",
        ),
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



def _options(*argv: str) -> Options:
    config = Options()
    config.parseOptions(list(argv))
    return config


def test_dnsFailureNamesConnectHost() -> None:
    """
    A name that does not resolve is the one in C{--connect}, not C{--host}
    (which C{--connect} overrides).
    """
    config = _options("--connect", "tcp:host=nosuch.invalid:port=1")
    failure = Failure(error.DNSLookupError("address 'nosuch.invalid' not found"))
    assert describeFailure(failure, config) == "cannot resolve 'nosuch.invalid'"


def test_dnsFailureNamesHost() -> None:
    """
    Without C{--connect}, the name that does not resolve is C{--host}.
    """
    config = _options("--host", "nosuch.invalid")
    failure = Failure(error.DNSLookupError())
    assert describeFailure(failure, config) == "cannot resolve 'nosuch.invalid'"


def test_resetWording() -> None:
    """
    A reset reads as one, not as Twisted's "lost in a non-clean fashion".
    """
    failure = Failure(error.ConnectionLost())
    assert describeFailure(failure, _options()) == "connection reset by 127.0.0.1:12345"


def test_timeoutHintsAtFraming() -> None:
    """
    No reply within C{--timeout} hints that the framings may not match,
    naming the framing the server most likely waits in.
    """
    failure = Failure(TimeoutError())
    assert describeFailure(failure, _options("--timeout", "2")) == (
        "no reply from 127.0.0.1:12345 within 2 s: is the server's framing line, not raw? "
        "try --framing line (it must match the server's)"
    )
    assert describeFailure(failure, _options("--timeout", "2"), hint=False) == (
        "no reply from 127.0.0.1:12345 within 2 s"
    )


def test_closedWithoutReplyHintsAtTLS() -> None:
    """
    A plain client that the server closes on without a reply (as a TLS
    listener does) is told to try C{--tls}; a TLS client is not.
    """
    failure = Failure(NoReply("connection closed without a reply"))
    assert describeFailure(failure, _options()).endswith(  # type: ignore[union-attr]
        "(is 127.0.0.1:12345 a TLS listener? try --tls)"
    )
    assert describeFailure(failure, _options("--tls")) == "connection closed without a reply"


def test_closedAfterReplyHintsAtOneShot() -> None:
    """
    A keep-open connection that the server closes after a reply, without
    answering the next message, hints at a one-shot server.
    """
    failure = Failure(ClosedAfterReply(1))
    assert describeFailure(failure, _options()) == (
        "127.0.0.1:12345 closed the connection after 1 reply without answering the next "
        "message: is it a one-shot server? run it with --keep-open, or drop --keep-open here"
    )


@pytest.mark.parametrize(
    "exception, outcome",
    [
        (error.ConnectionRefusedError(), "refused"),
        (error.DNSLookupError(), "refused"),
        (error.NoRouteError(), "refused"),
        (error.ConnectError(), "refused"),
        (TimeoutError(), "timeout"),
        (error.TimeoutError(), "timeout"),
        (error.TCPTimedOutError(), "timeout"),
        (error.ConnectionLost(), "reset"),
        (OSError("broken pipe"), "reset"),
        (NoReply("connection closed without a reply"), "closed"),
        (ClosedAfterReply(2), "closed"),
        (TruncatedMessage("3 of 10 bytes"), "closed"),
        (error.ConnectionDone(), "closed"),
        (MessageTooLong("limit"), "bad-reply"),
        (SSL.Error([("SSL routines", "", "certificate verify failed")]), "tls"),
        (VerificationError(errors=[]), "tls"),
        (Interrupted(), "interrupted"),
    ],
)
def test_outcomeOf(exception: Exception, outcome: str) -> None:
    """
    Each failure the client tells apart counts as one of the exporter's
    results (or, stopped by a signal, as interrupted).
    """
    assert outcomeOf(Failure(exception)) == outcome


def test_outcomeOfRetriesIsTheLastAttempts() -> None:
    """
    With retries, the last attempt's failure decides.
    """
    exhausted = RetriesExhausted(Failure(error.ConnectionLost()), 3)
    assert outcomeOf(Failure(exhausted)) == "reset"
