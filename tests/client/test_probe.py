"""
Tests for the client as a probe (C{python -m sockplay.client --count N}):
the probe loop on a memory reactor whose clock the tests move, with the real
server protocol on the other end of an L{twisted.test.iosim} pump; the
command's output; and the command against a real C{twistd -n sockplay} on
loopback.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from signal import SIGINT, SIGTERM

import pytest
from support.client import REPLY, fired
from support.fakes import (
    MuteServer,
    acceptLatest,
    pumpWithHalfClose,
    refuseLatest,
)
from support.servers import (
    CLIENT,
    DEADLINE,
    LOOPBACK,
    TWISTD,
    ServerPool,
    ServerProcess,
    run,
)
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim

from sockplay.client.command import _main
from sockplay.client.options import Options
from sockplay.client.requests import ProbeResult, probe
from sockplay.server import EchoReplyFactory, ServerSettings

CONNECT = "tcp:host=127.0.0.1:port=12345"


def serverFactory(
    reactor: MemoryReactorClock, framing: str = "line", keepOpen: bool = False
) -> EchoReplyFactory:
    """
    The real server's factory, on the test's clock.
    """
    return EchoReplyFactory(ServerSettings(framing, keepOpen), clock=reactor)


class Probing:
    """
    A probe running on a memory reactor.

    @ivar reactor: the reactor, and the clock.
    @ivar done: fires (with C{None}) when the probe ends.
    @ivar reported: the results reported so far, in order.
    """

    def __init__(self, *argv: str) -> None:
        self.reactor = MemoryReactorClock()
        self.config = Options()
        self.config.parseOptions(["--connect", CONNECT, *argv])
        self.reported: list[ProbeResult] = []
        self.done = Deferred.fromCoroutine(probe(self.reactor, self.config, self.reported.append))

    @property
    def attempts(self) -> int:
        """
        How many connections the probe has asked for.
        """
        return len(self.reactor.tcpClients)

    def accept(self, server: Protocol) -> iosim.IOPump:
        """
        Connect the latest connection attempt to C{server}.
        """
        return acceptLatest(self.reactor, server)

    def refuse(self) -> None:
        """
        Refuse the latest connection attempt.
        """
        refuseLatest(self.reactor)


def test_newConnectionPerProbe() -> None:
    """
    By default each probe opens its own connection, the probes start
    C{--interval} seconds apart, and each round-trip time runs from the
    start of the probe (connect included) to the complete reply.
    """
    probing = Probing("--count", "3", "--interval", "1", "--framing", "line")
    factory = serverFactory(probing.reactor)
    for seq in (1, 2, 3):
        assert probing.attempts == seq
        pump = probing.accept(factory.buildProtocol(None))
        probing.reactor.advance(0.25)
        pumpWithHalfClose(pump)
        assert probing.reported[-1] == ProbeResult(seq, 0.25, REPLY)
        assert pump.clientIO.disconnecting
        if seq < 3:
            probing.reactor.advance(0.74)
            assert probing.attempts == seq
            probing.reactor.advance(0.01)
    assert fired(probing.done) is None and len(probing.reported) == 3


def test_slowProbeDelaysTheNext() -> None:
    """
    Probes never overlap: one that takes longer than the interval is
    followed by the next at once.
    """
    probing = Probing("--count", "2", "--interval", "1", "--framing", "line")
    pump = probing.accept(serverFactory(probing.reactor).buildProtocol(None))
    probing.reactor.advance(1.5)
    pumpWithHalfClose(pump)
    assert probing.attempts == 1
    probing.reactor.advance(0)
    assert probing.attempts == 2


def test_keepOpenUsesOneConnection() -> None:
    """
    With C{--keep-open} every probe goes over one connection, and the
    round-trip time runs from sending the message to its reply; the
    connection is closed after the last probe.
    """
    probing = Probing("--count", "3", "--interval", "1", "--framing", "int32", "--keep-open")
    server = serverFactory(probing.reactor, "int32", keepOpen=True).buildProtocol(None)
    pump = probing.accept(server)
    for seq in (1, 2, 3):
        probing.reactor.advance(0.125)
        pump.flush()
        assert probing.reported[-1] == ProbeResult(seq, 0.125, REPLY, connection=1)
        probing.reactor.advance(0.875)
    pump.flush()
    assert probing.attempts == 1
    assert pump.clientIO.disconnecting
    assert fired(probing.done) is None and len(probing.reported) == 3
    assert server.messages == 3


def test_keepOpenReconnectsAfterServerClose() -> None:
    """
    A keep-open connection that the server closed between probes (an idle
    timeout, say) is opened again by the next probe, which is not lost.
    """
    probing = Probing("--count", "2", "--interval", "1", "--framing", "line", "--keep-open")
    factory = serverFactory(probing.reactor, keepOpen=True)
    server = factory.buildProtocol(None)
    pump = probing.accept(server)
    pump.flush()
    assert server.transport is not None
    server.transport.loseConnection()
    pump.flush()
    probing.reactor.advance(1)
    assert probing.attempts == 2
    pump = probing.accept(factory.buildProtocol(None))
    pump.flush()
    probing.reactor.advance(0)
    pump.flush()
    assert fired(probing.done) is None
    assert [r.error for r in probing.reported] == [None, None]


def test_timeoutLosesOneProbe() -> None:
    """
    A probe that gets no reply within C{--timeout} is lost, with its
    reason; on a keep-open connection, which is then in an unknown state,
    the connection is aborted and the next probe opens a new one.
    """
    probing = Probing(
        "--count", "2", "--interval", "1", "--timeout", "2", "--framing", "line", "--keep-open"
    )
    pump = probing.accept(MuteServer())
    pump.flush()
    probing.reactor.advance(2)
    assert probing.reported == [
        ProbeResult(
            1,
            error=f"no reply from {CONNECT} within 2 s: is the server's framing int32, not "
            "line? try --framing int32 (it must match the server's)",
            outcome="timeout",
        ),
    ]
    assert pump.clientIO.disconnecting
    probing.reactor.advance(0)
    assert probing.attempts == 2
    pump = probing.accept(serverFactory(probing.reactor, keepOpen=True).buildProtocol(None))
    pump.flush()
    probing.reactor.advance(0)
    pump.flush()
    assert fired(probing.done) is None
    assert [(r.seq, r.reply) for r in probing.reported] == [(1, None), (2, REPLY)]


def test_refusedProbeReported() -> None:
    """
    A connection failure loses that probe only, reported by sequence
    number, and the next probe still runs.
    """
    probing = Probing("--count", "2", "--interval", "0.5", "--framing", "line")
    probing.refuse()
    probing.reactor.advance(0.5)
    pumpWithHalfClose(probing.accept(serverFactory(probing.reactor).buildProtocol(None)))
    assert probing.reported == [
        ProbeResult(1, error=f"connection refused by {CONNECT}", outcome="refused"),
        ProbeResult(2, 0.0, REPLY),
    ]


def test_badEndpointFailsBeforeProbing() -> None:
    """
    An endpoint that cannot be made is one error for the whole command, not
    one per probe.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", "foo:bar", "--count", "3"])
    reported: list[ProbeResult] = []
    d = Deferred.fromCoroutine(probe(reactor, config, reported.append))
    failure = fired(d)
    assert isinstance(failure, Failure) and "cannot parse --connect" in str(failure.value)
    assert reported == []


def test_commandExitsOneOnLoss(capsys: pytest.CaptureFixture[str]) -> None:
    """
    The command prints a line per probe as it ends, then the statistics,
    and exits 1 if any probe was lost.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", CONNECT, "--count", "2", "--interval", "0"])
    d = Deferred.fromCoroutine(_main(reactor, config))
    _, _, factory, _, _ = reactor.tcpClients[0]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
    reactor.advance(0)
    _, _, factory, _, _ = reactor.tcpClients[1]
    factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
    failure: list[Failure] = []
    d.addErrback(failure.append)
    assert failure and failure[0].check(SystemExit) and failure[0].value.code == 1
    assert capsys.readouterr().out.splitlines() == [
        f"seq=1 error=connection refused by {CONNECT}",
        f"seq=2 error=connection refused by {CONNECT}",
        f"--- {CONNECT} probe statistics ---",
        "2 sent, 0 received, 100% loss",
    ]


# Real processes on loopback.

_PROBE_LINE = re.compile(r"seq=(\d+) rtt=\d+\.\d{3} ms reply=Message received: Hello Server !")
_SUMMARY = re.compile(
    r"5 sent, 5 received, 0% loss, rtt min/avg/max/mdev = "
    r"\d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms"
)
PROBE = ["--count", "5", "--interval", "0.01", "--framing", "line"]


@pytest.fixture(scope="module")
def keepOpenLineServer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """
    C{twistd -n sockplay --keep-open --framing line} on an ephemeral
    loopback port.
    """
    pool = ServerPool(tmp_path_factory.mktemp("probe"))
    try:
        yield pool.start(TWISTD, "--keep-open", "--framing", "line")
    finally:
        pool.close()


@pytest.mark.parametrize("keepOpen", [True, False], ids=["keep-open", "new-connections"])
def test_probeAgainstTwistd(
    keepOpen: bool, keepOpenLineServer: ServerProcess, tmp_path: Path
) -> None:
    """
    C{--count 5 --interval 0.01} against a real keep-open line server: five
    replies, each with its round-trip time, in order, then the statistics,
    and exit status 0; on one connection or on one each.
    """
    extra = ["--keep-open"] if keepOpen else []
    result = run([*CLIENT, "--port", str(keepOpenLineServer.port), *PROBE, *extra], tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == 7, result.stdout
    seqs = [_PROBE_LINE.fullmatch(line) for line in lines[:5]]
    assert [int(m.group(1)) if m else None for m in seqs] == [1, 2, 3, 4, 5], result.stdout
    assert lines[5] == f"--- {LOOPBACK}:{keepOpenLineServer.port} probe statistics ---"
    assert _SUMMARY.fullmatch(lines[6]), result.stdout


def test_probeJSONAgainstTwistd(keepOpenLineServer: ServerProcess, tmp_path: Path) -> None:
    """
    C{--json} prints one JSON object with every probe and the statistics.
    """
    port = keepOpenLineServer.port
    result = run([*CLIENT, "--port", str(port), *PROBE, "--keep-open", "--json"], tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    assert [p["seq"] for p in report["probes"]] == [1, 2, 3, 4, 5]
    assert {p["reply"] for p in report["probes"]} == {REPLY.decode()}
    assert (report["sent"], report["received"], report["loss_percent"]) == (5, 5, 0.0)
    rtt = report["rtt_ms"]
    assert 0 <= rtt["min"] <= rtt["avg"] <= rtt["max"]


def test_probeLossExitsOne(tmp_path: Path) -> None:
    """
    Against a port where nothing listens every probe is lost, reported by
    sequence number, and the exit status is 1.
    """
    with socket.socket() as unused:
        unused.bind((LOOPBACK, 0))
        port = unused.getsockname()[1]
    result = run([*CLIENT, "--port", str(port), "--count", "2", "--interval", "0"], tmp_path)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [
        f"seq=1 error=connection refused by {LOOPBACK}:{port}",
        f"seq=2 error=connection refused by {LOOPBACK}:{port}",
        f"--- {LOOPBACK}:{port} probe statistics ---",
        "2 sent, 0 received, 100% loss",
    ]


# Stopped by a signal, --count 0, and replies that are not echoes.


def test_cancelKeepsResults() -> None:
    """
    Cancelling the probe (as SIGINT or SIGTERM does) between probes ends it
    with the results so far.
    """
    probing = Probing("--count", "5", "--interval", "1", "--framing", "line")
    pumpWithHalfClose(probing.accept(serverFactory(probing.reactor).buildProtocol(None)))
    probing.done.cancel()
    assert fired(probing.done) is None
    assert probing.reported == [ProbeResult(1, 0.0, REPLY)]


def test_cancelLosesProbeInFlight() -> None:
    """
    A probe still waiting for its reply when cancelled is counted as lost,
    interrupted: it was sent and not answered.
    """
    probing = Probing("--count", "5", "--framing", "line")
    pump = probing.accept(MuteServer())
    pump.flush()
    probing.done.cancel()
    assert fired(probing.done) is None
    assert probing.reported == [
        ProbeResult(1, error="interrupted before the reply", outcome="interrupted")
    ]
    assert pump.clientIO.disconnecting


def test_countZeroRunsUntilStopped() -> None:
    """
    C{--count 0} probes until stopped.
    """
    probing = Probing("--count", "0", "--interval", "1", "--framing", "line")
    factory = serverFactory(probing.reactor)
    for _ in range(20):
        pumpWithHalfClose(probing.accept(factory.buildProtocol(None)))
        probing.reactor.advance(1)
    assert probing.attempts == 21 and not probing.done.called
    probing.done.cancel()
    assert fired(probing.done) is None
    assert len(probing.reported) == 21


def test_errorReplyLosesProbe() -> None:
    """
    A reply that is not an echo of the message (here a full server's error)
    loses the probe, with the reason.
    """
    probing = Probing("--count", "1", "--framing", "line")
    factory = EchoReplyFactory(ServerSettings("line", maxConnections=1), clock=probing.reactor)
    factory.buildProtocol(None).makeConnection(StringTransport())
    pumpWithHalfClose(probing.accept(factory.buildProtocol(None)))
    assert probing.reported == [
        ProbeResult(
            1,
            error=f"{CONNECT} answered with an error instead of an echo: server busy",
            outcome="bad-reply",
        )
    ]


def test_keepOpenAgainstOneShotServer() -> None:
    """
    C{--keep-open} against a one-shot server: the second message, sent on
    the connection the server closed after its reply, is lost with a hint
    that the server is one-shot.
    """
    probing = Probing("--count", "2", "--interval", "0", "--framing", "line", "--keep-open")
    pump = probing.accept(serverFactory(probing.reactor).buildProtocol(None))
    pump.flush()
    assert probing.reported == [ProbeResult(1, 0.0, REPLY, connection=1)]
    probing.reactor.advance(0)
    # The message went out on the connection the server has half-closed;
    # the close reaches this client (not half-closeable) as a close.
    pump.serverIO.loseConnection()
    pump.flush()
    assert probing.reported[1] == ProbeResult(
        2,
        error=f"{CONNECT} closed the connection after 1 reply without answering the next "
        "message: is it a one-shot server? run it with --keep-open, or drop --keep-open here",
        outcome="closed",
    )


def stoppedCommand(*argv: str, server: Protocol) -> tuple[object, object]:
    """
    Run the command with C{argv} on a memory reactor, connected to
    C{server}; then ask the reactor to stop, as the client's SIGINT and
    SIGTERM handlers do.

    @return: what the command and the shutdown trigger fired with.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", CONNECT, *argv])
    d = Deferred.fromCoroutine(_main(reactor, config))
    pumpWithHalfClose(acceptLatest(reactor, server))
    [(stop, args, kwargs)] = reactor.triggers["before"]["shutdown"]
    stopped = stop(*args, **kwargs)
    return fired(d), fired(stopped)


def test_commandPrintsSummaryWhenStopped(capsys: pytest.CaptureFixture[str]) -> None:
    """
    When the reactor is asked to stop (the client's SIGINT and SIGTERM
    handlers ask), the command prints the statistics of what was sent, and
    exits 0 if every probe sent was answered; the shutdown waits for it.
    """
    server = serverFactory(MemoryReactorClock()).buildProtocol(None)
    assert stoppedCommand("--count", "0", "--framing", "line", server=server) == (None, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("seq=1 rtt=")
    assert out[1:] == [f"--- {CONNECT} probe statistics ---", out[2]]
    assert out[2].startswith("1 sent, 1 received, 0% loss")


def test_commandStoppedInFlightExitsOne(capsys: pytest.CaptureFixture[str]) -> None:
    """
    Stopped while a probe waits for its reply, the command counts it lost
    and exits 1, also with C{--json}, which still prints its report.
    """
    failure, _ = stoppedCommand("--count", "3", "--json", server=MuteServer())
    assert isinstance(failure, Failure) and failure.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["probes"] == [{"seq": 1, "error": "interrupted before the reply"}]
    assert (report["sent"], report["received"]) == (1, 0)


def test_requestStoppedExitsOne(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A single request stopped before its reply is one error line and exit
    status 1, not a silent 0.
    """
    failure, _ = stoppedCommand(server=MuteServer())
    assert isinstance(failure, Failure) and failure.value.code == 1
    assert capsys.readouterr() == ("", "Error: interrupted before the reply\n")


def _startProbe(port: int, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """
    Start C{--count 0} against the line server on C{port}.
    """
    process = subprocess.Popen(
        [*CLIENT, "--port", str(port), "--count", "0", "--interval", "0.05", "--framing",
         "line", *args],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    return process


@pytest.mark.parametrize("signal", [SIGINT, SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signalPrintsSummary(
    signal: int, keepOpenLineServer: ServerProcess, tmp_path: Path
) -> None:
    """
    A real C{--count 0} probe stopped by SIGINT (Ctrl-C) or SIGTERM prints
    the statistics of what it sent, and exits 0 if every probe sent was
    answered (1 if the signal came while one waited for its reply).
    """
    process = _startProbe(keepOpenLineServer.port, tmp_path, "--keep-open")
    try:
        assert process.stdout is not None
        for _ in range(3):
            assert _PROBE_LINE.fullmatch(process.stdout.readline().rstrip("\n"))
        process.send_signal(signal)
        out, err = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=DEADLINE)
    lines = out.splitlines()
    assert err == "", out
    assert lines[-2] == f"--- {LOOPBACK}:{keepOpenLineServer.port} probe statistics ---"
    sent, received = int(lines[-1].split()[0]), int(lines[-1].split()[2])
    assert sent >= 3 and received >= sent - 1, out
    assert process.returncode == (0 if received == sent else 1), out


def test_signalPrintsJSON(tmp_path: Path) -> None:
    """
    With C{--json}, a real probe stopped by SIGINT prints its JSON report.
    """
    with ServerPool(tmp_path) as pool:
        server = pool.start(TWISTD, "--framing", "line")
        process = _startProbe(server.port, tmp_path, "--json")
        try:
            # Nothing is printed before the end: wait until the server has
            # answered (a connection each).
            server.waitForLine(lambda line: "Connection closed" in line, "a probe")
            process.send_signal(SIGINT)
            out, err = process.communicate(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=DEADLINE)
    assert err == "", out
    report = json.loads(out)
    assert report["sent"] >= 1, out
    assert process.returncode == (0 if report["received"] == report["sent"] else 1), out
