"""
Tests of L{sockplay.tally}: the identity of a reply, the tally per
identity (counts, shares, percentiles, the cap on identities), its merge
and wire form, the stickiness check and its bounds, and how it prints.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockplay.stickiness import CHANGES_KEPT, Change, Stickiness
from sockplay.tally import (
    IDENTITY_KEPT,
    MAX_IDENTITIES,
    Tally,
    formatTally,
    identityOf,
    showIdentity,
)

MESSAGE = b"Hello Server !"


def test_identityIsWhatComesBeforeTheMessage() -> None:
    """
    The identity of an echo is the reply minus the message at its end:
    the server's rendered prefix.
    """
    assert identityOf(b"web1:4242 Hello Server !", MESSAGE) == b"web1:4242 "


def test_identityOfAnEchoWithoutPrefix() -> None:
    """
    A server without a prefix has the empty identity: still an identity.
    """
    assert identityOf(MESSAGE, MESSAGE) == b""


def test_notAnEchoHasNoIdentity() -> None:
    """
    A reply that does not end with the message is not an echo: no
    identity, so it is not tallied (the client counts it as a lost probe).
    """
    assert identityOf(b"Error: server busy", MESSAGE) is None
    assert identityOf(b"web1 Hello Server", MESSAGE) is None


def test_longIdentityIsCut() -> None:
    """
    An identity is kept to its first L{IDENTITY_KEPT} bytes, and one byte
    more to mark it cut; two long identities that share those bytes are one.
    """
    long1 = b"a" * (IDENTITY_KEPT + 50) + b"1"
    long2 = b"a" * (IDENTITY_KEPT + 50) + b"2"
    assert identityOf(long1 + MESSAGE, MESSAGE) == b"a" * (IDENTITY_KEPT + 1)
    assert identityOf(long1 + MESSAGE, MESSAGE) == identityOf(long2 + MESSAGE, MESSAGE)
    exact = b"b" * IDENTITY_KEPT
    assert identityOf(exact + MESSAGE, MESSAGE) == exact


def test_reportCountsAndShares() -> None:
    """
    The report lists each identity with its count and share, most
    replies first.
    """
    tally = Tally()
    for _ in range(3):
        tally.record(b"B ", 100)
    tally.record(b"A ", 200)
    report = tally.report()
    assert report["replies"] == 4
    assert [(b["identity"], b["count"], b["share"]) for b in report["backends"]] == [
        ("B ", 3, 0.75),
        ("A ", 1, 0.25),
    ]
    assert "sticky" not in report


def test_equalCountsSortByIdentity() -> None:
    """
    Identities with as many replies each are listed in the order of their
    bytes, so that the output is the same from run to run.
    """
    tally = Tally()
    for identity in (b"web2 ", b"web1 ", b"web3 "):
        tally.record(identity, 10)
    assert [b["identity"] for b in tally.report()["backends"]] == ["web1 ", "web2 ", "web3 "]


def test_percentiles() -> None:
    """
    p50 and p99 are each identity's own, in milliseconds.
    """
    tally = Tally()
    for micros in range(1, 101):
        tally.record(b"A", micros * 10)
    tally.record(b"B", 5000)
    a, b = tally.report()["backends"]
    assert (a["p50_ms"], a["p99_ms"]) == (0.5, 0.99)
    assert (b["p50_ms"], b["p99_ms"]) == (5.0, 5.0)


def test_percentileNeverPassesTheMaximum() -> None:
    """
    A percentile is at most the exact largest time (an HDR histogram
    answers with the top of a bucket, which can pass it).
    """
    tally = Tally()
    tally.record(b"A", 123_456)
    (a,) = tally.report()["backends"]
    assert a["p99_ms"] == 123.456


def test_recordMany() -> None:
    """
    C{count} replies with one time count as many replies.
    """
    tally = Tally()
    tally.record(b"A", 10, count=5)
    assert tally.counts() == {b"A": 5}
    assert tally.replies == 5


def test_identityCap() -> None:
    """
    Past L{MAX_IDENTITIES} identities, replies count under one other row,
    listed last, with no identity.
    """
    tally = Tally()
    for n in range(MAX_IDENTITIES + 10):
        tally.record(b"backend %d " % n, 10, count=2 if n < MAX_IDENTITIES else 1)
    counts = tally.counts()
    assert len(counts) == MAX_IDENTITIES + 1
    assert counts[None] == 10
    report = tally.report()
    assert report["backends"][-1]["identity"] is None
    assert report["backends"][-1]["count"] == 10
    assert sum(b["count"] for b in report["backends"]) == report["replies"]
    assert showIdentity(None) == "(other identities)"


def test_knownIdentityPastTheCapKeepsItsRow() -> None:
    """
    Once the cap is reached, an identity already counted still counts in
    its own row.
    """
    tally = Tally()
    for n in range(MAX_IDENTITIES + 1):
        tally.record(b"%d" % n, 10)
    tally.record(b"0", 10)
    assert tally.counts()[b"0"] == 2
    assert tally.counts()[None] == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 10_000)), max_size=60))
def test_sharesSumToOne(replies: list[tuple[int, int]]) -> None:
    """
    The shares of every row sum to 1 (100%), within rounding, and the
    counts to the replies.
    """
    tally = Tally()
    for identity, micros in replies:
        tally.record(b"%d" % identity, micros)
    report = tally.report()
    assert sum(b["count"] for b in report["backends"]) == report["replies"] == len(replies)
    if replies:
        assert sum(b["share"] for b in report["backends"]) == pytest.approx(1.0, abs=1e-5)


replyLists = st.lists(
    st.tuples(st.integers(0, MAX_IDENTITIES + 5), st.integers(0, 50_000)), max_size=40
)


@settings(max_examples=50, deadline=None)
@given(replyLists, replyLists)
def test_mergedTalliesAreOneTallyOfAll(
    first: list[tuple[int, int]], second: list[tuple[int, int]]
) -> None:
    """
    Two tallies merged (one through the wire form, as from a load process)
    report what one tally of every reply does, so long as the identities
    fit under the cap.
    """
    def tallyOf(replies: list[tuple[int, int]]) -> Tally:
        tally = Tally()
        for identity, micros in replies:
            tally.record(b"%d" % (identity % MAX_IDENTITIES), micros)
        return tally

    merged = tallyOf(first)
    merged.merge(Tally.fromWire(json.loads(json.dumps(tallyOf(second).toWire()))))
    assert merged.report() == tallyOf(first + second).report()


def test_mergePastTheCap() -> None:
    """
    Merged identities beyond the cap count under the other row, and
    other rows merge.
    """
    a, b = Tally(), Tally()
    for n in range(MAX_IDENTITIES):
        a.record(b"a%d" % n, 10)
    for n in range(MAX_IDENTITIES + 3):
        b.record(b"b%d" % n, 10)
    a.merge(b)
    assert a.counts()[None] == MAX_IDENTITIES + 3
    assert a.replies == 2 * MAX_IDENTITIES + 3


def test_wireRoundTrip() -> None:
    """
    A tally's wire form is JSON-safe and brings back the same tally,
    stickiness included.
    """
    tally = Tally()
    tally.record(b"\xff\x00web ", 300, count=4)
    watch = tally.stickiness.watch()
    watch.saw(b"a", 1)
    watch.saw(b"b", 2)
    back = Tally.fromWire(json.loads(json.dumps(tally.toWire())))
    assert back.report(stickiness=True) == tally.report(stickiness=True)
    assert back.stickiness == tally.stickiness


def test_emptyTally() -> None:
    """
    A tally of nothing reports no backends, and says so.
    """
    report = Tally().report()
    assert report == {"replies": 0, "backends": []}
    assert formatTally(report) == ["--- tally: 0 replies from 0 backends ---"]


def test_stickyConnection() -> None:
    """
    Replies from one identity on a connection: sticky, no changes.
    """
    stickiness = Stickiness()
    watch = stickiness.watch()
    for seq in range(1, 6):
        watch.saw(b"web1 ", seq)
    assert stickiness.sticky
    assert (stickiness.connections, stickiness.changedConnections) == (1, 0)
    assert stickiness.changes == []


def test_changeOfIdentity() -> None:
    """
    A reply from another identity on the same connection is a change, with
    its sequence number and both identities; a change back is another.
    """
    stickiness = Stickiness()
    watch = stickiness.watch()
    for seq, identity in enumerate([b"a", b"a", b"b", b"b", b"a"], start=1):
        watch.saw(identity, seq)
    assert not stickiness.sticky
    assert stickiness.changedConnections == 1
    assert stickiness.changes == [Change(3, b"a", b"b"), Change(5, b"b", b"a")]


def test_eachConnectionOnItsOwn() -> None:
    """
    Each connection is checked on its own: a new connection to another
    backend is no change.
    """
    stickiness = Stickiness()
    stickiness.watch().saw(b"a", 1)
    stickiness.watch().saw(b"b", 2)
    assert stickiness.sticky
    assert stickiness.connections == 2


def test_changesKeptAreBounded() -> None:
    """
    Only the first L{CHANGES_KEPT} changes are kept; the rest are counted.
    """
    stickiness = Stickiness()
    watch = stickiness.watch()
    for seq in range(1, CHANGES_KEPT + 8):
        watch.saw(b"%d" % (seq % 2), seq)
    assert len(stickiness.changes) == CHANGES_KEPT
    assert stickiness.moreChanges == 7 - 1
    assert stickiness.changes[0] == Change(2, b"1", b"0")


def test_stickinessMergeKeepsTheBound() -> None:
    """
    Merged stickiness adds the connections and keeps at most
    L{CHANGES_KEPT} changes, counting the rest.
    """
    a, b = Stickiness(), Stickiness()
    for stickiness in (a, b):
        watch = stickiness.watch()
        for seq in range(1, CHANGES_KEPT + 2):
            watch.saw(b"%d" % (seq % 2), seq)
    a.merge(b)
    assert (a.connections, a.changedConnections) == (2, 2)
    assert len(a.changes) == CHANGES_KEPT
    assert a.moreChanges == CHANGES_KEPT


def _report(stickiness: bool | None = True, changes: int = 0) -> dict[str, Any]:
    tally = Tally()
    tally.record(b"web1:4242 ", 412, count=5)
    tally.record(b"web2:4243 ", 398, count=5)
    watch = tally.stickiness.watch()
    watch.saw(b"web1:4242 ", 1)
    for seq in range(changes):
        watch.saw(b"web2:4243 " if seq % 2 == 0 else b"web1:4242 ", 7 + seq)
    return tally.report(stickiness=stickiness)


def test_formatTable() -> None:
    """
    The text form: a header, then one aligned row per identity, the
    identity last and quoted.
    """
    assert formatTally(_report(None)) == [
        "--- tally: 10 replies from 2 backends ---",
        "  5   50.0%  p50 0.412 ms  p99 0.412 ms  'web1:4242 '",
        "  5   50.0%  p50 0.398 ms  p99 0.398 ms  'web2:4243 '",
    ]


def test_formatAlignsCounts() -> None:
    """
    Counts of different widths are right-aligned.
    """
    tally = Tally()
    tally.record(b"a", 10, count=1000)
    tally.record(b"b", 10, count=5)
    lines = formatTally(tally.report())
    assert lines[1].startswith("  1,000   99.5%")
    assert lines[2].startswith("      5    0.5%")


def test_formatSticky() -> None:
    """
    With stickiness checked and no change: one line that says so.
    """
    assert formatTally(_report())[-1] == (
        "sticky: yes (every reply on the connection came from one backend)"
    )


def test_formatOneChange() -> None:
    """
    One change: its sequence number and both identities on one line.
    """
    assert formatTally(_report(changes=1))[-1] == (
        "sticky: no — identity changed at seq 7: 'web1:4242 ' -> 'web2:4243 '"
    )


def test_formatManyChanges() -> None:
    """
    Several changes: how many, then one line for each kept, then how many
    more.
    """
    lines = formatTally(_report(changes=CHANGES_KEPT + 2))
    assert lines[3] == (
        f"sticky: no — identity changed {CHANGES_KEPT + 2} times on 1 of 1 connection"
    )
    assert lines[4] == "  at seq 7: 'web1:4242 ' -> 'web2:4243 '"
    assert lines[-1] == "  and 2 more"
    assert len(lines) == 4 + CHANGES_KEPT + 1


def test_formatNotChecked() -> None:
    """
    Stickiness not checked: the line says what it needs.
    """
    assert formatTally(_report(False), needs="--keep-open")[-1] == (
        "sticky: not checked (it needs --keep-open: one connection, many replies)"
    )
    assert _report(False)["sticky"] is None


def test_formatNoReplies() -> None:
    """
    Stickiness asked for, but no reply to check: it says so, and C{sticky}
    is C{None}, not a yes.
    """
    report = Tally().report(stickiness=True)
    assert (report["sticky"], report["connections"]) == (None, 0)
    assert formatTally(report)[-1] == "sticky: not checked (no replies)"


def test_hostileIdentityIsEscaped() -> None:
    """
    A terminal escape, a line break or a byte that is not UTF-8 in an
    identity is shown escaped: a hostile server cannot write to the
    terminal, nor add a line.
    """
    tally = Tally()
    tally.record(b"\x1b[2J\r\nfake\xff'", 10)
    (line,) = formatTally(tally.report())[1:]
    assert line.endswith("'\\x1b[2J\\r\\nfake\\xff\\''")
    assert all(char.isprintable() for char in line)


def test_cutIdentityIsMarked() -> None:
    """
    An identity longer than L{IDENTITY_KEPT} bytes is shown by its first
    ones, marked as cut.
    """
    tally = Tally()
    identity = identityOf(b"x" * 500 + MESSAGE, MESSAGE)
    assert identity is not None
    tally.record(identity, 10)
    (backend,) = tally.report()["backends"]
    assert backend["identity"] == "x" * IDENTITY_KEPT
    assert backend["truncated"] is True
    assert formatTally(tally.report())[1].endswith("'" + "x" * IDENTITY_KEPT + "'...")
