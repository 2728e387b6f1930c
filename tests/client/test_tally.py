"""
Tests of the client's C{--tally}: the replies of a probe grouped by the
backend that sent them, the stickiness of a kept-open connection (each
connection on its own), and how the command prints both, as text and in
the C{--json} report. Memory reactor and fake servers only; the real
processes are in tests/integration/test_tally.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.client import HELLO, REPLY, fired
from support.fakes import acceptLatest, pumpWithHalfClose
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import IOPump

from sockplay.client.command import _main
from sockplay.client.options import Options
from sockplay.client.output import probeReport
from sockplay.client.requests import ProbeResult, probe
from sockplay.client.summary import ProbeSummary
from sockplay.server import EchoReplyFactory, ServerSettings

CONNECT = "tcp:host=127.0.0.1:port=12345"


class IdentityServer(Protocol):
    """
    A keep-open line server that answers each line with the next of its
    C{identities} in front (the last one repeated), as a server behind a
    load balancer that switched backends mid-connection would look.

    @ivar closeAfter: close the connection after this many replies, if set.
    """

    def __init__(self, *identities: bytes, closeAfter: int | None = None) -> None:
        self._identities = list(identities)
        self._buffer = b""
        self._replies = 0
        self.closeAfter = closeAfter

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            identity = self._identities[min(self._replies, len(self._identities) - 1)]
            self._replies += 1
            self.transport.write(identity + line + b"\n")
            if self._replies == self.closeAfter:
                self.transport.loseConnection()


def probing(*argv: str) -> tuple[MemoryReactorClock, Deferred[None], list[ProbeResult]]:
    """
    A probe of C{argv} (line framing, no interval) on a memory reactor.

    @return: the reactor, the probe's Deferred, and the results it has
        reported so far.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(
        ["--connect", CONNECT, "--framing", "line", "--interval", "0", *argv]
    )
    reported: list[ProbeResult] = []
    return reactor, Deferred.fromCoroutine(probe(reactor, config, reported.append)), reported


def drive(reactor: MemoryReactorClock, pump: IOPump, rounds: int = 10) -> None:
    """
    Let the probes of a kept-open connection go, one after another: move
    the bytes both ways, then the clock (the interval is 0).
    """
    for _ in range(rounds):
        pumpWithHalfClose(pump)
        reactor.advance(0)


def test_tallyCountsEchoesOnly() -> None:
    """
    The tally counts each echo under its identity, with its round-trip
    time; a lost probe and a reply that is not an echo are not counted
    (they are lost probes already).
    """
    results = [
        ProbeResult(1, 0.000412, b"web1 " + HELLO),
        ProbeResult(2, error="connection refused by 127.0.0.1:12345"),
        ProbeResult(3, 0.000398, b"web2 " + HELLO),
        ProbeResult(4, 0.001, b"not an echo"),
        ProbeResult(5, 0.000500, b"web1 " + HELLO),
    ]
    report = ProbeSummary.of(results, HELLO).tallyReport()
    assert report is not None
    assert report["replies"] == 3
    assert [(b["identity"], b["count"], b["p50_ms"], b["p99_ms"]) for b in report["backends"]] == [
        ("web1 ", 2, 0.412, 0.5),
        ("web2 ", 1, 0.398, 0.398),
    ]
    assert "sticky" not in report


def test_keepOpenStickyConnection() -> None:
    """
    With C{--keep-open}, replies all from one identity on the one
    connection: sticky.
    """
    reactor, done, results = probing("--count", "4", "--keep-open")
    drive(reactor, acceptLatest(reactor, IdentityServer(b"A ")))
    assert fired(done) is None
    report = ProbeSummary.of(results, HELLO, keepOpen=True).tallyReport()
    assert report is not None
    assert (report["sticky"], report["connections"], report["changes"]) == (True, 1, [])


def test_keepOpenChangeOfIdentity() -> None:
    """
    With C{--keep-open}, a reply from another identity on the same
    connection is a change, reported with its probe's sequence number.
    """
    reactor, done, results = probing("--count", "4", "--keep-open")
    drive(reactor, acceptLatest(reactor, IdentityServer(b"A ", b"A ", b"B ")))
    assert fired(done) is None
    assert [r.error for r in results] == [None] * 4
    report = ProbeSummary.of(results, HELLO, keepOpen=True).tallyReport()
    assert report is not None
    assert report["sticky"] is False
    assert report["changes"] == [{"seq": 3, "from": "A ", "to": "B "}]
    assert [(b["identity"], b["count"]) for b in report["backends"]] == [("A ", 2), ("B ", 2)]


def test_keepOpenEachConnectionOnItsOwn() -> None:
    """
    A probe that reconnects (the server closed the connection) checks the
    new connection on its own: another backend there is no change.
    """
    reactor, done, results = probing("--count", "2", "--keep-open")
    pumpWithHalfClose(acceptLatest(reactor, IdentityServer(b"A ", closeAfter=1)))
    reactor.advance(0)
    pumpWithHalfClose(acceptLatest(reactor, IdentityServer(b"B ")))
    assert fired(done) is None
    assert [(r.error, r.connection) for r in results] == [(None, 1), (None, 2)]
    report = ProbeSummary.of(results, HELLO, keepOpen=True).tallyReport()
    assert report is not None
    assert (report["sticky"], report["connections"]) == (True, 2)


def test_probeReportCarriesTally() -> None:
    """
    The C{--json} report has the tally as C{tally} when given one, and no
    C{tally} key otherwise.
    """
    results = [ProbeResult(1, 0.0003, REPLY)]
    summary = ProbeSummary.of(results, HELLO)
    assert probeReport(results, summary, "t")["tally"] == summary.tallyReport()
    assert "tally" not in probeReport(results, ProbeSummary.of(results), "t")


def stoppedCommand(*argv: str) -> object:
    """
    Run the command with C{argv} (C{--count 0}, line framing) against a
    real sockplay server factory with prefix C{web1 }, let it answer one
    probe, then ask the reactor to stop, as SIGINT does.

    @return: what the command fired with.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", CONNECT, "--count", "0", "--framing", "line", *argv])
    d = Deferred.fromCoroutine(_main(reactor, config))
    factory = EchoReplyFactory(ServerSettings("line", prefix=b"web1 "), clock=reactor)
    pumpWithHalfClose(acceptLatest(reactor, factory.buildProtocol(None)))
    [(stop, args, kwargs)] = reactor.triggers["before"]["shutdown"]
    stop(*args, **kwargs)
    return fired(d)


def test_commandPrintsTallyWhenStopped(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--count 0 --tally} stopped by a signal prints the tally after the
    statistics.
    """
    assert stoppedCommand("--tally") is None
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"--- {CONNECT} probe statistics ---"
    assert out[3] == "--- tally: 1 reply from 1 backend ---"
    assert out[4].startswith("  1  100.0%  p50 ")
    assert out[4].endswith(" ms  'web1 '")
    assert len(out) == 5


def test_commandPrintsTallyJSON(capsys: pytest.CaptureFixture[str]) -> None:
    """
    With C{--json}, the tally is in the report, not printed as text.
    """
    assert stoppedCommand("--tally", "--json") is None
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    tally = report["tally"]
    assert tally["replies"] == 1
    [backend] = tally["backends"]
    assert (backend["identity"], backend["count"], backend["share"]) == ("web1 ", 1, 1.0)
    assert backend["p50_ms"] <= backend["p99_ms"]


def test_commandWithoutTallyPrintsNone(capsys: pytest.CaptureFixture[str]) -> None:
    """
    Without C{--tally}, no tally: the output is as it always was.
    """
    assert stoppedCommand() is None
    assert not any("tally" in line for line in capsys.readouterr().out.splitlines())
