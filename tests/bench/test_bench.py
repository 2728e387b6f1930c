"""
Tests for the load generator, C{python -m sockplay.bench}, and the
comparison script that uses it, C{benchmarks/compare.py}.

The accounting and the checking of replies are tested without real time:
requests and replies go through a local socket pair and the worker's clock
is a fake. A few tests then run the generator against real C{twistd}
servers on loopback.
"""

from __future__ import annotations

import io
import json
import random
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.servers import DEADLINE, LOOPBACK, SOCKET_TIMEOUT, TWISTD, ServerPool
from twisted.python import usage

from sockplay.bench.check import (
    ERROR_KINDS,
    Exchange,
    ReplyChecker,
    ReplyError,
    makeExchange,
)
from sockplay.bench.command import BenchError, Options, Progress, makePlans, parseEndpoint
from sockplay.bench.loop import READ_SIZE, Plan, Worker, _Connection
from sockplay.bench.stats import Results, formatSummary

PREFIX = b"Message received: "
BENCH = [sys.executable, "-m", "sockplay.bench"]
COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"


def parse(*argv: str) -> Options:
    """
    Parse bench options as the command line would.
    """
    config = Options()  # type: ignore[no-untyped-call]
    config.parseOptions(list(argv))  # type: ignore[no-untyped-call]
    return config


class FakeClock:
    """
    A monotonic clock in nanoseconds that moves only when told to.
    """

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeSeconds:
    """
    A monotonic clock in seconds that moves only when told to.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakePoller:
    """
    Stands in for epoll: the tests tell the worker when to read.
    """

    def register(self, fd: int, mask: int) -> None:
        pass

    def modify(self, fd: int, mask: int) -> None:
        pass

    def unregister(self, fd: int) -> None:
        pass

    def close(self) -> None:
        pass


class Conversation:
    """
    A worker with one connection, already made, to a fake server at the
    other end of a socket pair.

    @ivar worker: the worker, whose clock is L{clock}.
    @ivar connection: its connection.
    @ivar server: the server's end.
    """

    def __init__(self, plan: Plan) -> None:
        self.clock = FakeClock()
        self.worker = Worker(plan, clock=self.clock)
        self.worker._poller = FakePoller()
        ours, self.server = socket.socketpair()
        ours.setblocking(False)
        self.server.settimeout(SOCKET_TIMEOUT)
        checker = ReplyChecker(plan.exchange.reply, READ_SIZE)
        self.connection = _Connection(ours, checker, self.clock())
        self.worker._connections[self.connection.fd] = self.connection
        self.worker._connecting += 1
        # As when epoll reports the connection made: the first requests go.
        self.worker._connectDone(self.connection)

    def received(self, size: int) -> bytes:
        """
        What the server end got: exactly C{size} bytes.
        """
        data = b""
        while len(data) < size:
            chunk = self.server.recv(size - len(data))
            assert chunk, f"only {data!r} arrived"
            data += chunk
        return data

    def readAll(self) -> None:
        """
        Let the worker read until the connection is closed or nothing is
        left (at most a few reads: the data is all there).
        """
        for _ in range(10):
            if self.connection.closed:
                return
            self.worker._readable(self.connection)

    def close(self) -> None:
        self.server.close()
        self.connection.sock.close()


@pytest.fixture
def conversations() -> Any:
    """
    Make L{Conversation}s and close them after the test.
    """
    made: list[Conversation] = []

    def make(plan: Plan) -> Conversation:
        conversation = Conversation(plan)
        made.append(conversation)
        return conversation

    yield make
    for conversation in made:
        conversation.close()


def localPlan(framing: str = "line", **overrides: Any) -> Plan:
    """
    A plan for a worker whose connection is a local socket pair.
    """
    return Plan(
        family=socket.AF_UNIX,
        address="",
        exchange=makeExchange(framing, b"hi", PREFIX),
        **overrides,
    )


# What goes on the wire


def test_lineExchange() -> None:
    """
    In line framing a request is the message and LF, and its reply the
    prefix, the message and LF.
    """
    assert makeExchange("line", b"hi", PREFIX) == Exchange(
        "line", b"hi\n", b"Message received: hi\n", False
    )


def test_int32Exchange() -> None:
    """
    In int32 framing the request and the reply each carry their own
    big-endian length.
    """
    exchange = makeExchange("int32", b"hi", PREFIX)
    assert (exchange.request, exchange.reply) == (
        b"\x00\x00\x00\x02hi",
        b"\x00\x00\x00\x14Message received: hi",
    )


@pytest.mark.parametrize("framing, halfClose", [("raw", False), ("eof", True)])
def test_unframedExchange(framing: str, halfClose: bool) -> None:
    """
    In raw and eof framing nothing frames the message; in eof the request
    ends with a half-close.
    """
    assert makeExchange(framing, b"hi", PREFIX) == Exchange(
        framing, b"hi", b"Message received: hi", halfClose
    )


# Checking replies


def test_repliesSplitAcrossReads() -> None:
    """
    Replies count as they complete, however the reads split them.
    """
    reply = b"Message received: hi\n"
    checker = ReplyChecker(reply, READ_SIZE)
    checker.expect(3)
    stream = reply * 3
    counts = [checker.feed(stream[start:stop]) for start, stop in
              [(0, 5), (5, 21), (21, 50), (50, 63)]]
    assert (counts, checker.owed, checker.offset) == ([0, 1, 1, 1], 0, 0)


def test_mismatchIsAnError() -> None:
    """
    A reply byte that differs from the expected one is a C{mismatch}, and
    the error shows the expected and the received reply.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"Message received: ho\n")
    assert (caught.value.kind, caught.value.done) == ("mismatch", 0)
    assert caught.value.detail == (
        "byte 19 of a reply: expected b'Message received: hi\\n', "
        "received b'Message received: ho\\n'"
    )


def test_mismatchAfterGoodReplies() -> None:
    """
    When a later reply in the same read differs, the replies before it
    still count as right, and the error shows the one that differs from its
    first byte.
    """
    reply = b"Message received: hi\n"
    checker = ReplyChecker(reply, READ_SIZE)
    checker.expect(3)
    with pytest.raises(ReplyError) as caught:
        checker.feed(reply + b"Other: hi\n")
    assert (caught.value.kind, caught.value.done, checker.owed) == ("mismatch", 1, 2)
    assert caught.value.detail is not None
    assert "received b'Other: hi\\n" in caught.value.detail


def test_mismatchInsideAReplyBegunEarlier() -> None:
    """
    A reply that began in an earlier read and goes wrong in this one is
    shown whole.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    checker.feed(b"Message ")
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"accepted: hi\n")
    assert caught.value.detail is not None
    assert "byte 8 of a reply" in caught.value.detail
    assert "received b'Message accepted: hi\\n'" in caught.value.detail


def test_extraBytesAreAnError() -> None:
    """
    Bytes past the replies owed are C{extra}; the replies before them
    count.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    with pytest.raises(ReplyError) as caught:
        checker.feed(b"Message received: hi\n!")
    assert (caught.value.kind, caught.value.done) == ("extra", 1)


def test_closeWithRepliesOwedIsEarly() -> None:
    """
    The end of input while a reply is owed is an C{early-close}.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(2)
    checker.feed(b"Message received: hi\nMess")
    with pytest.raises(ReplyError) as caught:
        checker.endOfInput()
    assert caught.value.kind == "early-close"


def test_closeWithNothingOwedIsClean() -> None:
    """
    The end of input after every reply owed is no error.
    """
    checker = ReplyChecker(b"Message received: hi\n", READ_SIZE)
    checker.expect(1)
    checker.feed(b"Message received: hi\n")
    checker.endOfInput()


# The worker's accounting


def test_workerCountsMismatchByKind(conversations: Any) -> None:
    """
    On a keep-open connection with three requests in flight, a right reply
    counts as ok with its latency, a wrong one as one C{mismatch}, and the
    request behind it as unanswered; the connection is closed.
    """
    conversation = conversations(localPlan(pipeline=3, requests=3))
    assert conversation.received(9) == b"hi\nhi\nhi\n"
    conversation.clock.now = 2_500_000
    conversation.server.sendall(b"Message received: hi\nOther: hi\n")
    conversation.readAll()
    worker = conversation.worker
    results = worker.results
    assert (results.requests, results.ok, results.unanswered) == (3, 1, 1)
    assert {kind: n for kind, n in results.errors.items() if n} == {"mismatch": 1}
    assert results.firstMismatch is not None and "Other: hi" in results.firstMismatch
    assert worker._latencies == {2500: 1}
    assert conversation.connection.closed


def test_workerSendsNextRequestOnReply(conversations: Any) -> None:
    """
    Closed loop, each reply lets the next request go, until the requests
    run out.
    """
    conversation = conversations(localPlan(pipeline=1, requests=2))
    assert conversation.received(3) == b"hi\n"
    conversation.server.sendall(b"Message received: hi\n")
    conversation.worker._readable(conversation.connection)
    assert conversation.received(3) == b"hi\n"
    conversation.server.sendall(b"Message received: hi\n")
    conversation.worker._readable(conversation.connection)
    results = conversation.worker.results
    assert (results.requests, results.ok, results.errorCount) == (2, 2, 0)


def test_workerCountsEarlyClose(conversations: Any) -> None:
    """
    A keep-open connection that the server closes in the middle of a reply
    counts one C{early-close}.
    """
    conversation = conversations(localPlan(requests=1))
    conversation.received(3)
    conversation.server.sendall(b"Message rec")
    conversation.server.close()
    conversation.readAll()
    results = conversation.worker.results
    assert (results.ok, {k: n for k, n in results.errors.items() if n}) == (
        0,
        {"early-close": 1},
    )


def test_workerOneShotEndsAtClose(conversations: Any) -> None:
    """
    A one-shot exchange counts as ok when the server closes after the
    whole reply, and its latency runs from the start to the close.
    """
    conversation = conversations(localPlan("raw", mode="one-shot", requests=1))
    assert conversation.received(2) == b"hi"
    conversation.clock.now = 1_000_000
    conversation.server.sendall(b"Message received: hi")
    conversation.worker._readable(conversation.connection)
    assert conversation.worker.results.ok == 0
    conversation.clock.now = 3_000_000
    conversation.server.shutdown(socket.SHUT_WR)
    conversation.readAll()
    worker = conversation.worker
    assert (worker.results.ok, worker.results.errorCount, worker._latencies) == (1, 0, {3000: 1})


def test_workerOneShotCloseBeforeReply(conversations: Any) -> None:
    """
    A one-shot server that closes before the whole reply is an
    C{early-close}, and the exchange does not count as ok.
    """
    conversation = conversations(localPlan("raw", mode="one-shot", requests=1))
    conversation.received(2)
    conversation.server.sendall(b"Message received: ")
    conversation.server.shutdown(socket.SHUT_WR)
    conversation.readAll()
    results = conversation.worker.results
    assert (results.ok, results.errors["early-close"]) == (0, 1)


def test_workerIdleCloseIsEarly(conversations: Any) -> None:
    """
    A keep-open server that closes an idle connection in the middle of a
    run counts as an C{early-close} too.
    """
    conversation = conversations(localPlan(requests=1))
    conversation.received(3)
    conversation.server.sendall(b"Message received: hi\n")
    conversation.worker._readable(conversation.connection)
    conversation.server.close()
    conversation.readAll()
    results = conversation.worker.results
    assert (results.ok, results.errors["early-close"]) == (1, 1)


# Results


def resultsWith(latencies: list[int]) -> Results:
    """
    Results of as many verified replies as C{latencies} (microseconds).
    """
    results = Results()
    results.ok = results.requests = len(latencies)
    results.addLatencies(dict(Counter(latencies)))
    return results


def test_errorsCountedByKind() -> None:
    """
    Errors are counted per kind, and any error makes the run a failure.
    """
    results = resultsWith([100])
    assert not results.failed
    results.addError("mismatch", "first")
    results.addError("mismatch", "second")
    results.addError("connect")
    assert {kind: n for kind, n in results.errors.items() if n} == {"mismatch": 2, "connect": 1}
    assert (results.errorCount, results.firstMismatch, results.failed) == (3, "first", True)


def test_mergedHistogramsExact() -> None:
    """
    Results merged from several processes, each encoded and decoded as it
    travels, hold exactly the histogram of all their latencies together.
    """
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(7, 1.5)) + 1 for _ in range(6000)]
    merged = Results(processes=0)
    for part in (latencies[0::3], latencies[1::3], latencies[2::3]):
        wire = json.loads(json.dumps(resultsWith(part).toWire()))
        merged.merge(Results.fromWire(wire))
    whole = resultsWith(latencies)
    counts = range(whole.histogram.counts_len)
    assert [merged.histogram.get_count_at_index(i) for i in counts] == [
        whole.histogram.get_count_at_index(i) for i in counts
    ]
    assert (merged.ok, merged.processes) == (6000, 3)
    assert merged.latencies() == whole.latencies()
    assert (merged.minimum, merged.maximum) == (min(latencies), max(latencies))


def test_mergeAddsCountsAndKeepsLongestElapsed() -> None:
    """
    Merging adds counts, errors and CPU time; the run lasted as long as its
    longest process.
    """
    first, second = resultsWith([10, 20]), resultsWith([30])
    first.elapsed, second.elapsed = 2.0, 3.0
    first.cpuSeconds, second.cpuSeconds = 1.0, 0.5
    second.addError("reset")
    second.unanswered = 4
    first.merge(second)
    assert (first.ok, first.errors["reset"], first.unanswered) == (3, 1, 4)
    assert (first.elapsed, first.cpuSeconds, first.processes) == (3.0, 1.5, 2)


RUN = {
    "target": "127.0.0.1:12345",
    "framing": "line",
    "mode": "keep-open",
    "connections": 50,
    "pipeline": 1,
    "processes": 1,
    "rate": None,
    "messageSize": 14,
}


def test_summaryShape() -> None:
    """
    The JSON summary has the run's shape, the counts, every error kind,
    the rate and the latency percentiles in microseconds.
    """
    results = resultsWith([100, 200, 300, 400])
    results.elapsed = 2.0
    results.cpuSeconds = 0.5
    summary = json.loads(json.dumps(results.summary(RUN)))
    assert list(summary) == [
        *RUN,
        "elapsed", "requests", "ok", "errors", "errorCount", "unanswered",
        "repliesPerSecond", "latencyMicroseconds", "cpu", "firstMismatch", "stopped",
    ]
    assert summary["errors"] == dict.fromkeys(ERROR_KINDS, 0)
    assert (summary["requests"], summary["ok"], summary["repliesPerSecond"]) == (4, 4, 2.0)
    assert summary["latencyMicroseconds"] == {
        "min": 100, "p50": 200, "p90": 400, "p99": 400, "p99.9": 400, "max": 400, "mean": 250,
    }
    assert summary["cpu"] == {"seconds": 0.5, "percentOfOneCore": 25.0, "processes": 1}


def test_summaryWithoutReplies() -> None:
    """
    A run without a single reply has no latencies and a rate of 0.
    """
    results = Results()
    results.addError("connect")
    results.elapsed = 1.0
    summary = results.summary(RUN)
    assert (summary["latencyMicroseconds"], summary["repliesPerSecond"]) == (None, 0.0)


def test_textSummaryShowsErrors() -> None:
    """
    The text summary lists the errors by kind and the first mismatch.
    """
    results = resultsWith([1500])
    results.elapsed = 1.0
    results.addError("mismatch", "byte 0 of a reply: ...")
    results.addError("early-close")
    lines = formatSummary(results.summary(RUN)).splitlines()
    assert "  errors      early-close 1, mismatch 1" in lines
    assert "  mismatch    byte 0 of a reply: ..." in lines
    assert lines[4].startswith("  latency ms  min 1.500  p50 1.500")


# Options


def test_defaultOptions() -> None:
    """
    By default: 127.0.0.1:12345, raw framing, the tutorial's message and
    prefix, 50 keep-open connections, one request in flight, 10 seconds,
    and a deadline 10 seconds later.
    """
    config = parse()
    assert (config["host"], config["port"], config["framing"]) == ("127.0.0.1", 12345, "raw")
    assert (config["message"], config["prefix"]) == (b"Hello Server !", PREFIX)
    assert (config["connections"], config["pipeline"], config.mode) == (50, 1, "keep-open")
    assert (config["duration"], config["requests"], config["deadline"]) == (10.0, None, 20.0)
    assert (config["rate"], config["processes"], config["max-errors"]) == (None, 1, 1000)


def test_requestsInsteadOfDuration() -> None:
    """
    With C{--requests} there is no duration, and a longer deadline.
    """
    config = parse("--requests", "500", "--framing", "int32", "--pipeline", "8")
    assert (config["requests"], config["duration"], config["deadline"]) == (500, None, 120.0)


def test_messageSize() -> None:
    """
    C{--message-size} makes a message of that many printable bytes, never a
    line delimiter.
    """
    config = parse("--framing", "line", "--message-size", "300")
    message = config["message"]
    assert len(message) == 300
    assert all(33 <= byte < 127 for byte in message)


def test_oneShotAndHoldModes() -> None:
    """
    C{--one-shot} and C{--hold} select their modes.
    """
    assert parse("--one-shot").mode == "one-shot"
    held = parse("--hold", "3", "--connections", "100")
    assert (held.mode, held["hold"], held["duration"], held["deadline"]) == (
        "hold", 3.0, None, 123.0,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--duration", "5", "--requests", "9"], "--duration and --requests"),
        (["--message", "x", "--message-size", "9"], "--message and --message-size"),
        (["--framing", "eof"], "--framing eof needs --one-shot"),
        (["--pipeline", "4"], "--pipeline needs line or int32 framing"),
        (["--one-shot", "--framing", "line", "--pipeline", "4"], "--pipeline cannot be used"),
        (["--framing", "line", "--message", "a\nb"], "cannot contain LF"),
        (["--message", ""], "an empty message"),
        (["--hold", "1", "--rate", "10"], "--hold cannot be used with --rate"),
        (["--connections", "2", "--processes", "3"], "--processes cannot be more"),
        (["--connections", "0"], "--connections must be a whole number of at least 1"),
        (["--rate", "-5"], "--rate must be a positive number"),
        (["--port", "70000"], "--port must be a whole number from 1 to 65535"),
        (["--framing", "xml"], "--framing must be one of"),
    ],
)
def test_badOptions(argv: list[str], message: str) -> None:
    """
    Options that cannot work together, or values out of range, are usage
    errors that say why.
    """
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:host=127.0.0.1:port=8000", (socket.AF_INET, ("127.0.0.1", 8000))),
        ("tcp:127.0.0.1:8000", (socket.AF_INET, ("127.0.0.1", 8000))),
        ("tcp:127.0.0.1:8000:timeout=5", (socket.AF_INET, ("127.0.0.1", 8000))),
        ("tcp6:host=\\:\\:1:port=8000", (socket.AF_INET6, ("::1", 8000, 0, 0))),
        ("unix:path=/run/sockplay.sock", (socket.AF_UNIX, "/run/sockplay.sock")),
        ("unix:/run/sockplay.sock", (socket.AF_UNIX, "/run/sockplay.sock")),
    ],
)
def test_parseEndpoint(description: str, expected: tuple[int, Any]) -> None:
    """
    C{--connect} takes Twisted's tcp, tcp6 and unix client endpoint strings,
    positional or named arguments, escaped colons included.
    """
    assert parseEndpoint(description) == expected


@pytest.mark.parametrize(
    "description, message",
    [
        ("ssl:host=a:port=1", "supports tcp:, tcp6: and unix:"),
        ("tcp:host=127.0.0.1", "no port"),
        ("tcp:host=127.0.0.1:port=http", "bad port 'http'"),
        ("tcp:host=127.0.0.1:port=1:bindAddress=x", "unexpected 'bindAddress=x'"),
    ],
)
def test_badEndpoint(description: str, message: str) -> None:
    """
    Endpoints the generator cannot use are refused with a one-line reason.
    """
    with pytest.raises(BenchError) as caught:
        parseEndpoint(description)
    assert message in str(caught.value)


def test_plansSplitTheLoad() -> None:
    """
    Over several processes, connections and requests split as evenly as
    they divide, and the rate evenly.
    """
    config = parse("--connections", "5", "--requests", "101", "--rate", "1000",
                   "--processes", "2", "--framing", "line")
    plans = makePlans(config, socket.AF_INET, ("127.0.0.1", 1))
    shares = [(p.connections, p.requests, p.rate) for p in plans]
    assert shares == [(3, 51, 500.0), (2, 50, 500.0)]


# The progress line


def test_progressRedrawnOnATerminal() -> None:
    """
    On a terminal the progress line is redrawn in place, once a second.
    """
    clock = FakeSeconds()
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, tty=True)
    clock.now = 0.5
    progress.update(1000, 0)
    assert stream.getvalue() == ""
    clock.now = 1.0
    progress.update(2000, 1)
    line = stream.getvalue()
    assert line.startswith("\r") and "\n" not in line
    assert "2,000 ok" in line and "2,000/s" in line and "1 errors" in line
    progress.finish()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progressLinesInALog() -> None:
    """
    Elsewhere (a pipe, a log) it is a plain line every few seconds.
    """
    clock = FakeSeconds()
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, tty=False)
    for second in range(1, 11):
        clock.now = second
        progress.update(second * 100, 0)
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) == 2
    assert all(line.endswith("\n") and "\r" not in line for line in lines)


# Against real servers


def runBench(*argv: str, cwd: Path) -> tuple[int, dict[str, Any], str]:
    """
    Run the generator with C{--json --quiet}: its exit status, summary and
    standard error.
    """
    result = subprocess.run(
        [*BENCH, "--json", "--quiet", *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    return result.returncode, json.loads(result.stdout), result.stderr


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    """
    Real sockplay servers for one test.
    """
    with ServerPool(tmp_path) as pool:
        yield pool


def test_benchAgainstSockplay(servers: ServerPool, tmp_path: Path) -> None:
    """
    Against C{twistd -n sockplay --keep-open --framing line}, 200 requests
    over 4 connections all get the right reply, and the run exits 0.
    """
    server = servers.start(TWISTD, "--keep-open", "--framing", "line")
    status, summary, stderr = runBench(
        "--port", str(server.port), "--framing", "line", "--requests", "200",
        "--connections", "4", cwd=tmp_path,
    )
    assert (status, stderr) == (0, "")
    assert (summary["requests"], summary["ok"], summary["errorCount"]) == (200, 200, 0)
    assert summary["latencyMicroseconds"]["max"] > 0


def test_benchCountsMismatches(servers: ServerPool, tmp_path: Path) -> None:
    """
    Against a server with another prefix, every reply is a mismatch, the
    summary shows the first, and the run exits 1 with one error line.
    """
    server = servers.start(TWISTD, "--keep-open", "--framing", "line", "--prefix", "Got: ")
    status, summary, stderr = runBench(
        "--port", str(server.port), "--framing", "line", "--requests", "200",
        "--connections", "4", cwd=tmp_path,
    )
    assert (status, summary["ok"], summary["errors"]["mismatch"]) == (1, 0, 200)
    assert "received b'Got: Hello Server !\\n" in summary["firstMismatch"]
    assert stderr == "Error: 200 mismatch\n"


def test_benchOneShotOverProcesses(servers: ServerPool, tmp_path: Path) -> None:
    """
    One-shot exchanges spread over two processes add up exactly.
    """
    server = servers.start(TWISTD)
    status, summary, stderr = runBench(
        "--port", str(server.port), "--one-shot", "--requests", "100", "--connections", "4",
        "--processes", "2", cwd=tmp_path,
    )
    assert (status, stderr) == (0, "")
    assert (summary["ok"], summary["errorCount"], summary["cpu"]["processes"]) == (100, 0, 2)


def test_benchHoldsConnections(servers: ServerPool, tmp_path: Path) -> None:
    """
    With C{--hold}, every connection makes one exchange, then all are held
    open; the generator says so on stderr when holding starts.
    """
    server = servers.start(TWISTD, "--keep-open", "--framing", "line")
    result = subprocess.run(
        [*BENCH, "--json", "--port", str(server.port), "--framing", "line",
         "--connections", "20", "--hold", "0.1"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=DEADLINE * 3, check=False,
    )
    summary = json.loads(result.stdout)
    assert (result.returncode, summary["mode"], summary["ok"], summary["errorCount"]) == (
        0, "hold", 20, 0,
    )
    assert "holding 20 connections open for 0.1 s\n" in result.stderr


def test_benchOpenLoop(servers: ServerPool, tmp_path: Path) -> None:
    """
    With C{--rate}, requests go out at that rate and every one is answered.
    """
    server = servers.start(TWISTD, "--keep-open", "--framing", "int32")
    status, summary, _ = runBench(
        "--port", str(server.port), "--framing", "int32", "--rate", "400",
        "--duration", "0.5", "--connections", "4", cwd=tmp_path,
    )
    assert (status, summary["rate"], summary["errorCount"]) == (0, 400.0, 0)
    assert 0 < summary["requests"] == summary["ok"] <= 201


def test_benchConnectionRefused(tmp_path: Path) -> None:
    """
    Refused connections are C{connect} errors; the run stops at
    C{--max-errors} and exits 1.
    """
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    status, summary, _ = runBench(
        "--port", str(port), "--requests", "100", "--max-errors", "5", cwd=tmp_path,
    )
    assert (status, summary["ok"], summary["stopped"]) == (1, 0, "max-errors")
    assert summary["errors"]["connect"] >= 5


def test_benchUsageError(tmp_path: Path) -> None:
    """
    A bad option is one error line and exit status 2.
    """
    result = subprocess.run(
        [*BENCH, "--pipeline", "0"], cwd=tmp_path, capture_output=True, text=True,
        timeout=DEADLINE, check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr


def test_compareSmoke(tmp_path: Path) -> None:
    """
    C{benchmarks/compare.py --smoke} runs every scenario against every
    server briefly, exits 0, and writes its report where it is told.
    """
    result = subprocess.run(
        [sys.executable, str(COMPARE), "--smoke", "--output", str(tmp_path)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "benchmarks.md").read_text()
    for row in ("| keep-open line, 50 connections, 1 in flight | sockplay |",
                "| one-shot raw, 20 concurrent | blocking |",
                "| sockplay | 200 |"):
        assert row in report

