"""
Tests for the client's C{--retries}: the backoff and its jitter; the
command on a memory reactor whose clock the tests move, with the real
server protocol (and its fault injection) on the other end of an
L{twisted.test.iosim} pump; and the command against a real C{twistd -n
sockplay} that drops or resets connections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from random import Random
from typing import Any

import pytest
from support.fakes import MuteServer, acceptLatest, pumpWithHalfClose, refuseLatest, serverSettings
from support.servers import CLIENT, HELLO_LINE, LOOPBACK, TWISTD, ServerPool, run
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import DefaultOpenSSLContextFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim

from sockplay.certs import CertificateFiles, writeCertificates
from sockplay.client.command import _main
from sockplay.client.options import Options
from sockplay.client.requests import request
from sockplay.client.retry import Backoff, RetriesExhausted
from sockplay.server import EchoReplyFactory, ServerSettings

CONNECT = "tcp:host=127.0.0.1:port=12345"
REPLY = b"Message received: Hello Server !"
REPLY_LINE = "Response from the server: Message received: Hello Server !\n"
REFUSED = f"connection refused by {CONNECT}"

# Where the command's jitter comes from.
SEED = 2024


def jitter(delays: Sequence[float]) -> list[float]:
    """
    The waits that full jitter, seeded with L{SEED}, draws below C{delays}.
    """
    random = Random(SEED)
    return [random.uniform(0.0, delay) for delay in delays]


def retryLine(attempt: int, attempts: int, why: str, wait: float, seq: str = "") -> str:
    return f"Retrying{seq} (attempt {attempt} of {attempts}) after {why}: waiting {wait:.3f} s"


def lineServer(reactor: MemoryReactorClock, **settings: Any) -> Protocol:
    """
    The real server's protocol, in line framing, on the test's clock.
    """
    factory = EchoReplyFactory(serverSettings("line", **settings), clock=reactor)
    return factory.buildProtocol(None)


class Command:
    """
    C{python -m sockplay.client} on a memory reactor, its jitter drawn from
    C{Random(SEED)}.

    @ivar reactor: the reactor, and the clock.
    """

    def __init__(self, *argv: str, connect: str = CONNECT) -> None:
        self.reactor = MemoryReactorClock()
        config = Options()
        config.parseOptions(["--connect", connect, *argv])
        self._ended: list[object] = []
        done = Deferred.fromCoroutine(_main(self.reactor, config, Random(SEED)))
        done.addBoth(self._ended.append)

    @property
    def attempts(self) -> int:
        """
        How many connections the command has asked for.
        """
        return len(self.reactor.tcpClients)

    def refuse(self) -> None:
        refuseLatest(self.reactor)

    def accept(self, server: Protocol) -> iosim.IOPump:
        return acceptLatest(self.reactor, server)

    def exitStatus(self) -> int:
        """
        The command's exit status; it must have ended.
        """
        assert self._ended, "the command has not ended"
        ended = self._ended[0]
        if ended is None:
            return 0
        assert isinstance(ended, Failure) and ended.check(SystemExit), ended
        return int(ended.value.code)


# The backoff.


def test_backoffDoublesUpToTheCap() -> None:
    """
    The longest wait before each retry starts at the initial delay and
    doubles, up to the cap.
    """
    backoff = Backoff(0.1, 0.5, Random(SEED))
    delays = [backoff.delay(retry) for retry in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_backoffCapHoldsForManyRetries() -> None:
    """
    However many retries, the delay is the cap: the doubling does not
    overflow.
    """
    assert Backoff(0.1, 5.0, Random(SEED)).delay(5000) == 5.0


class HighestRandom(Random):
    """
    A random source that records the range of each C{uniform} draw and
    returns its top.
    """

    def __init__(self) -> None:
        super().__init__(SEED)
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b


def test_backoffFullJitter() -> None:
    """
    Each wait is one draw from 0 up to that retry's delay.
    """
    random = HighestRandom()
    backoff = Backoff(1.0, 3.0, random)
    assert [backoff.wait(retry) for retry in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert random.ranges == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]


# Which failures are retried.


# Options.


# The command on a memory reactor.


def test_retriesAfterRefused(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A refused connection is tried again, on a new connection; a request
    that succeeds on its third attempt prints its reply as usual, and exits
    0, after one line on stderr per retry.
    """
    command = Command("--framing", "line", "--retries", "3")
    waits = jitter([0.1, 0.2])
    for wait in waits:
        command.refuse()
        command.reactor.advance(wait)
    assert command.attempts == 3
    pumpWithHalfClose(command.accept(lineServer(command.reactor)))
    assert command.exitStatus() == 0
    assert capsys.readouterr() == (
        REPLY_LINE,
        retryLine(2, 4, REFUSED, waits[0]) + "\n" + retryLine(3, 4, REFUSED, waits[1]) + "\n",
    )


def test_retryWaitsOnTheReactorClock() -> None:
    """
    The next attempt comes when the wait is over on the reactor's clock,
    not before.
    """
    command = Command("--retries", "1")
    (wait,) = jitter([0.1])
    command.refuse()
    command.reactor.advance(wait / 2)
    assert command.attempts == 1
    command.reactor.advance(wait / 2)
    assert command.attempts == 2


def test_backoffDoublesUpToTheCapInCommand(capsys: pytest.CaptureFixture[str]) -> None:
    """
    The waits of the command are drawn, from the seeded source, below
    C{--backoff} doubling up to C{--backoff-max}; each next attempt comes
    after its wait.
    """
    command = Command("--retries", "4", "--backoff", "1", "--backoff-max", "2.5")
    waits = jitter([1.0, 2.0, 2.5, 2.5])
    for attempt, wait in enumerate(waits, start=1):
        assert command.attempts == attempt
        command.refuse()
        command.reactor.advance(wait)
    stderr = capsys.readouterr().err.splitlines()
    assert stderr == [
        retryLine(attempt, 5, REFUSED, wait) for attempt, wait in enumerate(waits, start=2)
    ]


def test_givesUpAfterRetries(capsys: pytest.CaptureFixture[str]) -> None:
    """
    After C{--retries} retries, the last failure is the one C{Error:} line,
    saying how many attempts were made, and the command exits 1.
    """
    command = Command("--retries", "2")
    waits = jitter([0.1, 0.2])
    for wait in waits:
        command.refuse()
        command.reactor.advance(wait)
    command.refuse()
    command.reactor.advance(60)
    assert command.attempts == 3
    assert command.exitStatus() == 1
    assert capsys.readouterr() == (
        "",
        retryLine(2, 3, REFUSED, waits[0]) + "\n"
        + retryLine(3, 3, REFUSED, waits[1]) + "\n"
        + f"Error: {REFUSED} (after 3 attempts)\n",
    )


@pytest.mark.parametrize("argv", [[], ["--retries", "0"]], ids=["default", "retries-0"])
def test_noRetriesAsBefore(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """
    Without C{--retries}, or with C{--retries 0}, a failure is reported at
    once, in the same one line as ever, and nothing is tried again.
    """
    command = Command(*argv)
    command.refuse()
    command.reactor.advance(60)
    assert command.attempts == 1
    assert command.exitStatus() == 1
    assert capsys.readouterr() == ("", f"Error: {REFUSED}\n")


def test_requestWithoutRetriesRaisesTheFailure() -> None:
    """
    Without retries, L{request} fails with the attempt's own exception.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", CONNECT])
    failures: list[Failure] = []
    Deferred.fromCoroutine(request(reactor, config)).addErrback(failures.append)
    refuseLatest(reactor)
    assert failures and failures[0].check(error.ConnectionRefusedError)


def test_requestRetriesExhausted() -> None:
    """
    With retries, L{request} fails with L{RetriesExhausted}, which holds the
    last attempt's failure and the number of attempts.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", CONNECT, "--retries", "1"])
    failures: list[Failure] = []
    Deferred.fromCoroutine(request(reactor, config)).addErrback(failures.append)
    refuseLatest(reactor)
    reactor.advance(1)
    refuseLatest(reactor)
    assert failures and failures[0].check(RetriesExhausted)
    exhausted = failures[0].value
    assert exhausted.attempts == 2 and exhausted.failure.check(error.ConnectionRefusedError)


@pytest.mark.parametrize(
    "fault, seen, why",
    [
        ({"dropRate": 1.0}, error.ConnectionDone(), "connection closed without a reply"),
        (
            {"resetRate": 1.0},
            # A reset reaches a TCP client as a lost connection.
            error.ConnectionLost(),
            f"connection reset by {CONNECT}",
        ),
    ],
    ids=["drop", "reset"],
)
def test_retriesAfterServerFault(
    fault: dict[str, float], seen: Exception, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A message that the server's fault injection answers by a close without
    a reply, or by a reset, is sent again on a new connection.
    """
    command = Command("--framing", "line", "--retries", "1")
    pump = command.accept(lineServer(command.reactor, **fault))
    pump.clientIO.disconnectReason = seen
    pumpWithHalfClose(pump)
    (wait,) = jitter([0.1])
    command.reactor.advance(wait)
    pumpWithHalfClose(command.accept(lineServer(command.reactor)))
    assert command.exitStatus() == 0
    assert capsys.readouterr() == (REPLY_LINE, retryLine(2, 2, why, wait) + "\n")


def test_timeoutBoundsEachAttempt(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--timeout} bounds each attempt, not the whole: an attempt that times
    out is aborted and retried, and the next has its own C{--timeout}.
    """
    command = Command("--framing", "line", "--timeout", "2", "--retries", "1")
    mute = command.accept(MuteServer())
    mute.flush()
    command.reactor.advance(2)
    assert mute.clientIO.disconnecting
    (wait,) = jitter([0.1])
    command.reactor.advance(wait)
    assert command.attempts == 2
    pump = command.accept(lineServer(command.reactor))
    command.reactor.advance(1.5)
    pumpWithHalfClose(pump)
    assert command.exitStatus() == 0
    why = f"no reply from {CONNECT} within 2 s"
    assert capsys.readouterr() == (REPLY_LINE, retryLine(2, 2, why, wait) + "\n")


def test_badEndpointNotRetried(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A C{--connect} endpoint that cannot be made is one error line at once:
    no attempt, no retry.
    """
    command = Command("--retries", "3", connect="foo:bar")
    command.reactor.advance(60)
    assert command.attempts == 0
    assert command.exitStatus() == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: cannot parse --connect 'foo:bar'")
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def tlsFiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateFiles, CertificateFiles]:
    """
    A CA and the server certificate it signed; and another CA.
    """
    return (
        writeCertificates(tmp_path_factory.mktemp("certs")),
        writeCertificates(tmp_path_factory.mktemp("other")),
    )


def tlsLineServer(reactor: MemoryReactorClock, files: CertificateFiles) -> Protocol:
    """
    The real server's protocol, in line framing, behind TLS with C{files}'
    server certificate.
    """
    context = DefaultOpenSSLContextFactory(str(files.serverKey), str(files.server))
    factory = TLSMemoryBIOFactory(
        context, False, EchoReplyFactory(ServerSettings("line"), clock=reactor)
    )
    return factory.buildProtocol(None)


@pytest.mark.parametrize(
    "trust, serverName, expected",
    [
        ("other", "localhost", "Error: cannot verify the TLS certificate of "),
        ("same", "wrong.example", "Error: the TLS certificate of "),
    ],
    ids=["untrusted", "wrong-name"],
)
def test_tlsVerificationFailureNotRetried(
    trust: str,
    serverName: str,
    expected: str,
    tlsFiles: tuple[CertificateFiles, CertificateFiles],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """
    A server certificate that does not verify (not signed by a CA trusted,
    or not valid for the name) would not verify on another attempt: it is
    one error line at once.
    """
    files, other = tlsFiles
    ca = other.ca if trust == "other" else files.ca
    command = Command(
        "--framing", "line", "--tls", "--ca", str(ca), "--server-name", serverName,
        "--retries", "3",
    )
    command.accept(tlsLineServer(command.reactor, files)).flush()
    command.reactor.advance(60)
    assert command.attempts == 1
    assert command.exitStatus() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(expected)
    assert len(err.splitlines()) == 1


# Probes.


def test_probeRetriedIsReceived(capsys: pytest.CaptureFixture[str]) -> None:
    """
    With C{--count}, each probe is retried on its own; one that succeeds
    after a retry is received, and its round-trip time is that of its last
    attempt (the failed attempt and the wait are not counted).
    """
    command = Command("--framing", "line", "--count", "1", "--json", "--retries", "1")
    command.refuse()
    (wait,) = jitter([0.1])
    command.reactor.advance(wait)
    pump = command.accept(lineServer(command.reactor))
    command.reactor.advance(0.25)
    pumpWithHalfClose(pump)
    assert command.exitStatus() == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["probes"] == [{"seq": 1, "rtt_ms": 250.0, "reply": REPLY.decode()}]
    assert (report["sent"], report["received"]) == (1, 1)
    assert err == retryLine(2, 2, REFUSED, wait, seq=" seq=1") + "\n"


def test_probeLostAfterRetries(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A probe whose every attempt fails is lost, its error saying how many
    attempts were made; the next probe has its own retries.
    """
    command = Command("--count", "2", "--interval", "0", "--retries", "1")
    waits = jitter([0.1, 0.1])
    command.refuse()
    command.reactor.advance(waits[0])
    command.refuse()
    command.reactor.advance(0)
    assert command.attempts == 3
    command.refuse()
    command.reactor.advance(waits[1])
    command.refuse()
    assert command.exitStatus() == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [
        f"seq=1 error={REFUSED} (after 2 attempts)",
        f"seq=2 error={REFUSED} (after 2 attempts)",
    ]
    assert err.splitlines() == [
        retryLine(2, 2, REFUSED, waits[0], seq=" seq=1"),
        retryLine(2, 2, REFUSED, waits[1], seq=" seq=2"),
    ]


def test_probeKeepOpenRetriesOnNewConnection(capsys: pytest.CaptureFixture[str]) -> None:
    """
    With C{--keep-open}, a message that the server drops is retried on a
    new connection, which the next probes then use.
    """
    command = Command(
        "--framing", "line", "--count", "2", "--interval", "1", "--keep-open", "--retries", "1"
    )
    pumpWithHalfClose(command.accept(lineServer(command.reactor, keepOpen=True, dropRate=1.0)))
    (wait,) = jitter([0.1])
    command.reactor.advance(wait)
    assert command.attempts == 2
    pump = command.accept(lineServer(command.reactor, keepOpen=True))
    pump.flush()
    command.reactor.advance(1)
    pump.flush()
    assert command.attempts == 2
    assert command.exitStatus() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" rtt=")[0] for line in lines[:2]] == ["seq=1", "seq=2"]


# Real processes on loopback.

_RETRY = re.compile(r"Retrying \(attempt (\d+) of (\d+)\) after (.+): waiting \d+\.\d{3} s")


def test_retriesThroughDroppedConnections(tmp_path: Path) -> None:
    """
    Against a real server that drops half the messages without a reply,
    C{--retries 20} gets the reply in the end (all 21 attempts are dropped
    once in two million runs): exit status 0, the usual one line on stdout,
    and one line on stderr per retry, numbered from 2.
    """
    with ServerPool(tmp_path) as pool:
        server = pool.start(TWISTD, "--framing", "line", "--keep-open", "--drop-rate", "0.5")
        # The cap keeps the worst case well within the command's deadline.
        result = run(
            [*CLIENT, "--port", str(server.port), "--framing", "line", "--retries", "20",
             "--backoff", "0.01", "--backoff-max", "0.1"],
            tmp_path,
        )
    assert (result.returncode, result.stdout) == (0, HELLO_LINE.decode()), result.stderr
    retries = [_RETRY.fullmatch(line) for line in result.stderr.splitlines()]
    assert [
        (m.group(1, 2, 3) if m else None) for m in retries
    ] == [
        (str(attempt), "21", "connection closed without a reply")
        for attempt in range(2, 2 + len(retries))
    ], result.stderr


def test_givesUpAgainstResets(tmp_path: Path) -> None:
    """
    Against a real server that resets every connection, C{--retries 3}
    makes exactly four attempts (the server sees four connections, each
    reset), reports three retries, then one C{Error:} line, and exits 1.
    """
    with ServerPool(tmp_path) as pool:
        server = pool.start(TWISTD, "--framing", "line", "--keep-open", "--reset-rate", "1")
        result = run(
            [*CLIENT, "--port", str(server.port), "--framing", "line", "--retries", "3",
             "--backoff", "0.01"],
            tmp_path,
        )
        for _ in range(4):
            server.waitForLine(lambda line: ", reset-injected, " in line, "a reset connection")
    assert (result.returncode, result.stdout) == (1, "")
    *retries, last = result.stderr.splitlines()
    matches = [_RETRY.fullmatch(line) for line in retries]
    assert [(m.group(1, 2) if m else None) for m in matches] == [
        ("2", "4"), ("3", "4"), ("4", "4")
    ], result.stderr
    why = {m.group(3) for m in matches if m}
    assert why == {f"connection reset by {LOOPBACK}:{server.port}"}, result.stderr
    assert last == f"Error: {why.pop()} (after 4 attempts)"
