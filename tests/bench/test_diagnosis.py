"""
Tests for L{sockplay.bench.diagnosis}: the one-line hint that says what
the failures of a run point at, and which flag fixes it.
"""

from __future__ import annotations

import pytest
from support.bench import PREFIX

from sockplay.bench.check import makeExchange
from sockplay.bench.diagnosis import diagnose, explainReply
from sockplay.bench.plan import Plan
from sockplay.bench.stats import Results

MESSAGE = b"Hello Server !"
TARGET = "127.0.0.1:12345"


def plan(framing: str = "raw", mode: str = "one-shot", timeout: float = 2.0) -> Plan:
    """
    The plan of a run that sends L{MESSAGE} in C{framing}.
    """
    return Plan(0, None, makeExchange(framing, MESSAGE, PREFIX), mode=mode, timeout=timeout)


def failed(kind: str, count: int, symptom: str | None = None, ok: int = 0,
           received: bytes | None = None) -> Results:
    """
    Results with C{ok} right replies and C{count} failures of C{kind}, each
    with C{symptom} (and, for a mismatch, the wrong reply C{received}).
    """
    results = Results()
    results.ok = ok
    for _ in range(count):
        results.addError(kind, "detail", received, symptom)
    return results


def hint(results: Results, framing: str = "raw", mode: str = "one-shot") -> str | None:
    """
    What L{diagnose} says about C{results} of a run in C{framing} and
    C{mode}.
    """
    return diagnose(results, plan(framing, mode), MESSAGE, PREFIX, TARGET)


def test_noHintForARunWithoutErrors() -> None:
    """
    A run without errors needs no hint.
    """
    assert hint(failed("mismatch", 0, ok=100)) is None


def test_oneShotServerUnderKeepOpen() -> None:
    """
    Keep-open connections that the server closes after one reply each: it
    is a one-shot server, so drop C{--keep-open} or start it with one.
    """
    results = failed("early-close", 1003, "closed-after-reply", ok=1003)
    assert hint(results, mode="keep-open") == (
        "the server closed every connection after one reply: it is a one-shot server; "
        "drop --keep-open, or start it with --keep-open."
    )


def test_oneShotServerUnderHold() -> None:
    """
    C{--hold} against a one-shot server: the server needs C{--keep-open}.
    """
    results = failed("early-close", 50, "closed-after-reply", ok=50)
    assert hint(results, mode="hold") == (
        "the server closed every connection after one reply: it is a one-shot server; "
        "--hold needs a server started with --keep-open."
    )


def test_keepOpenServerUnderOneShot() -> None:
    """
    One-shot exchanges that get their whole reply but never the close: it
    is a keep-open server, so add C{--keep-open} or start it without.
    """
    results = failed("timeout", 50, "open-after-reply")
    assert hint(results, framing="line") == (
        "every reply came whole, but the server kept the connection open (2 s): it is a "
        "keep-open server; add --keep-open, or start it without --keep-open."
    )


@pytest.mark.parametrize("framing, others", [
    ("raw", "line, int32 or eof"),
    ("line", "raw, int32 or eof"),
    ("int32", "raw, line or eof"),
])
def test_noReplyPointsAtTheFraming(framing: str, others: str) -> None:
    """
    Not one byte of a reply in time, and no reply at all in the run: the
    server waits for the rest of a message framed otherwise; the hint
    names the other framings, and C{--timeout} for a slow server.
    """
    assert hint(failed("timeout", 50, "no-reply"), framing=framing) == (
        f"no reply came in 2 s: the server is waiting for the rest of a message, so its "
        f"framing is not {framing}; use the server's --framing ({others}), or raise "
        "--timeout for a slow server."
    )


def test_noReplyAfterSomeRepliesIsNoMismatch() -> None:
    """
    Exchanges without a reply in a run that had replies point at no
    setting: the server answered some of the same requests.
    """
    assert hint(failed("timeout", 10, "no-reply", ok=5000)) is None


def test_closedWithoutReply() -> None:
    """
    Every connection closed before a byte of a reply: a TLS listener, or a
    framing error on the server's side.
    """
    assert hint(failed("early-close", 1000, "closed-without-reply")) == (
        "the server closed every connection without a reply: if it listens with TLS (ssl:), "
        "bench a plain tcp: listener (the bench does not speak TLS); otherwise check "
        "--framing against the server's."
    )


def test_lineRepliesWithoutTheirLF() -> None:
    """
    Line replies that came whole but for their LF: not a line server.
    """
    assert hint(failed("timeout", 20, "no-delimiter"), framing="line") == (
        "the replies came whole but for their LF: the server's framing is not line; use the "
        "server's --framing (raw, int32 or eof)."
    )


def test_unfinishedReplies() -> None:
    """
    Replies that stop part-way point at the framing or the prefix.
    """
    assert hint(failed("timeout", 20, "reply-unfinished"), framing="int32") == (
        "replies stopped part-way for 2 s: check --framing and --prefix against the "
        "server's, or raise --timeout for a slow server."
    )


def test_stalledServer() -> None:
    """
    Connections that had replies and then none for the timeout: a stalled
    or overloaded server.
    """
    assert hint(failed("timeout", 20, "stalled", ok=100), mode="keep-open") == (
        "the server stopped answering for 2 s at a time: it is stalled or overloaded; raise "
        "--timeout to wait longer."
    )


def test_connectionRefused() -> None:
    """
    No connection made at all: nothing listens where the bench points.
    """
    assert hint(failed("connect", 1000)) == (
        "nothing accepted a connection at 127.0.0.1:12345: start the server, or point "
        "--host and --port (or --connect) at it."
    )


def test_mismatchExplained() -> None:
    """
    When mismatches dominate, the hint explains the first wrong reply.
    """
    received = PREFIX + b"\x00\x00\x00\x0eHello Server !"
    results = failed("mismatch", 1000, received=received)
    assert hint(results, framing="int32") == explainReply(
        received, "int32", MESSAGE, PREFIX, b"\x00\x00\x00\x0eHello Server !"
    )


def test_noHintForScatteredFailures() -> None:
    """
    Failures of many kinds, none of them most of the failures, point at no
    setting.
    """
    results = failed("reset", 3)
    results.addError("timeout", "detail", None, "stalled")
    results.addError("mismatch", "detail", b"x", None)
    assert hint(results) is None


# What a wrong reply says


def explain(received: bytes, framing: str = "raw") -> str:
    """
    What L{explainReply} says of C{received} in a run in C{framing}.
    """
    request = makeExchange(framing, MESSAGE, PREFIX).request
    return explainReply(received, framing, MESSAGE, PREFIX, request)


def test_tlsRecord() -> None:
    """
    A reply that starts like a TLS record (an alert here) comes from a TLS
    listener.
    """
    assert explain(b"\x15\x03\x03\x00\x02\x02\x32") == (
        "the replies are TLS records: the server listens with TLS (ssl:); bench a plain "
        "tcp: listener (the bench does not speak TLS)."
    )


def test_serverError() -> None:
    """
    An error reply is quoted, whatever frames it, without its LF.
    """
    received = b"\x00\x00\x00+Error: message too long (limit 65536 bytes)\n"
    assert explain(received) == (
        "the server answered 'Error: message too long (limit 65536 bytes)' instead of an "
        "echo: check that --framing (raw) is the server's, and the server's limits."
    )


def test_rawServerEchoesTheFraming() -> None:
    """
    A reply that is the prefix and the whole framed request comes from a
    raw server, which takes the framing bytes for message bytes.
    """
    assert explain(PREFIX + b"\x00\x00\x00\x0eHello Server !", "int32") == (
        "the server echoed the whole request, its int32 framing included, as one message: "
        "it is a raw server; use --framing raw, or start it with --framing int32."
    )


def test_int32LengthNonsense() -> None:
    """
    An int32 reply whose first 4 bytes give another length is not int32.
    """
    assert explain(b"Message received: Hello Server !!", "int32") == (
        "the replies do not start with their length (the first 4 bytes read as 1,298,494,323 "
        "bytes): the server's framing is not int32; use the server's --framing (raw, line "
        "or eof)."
    )


def test_lineReplyWithoutLF() -> None:
    """
    A line reply with no LF at all is not from a line server.
    """
    assert explain(b"Message received: Hello Server ?", "line") == (
        "the replies carry no LF: the server's framing is not line; use the server's "
        "--framing (raw, int32 or eof)."
    )


@pytest.mark.parametrize("framing, received", [
    ("line", b"Got: Hello Server !\n"),
    ("int32", b"\x00\x00\x00\x13Got: Hello Server !"),
    ("raw", b"Got: Hello Server !"),
])
def test_otherPrefix(framing: str, received: bytes) -> None:
    """
    The message with another prefix before it: the server's prefix is
    another, whatever the framing.
    """
    assert explain(received, framing) == (
        "the replies carry another prefix, 'Got: ': pass the server's with --prefix."
    )


def test_otherWrongReply() -> None:
    """
    A reply that none of the known cases explains: check both settings.
    """
    assert explain(b"Message received: Hello Server ?") == (
        "the replies are not what a server with --framing raw and this --prefix sends: "
        "check both against the server's."
    )
