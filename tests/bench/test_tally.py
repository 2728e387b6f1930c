"""
Tests of the bench's C{--tally}: the L{TallyChecker} (any identity in
front of the message, the message checked byte for byte, where a reply
ends in each framing, its bounds), the worker's accounting per identity and
of stickiness, the results' wire form and summary, and the option.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from support.bench import Conversations, localPlan

from sockplay.bench.check import LONGEST_IDENTITY, ReplyError, TallyChecker
from sockplay.bench.command import Options, makePlans
from sockplay.bench.stats import Results, formatSummary
from sockplay.stickiness import Stickiness
from sockplay.tally import Tally

MESSAGE = b"hi"


def checker(framing: str = "line", owed: int = 1) -> TallyChecker:
    """
    A checker for C{framing} owed C{owed} replies.
    """
    made = TallyChecker(framing, MESSAGE, Stickiness())
    made.expect(owed)
    return made


def int32(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize(
    "framing, replies",
    [
        ("line", b"A hi\nBB hi\n"),
        ("int32", int32(b"A hi") + int32(b"BB hi")),
    ],
)
def test_anyIdentityInFront(framing: str, replies: bytes) -> None:
    """
    Each reply is right whatever comes before the message, and its identity
    is kept for its latency, in order.
    """
    check = checker(framing, owed=2)
    assert check.feed(replies) == 2
    assert list(check.identities) == [b"A ", b"BB "]
    assert (check.owed, check.offset, check.answered) == (0, 0, 2)


@pytest.mark.parametrize(
    "framing, replies",
    [
        ("line", b"web1 hi\nweb2 hi\n"),
        ("int32", int32(b"web1 hi") + int32(b"web2 hi")),
    ],
)
def test_splitAnywhere(framing: str, replies: bytes) -> None:
    """
    Replies split across reads at any byte are read the same.
    """
    for cut in range(1, len(replies)):
        check = checker(framing, owed=2)
        done = check.feed(replies[:cut])
        assert check.offset == (cut if cut < len(replies) // 2 else cut - len(replies) // 2)
        done += check.feed(replies[cut:])
        assert done == 2
        assert list(check.identities) == [b"web1 ", b"web2 "]


def test_rawReplyEndsWithTheMessage() -> None:
    """
    In raw framing a reply is whole when the bytes received end with the
    message.
    """
    check = checker("raw")
    assert check.feed(b"web1 h") == 0
    assert check.offset == 6
    assert check.feed(b"i") == 1
    assert list(check.identities) == [b"web1 "]


@pytest.mark.parametrize(
    "framing, right, wrong",
    [
        ("line", b"A hi\n", b"Error: server busy\n"),
        ("int32", int32(b"A hi"), int32(b"A ho")),
        ("raw", b"", b"A ho" * 20_000),
    ],
)
def test_notAnEchoIsAMismatch(framing: str, right: bytes, wrong: bytes) -> None:
    """
    A reply that does not end with the message is a C{mismatch}; the right
    replies before it count as done, and the wrong one is kept as received.
    """
    check = checker(framing, owed=3 if right else 1)
    with pytest.raises(ReplyError) as caught:
        check.feed(right + wrong)
    error = caught.value
    assert (error.kind, error.done) == ("mismatch", 1 if right else 0)
    assert error.received == wrong[:256]


def test_extraBytes() -> None:
    """
    Bytes after the last reply owed are C{extra}.
    """
    check = checker("line")
    with pytest.raises(ReplyError) as caught:
        check.feed(b"A hi\nmore")
    assert (caught.value.kind, caught.value.done) == ("extra", 1)


def test_lineTooLong() -> None:
    """
    A line that runs past any echo's length without its LF is a mismatch:
    the bench does not buffer it without end.
    """
    check = checker("line")
    assert check.feed(b"x" * LONGEST_IDENTITY) == 0
    with pytest.raises(ReplyError) as caught:
        check.feed(b"x" * (len(MESSAGE) + 1))
    assert caught.value.kind == "mismatch"
    assert caught.value.received is not None and len(caught.value.received) <= 256


def test_int32LengthOutOfBounds() -> None:
    """
    An int32 reply too short to hold the message, or longer than any echo,
    is a mismatch as soon as its length is read, with the replies before it
    done.
    """
    for length in (len(MESSAGE) - 1, len(MESSAGE) + LONGEST_IDENTITY + 1):
        check = checker("int32", owed=2)
        with pytest.raises(ReplyError) as caught:
            check.feed(int32(b"A hi") + struct.pack(">I", length))
        assert (caught.value.kind, caught.value.done) == ("mismatch", 1)


def test_earlyClose() -> None:
    """
    A close while a reply is owed is an C{early-close}; after every reply,
    nothing.
    """
    check = checker("line")
    check.feed(b"A h")
    with pytest.raises(ReplyError) as caught:
        check.endOfInput()
    assert caught.value.kind == "early-close"
    check.feed(b"i\n")
    check.endOfInput()


def test_replyLengthShowsAMissingLF() -> None:
    """
    A line that holds the whole echo but for its LF tells its length, so
    that a stall there reads as C{no-delimiter}; otherwise it is not known.
    """
    check = checker("line")
    check.feed(b"A h")
    assert check.replyLength == 0
    check.feed(b"i")
    assert check.offset == check.replyLength - 1


def test_freshCheckerWatchesItsOwnConnection() -> None:
    """
    A fresh checker shares the stickiness but follows a new connection:
    another identity there is no change.
    """
    stickiness = Stickiness()
    first = TallyChecker("line", MESSAGE, stickiness)
    second = first.fresh()
    for check, identity in ((first, b"A "), (second, b"B ")):
        check.expect(1)
        check.feed(identity + b"hi\n")
    assert (stickiness.connections, stickiness.sticky) == (2, True)


def test_changeOnAConnection() -> None:
    """
    A reply from another identity on the same connection is a change, at
    its number on the connection.
    """
    stickiness = Stickiness()
    check = TallyChecker("line", MESSAGE, stickiness)
    check.expect(3)
    check.feed(b"A hi\nA hi\nB hi\n")
    assert not stickiness.sticky
    assert [(c.seq, c.before, c.after) for c in stickiness.changes] == [(3, b"A ", b"B ")]


def test_workerTalliesLatencyPerIdentity(conversations: Conversations) -> None:
    """
    With C{--tally}, each verified reply's latency counts under its
    identity, as well as in the run's histogram.
    """
    conversation = conversations(localPlan(pipeline=2, requests=2, tally=True))
    assert conversation.received(6) == b"hi\nhi\n"
    conversation.at(1_000_000)
    conversation.reply(b"web1 hi\n")
    conversation.at(3_000_000)
    conversation.reply(b"web2 hi\n")
    results = conversation.worker.results
    assert (results.ok, results.errorCount) == (2, 0)
    assert results.tally is not None
    report = results.tally.report(stickiness=True)
    assert [(b["identity"], b["count"], b["p50_ms"]) for b in report["backends"]] == [
        ("web1 ", 1, 1.0),
        ("web2 ", 1, 3.0),
    ]
    assert report["changes"] == [{"seq": 2, "from": "web1 ", "to": "web2 "}]
    assert conversation.worker._latencies == {1000: 1, 3000: 1}


def test_workerTalliesRepliesBeforeAMismatch(conversations: Conversations) -> None:
    """
    The replies before a wrong one count, and are tallied; the wrong one is
    a mismatch, and not tallied.
    """
    conversation = conversations(localPlan(pipeline=2, requests=2, tally=True))
    conversation.received(6)
    conversation.reply(b"web1 hi\nnot an echo\n")
    results = conversation.worker.results
    assert (results.ok, results.errors["mismatch"]) == (1, 1)
    assert results.tally is not None and results.tally.counts() == {b"web1 ": 1}


def test_workerWithoutTallyHasNone(conversations: Conversations) -> None:
    """
    Without C{--tally}, the results have no tally, and a reply with another
    prefix is a mismatch, as it always was.
    """
    conversation = conversations(localPlan(requests=1))
    conversation.received(3)
    conversation.reply(b"web1 hi\n")
    results = conversation.worker.results
    assert results.tally is None
    assert results.errors["mismatch"] == 1


def _tallied(*identities: bytes) -> Results:
    results = Results(ok=len(identities))
    results.tally = Tally()
    for identity in identities:
        results.tally.record(identity, 100)
    return results


def test_tallyTravelsAndMerges() -> None:
    """
    The tally crosses the wire between processes and merges: the counts of
    every process add up.
    """
    merged = Results.fromWire(json.loads(json.dumps(_tallied(b"A", b"B").toWire())))
    merged.merge(Results.fromWire(json.loads(json.dumps(_tallied(b"A").toWire()))))
    merged.merge(Results.fromWire(Results().toWire()))
    assert merged.tally is not None
    assert merged.tally.counts() == {b"A": 2, b"B": 1}


def test_mergeIntoResultsWithoutTally() -> None:
    """
    Results without a tally (a load process that died) take another's.
    """
    merged = Results(processes=0)
    merged.merge(_tallied(b"A"))
    assert merged.tally is not None and merged.tally.counts() == {b"A": 1}


@pytest.mark.parametrize(
    "mode, sticky",
    [("keep-open", "sticky: yes (every reply on the connection came from one backend)"),
     ("one-shot", "sticky: not checked (it needs --keep-open: one connection, many replies)")],
)
def test_summaryShowsTheTally(mode: str, sticky: str) -> None:
    """
    The summary has the tally after the rest (JSON: as C{tally}); whether
    stickiness was checked depends on the mode.
    """
    results = _tallied(b"web1 ", b"web1 ")
    results.tally.stickiness.watch().saw(b"web1 ", 1)  # type: ignore[union-attr]
    run = {"target": "t", "framing": "line", "mode": mode, "connections": 1, "pipeline": 1,
           "rate": None, "messageSize": 2}
    summary = results.summary(run)
    assert summary["tally"]["replies"] == 2
    lines = formatSummary(summary).splitlines()
    assert lines[-3:] == [
        "--- tally: 2 replies from 1 backend ---",
        "  2  100.0%  p50 0.100 ms  p99 0.100 ms  'web1 '",
        sticky,
    ]


def test_summaryWithoutTally() -> None:
    """
    Without C{--tally}, the summary has no C{tally}.
    """
    run = {"target": "t", "framing": "line", "mode": "keep-open", "connections": 1,
           "pipeline": 1, "rate": None, "messageSize": 2}
    assert "tally" not in Results().summary(run)


def test_tallyOption() -> None:
    """
    C{--tally} reaches every load process's plan; without it, no plan
    tallies.
    """
    config = Options()
    config.parseOptions(["--tally", "--processes", "2", "--requests", "4"])  # type: ignore[no-untyped-call]
    plans = makePlans(config, socket.AF_INET, ("127.0.0.1", 1))
    assert [plan.tally for plan in plans] == [True, True]
    assert plans[0].exchange.message == b"Hello Server !"
    config = Options()
    config.parseOptions([])  # type: ignore[no-untyped-call]
    assert not makePlans(config, socket.AF_INET, ("127.0.0.1", 1))[0].tally
