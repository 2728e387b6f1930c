"""
Tests of C{benchmarks/loadgen.c}, the C load generator of
C{benchmarks/compare.py}, against fake servers on ephemeral loopback ports
that answer right, or wrong in one chosen way, and of how compare.py
chooses its load generator and judges issue 11's targets.

The C generator needs a C compiler; CI has one, so these tests do not skip
without it: they fail, saying so.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.comparison import loadCompare
from support.servers import DEADLINE, LOOPBACK, PREFIX, SOCKET_TIMEOUT

MESSAGE = b"Hello Server !"
REPLY = PREFIX + MESSAGE

# What a fake server sends for the nth reply (counted from 1 over every
# connection) to the request it got: the right reply, framed, or not.
Answer = Callable[[int, bytes], bytes]


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The C load generator, compiled as compare.py compiles it.
    """
    assert shutil.which("cc"), "the C load generator's tests need a C compiler (cc)"
    compare = loadCompare()
    load, fallback = compare.chooseLoad("c", tmp_path_factory.mktemp("loadgen"))
    assert (load.name, fallback) == ("c", None)
    return Path(load.command[0])


class FakeServer:
    """
    A blocking server on an ephemeral loopback port, with a thread per
    connection: in line framing, keep-open, it answers each line; in raw
    framing, one-shot, it answers the one read, then closes. C{answer}
    writes each reply.
    """

    def __init__(self, answer: Answer, keepOpen: bool) -> None:
        self._answer = answer
        self._keepOpen = keepOpen
        self._replies = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.settimeout(SOCKET_TIMEOUT)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _reply(self, request: bytes) -> bytes:
        with self._lock:
            self._replies += 1
            return self._answer(self._replies, request)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._converse, args=(connection,), daemon=True).start()

    def _converse(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(SOCKET_TIMEOUT)
            try:
                if self._keepOpen:
                    self._lines(connection)
                else:
                    connection.sendall(self._reply(connection.recv(1024)))
            except OSError:
                pass  # the generator closed on a wrong reply

    def _lines(self, connection: socket.socket) -> None:
        buffered = b""
        while chunk := connection.recv(65536):
            *lines, buffered = (buffered + chunk).split(b"\n")
            connection.sendall(b"".join(self._reply(line) for line in lines))

    def stop(self) -> None:
        self._stopped.set()
        # On Linux, shutting a listening socket down wakes its accept();
        # closing it would not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=DEADLINE)
        assert not self._thread.is_alive(), "fake server still accepting"


@pytest.fixture
def fakeServer() -> Iterator[Callable[[Answer, bool], FakeServer]]:
    """
    Start L{FakeServer}s, stopped after the test.
    """
    started: list[FakeServer] = []

    def start(answer: Answer, keepOpen: bool) -> FakeServer:
        server = FakeServer(answer, keepOpen)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def runLoadgen(loadgen: Path, port: int, *options: str) -> tuple[int, dict[str, Any], str]:
    """
    Run the C generator: its exit status, JSON summary and standard error.
    """
    result = subprocess.run(
        [str(loadgen), "--port", str(port), "--timeout", "5", *options],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DEADLINE * 3,
        check=False,
    )
    return result.returncode, json.loads(result.stdout), result.stderr


def lineReply(number: int, line: bytes) -> bytes:
    return PREFIX + line + b"\n"


def test_keepOpenCountsEveryRightReply(loadgen: Path, fakeServer: Any) -> None:
    """
    Keep-open, in line framing, with requests pipelined over several
    connections: every right reply is counted, none is an error, and the
    run exits 0.
    """
    server = fakeServer(lineReply, True)
    status, summary, stderr = runLoadgen(
        loadgen, server.port, "--keep-open", "--framing", "line", "--connections", "3",
        "--pipeline", "4", "--requests", "60",
    )
    assert (status, stderr) == (0, "")
    assert (summary["requests"], summary["ok"], summary["errorCount"], summary["unanswered"]) \
        == (60, 60, 0, 0)
    assert summary["mode"] == "keep-open" and summary["repliesPerSecond"] > 0
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["max"]


@pytest.mark.parametrize("position", [0, len(PREFIX) + 3, len(REPLY)],
                         ids=["first-byte", "message-byte", "delimiter"])
def test_keepOpenWrongByte(loadgen: Path, fakeServer: Any, position: int) -> None:
    """
    A keep-open reply with one wrong byte, wherever it is (the delimiter
    included), is a mismatch: the replies before it count, the connection
    closes, and the run exits 1 with one error line.
    """

    def answer(number: int, line: bytes) -> bytes:
        reply = bytearray(lineReply(number, line))
        if number == 5:
            reply[position] ^= 0x20
        return bytes(reply)

    server = fakeServer(answer, True)
    status, summary, stderr = runLoadgen(
        loadgen, server.port, "--keep-open", "--framing", "line", "--connections", "1",
        "--requests", "10",
    )
    assert (status, summary["requests"], summary["ok"], summary["errorCount"]) == (1, 5, 4, 1)
    assert summary["errors"]["mismatch"] == 1
    expected = lineReply(5, MESSAGE)[position]
    assert summary["firstMismatch"] == (
        f"byte {position} of a reply: expected 0x{expected:02x}, "
        f"received 0x{expected ^ 0x20:02x}"
    )
    assert stderr == "Error: 1 mismatch (of 5 requests, 4 answered)\n"


@pytest.mark.parametrize(
    "wrong, kind",
    [
        (REPLY[:5] + b"m" + REPLY[6:], "mismatch"),
        (REPLY[:-1], "early-close"),
        (REPLY + b"!", "extra"),
    ],
    ids=["wrong-byte", "cut-short", "one-byte-more"],
)
def test_oneShotWrongReply(loadgen: Path, fakeServer: Any, wrong: bytes, kind: str) -> None:
    """
    One-shot, in raw framing, against the tutorial's server: a reply with a
    wrong byte, cut short by the server's close, or a byte longer, is one
    error of its kind, and every other exchange counts.
    """
    server = fakeServer(lambda number, request: wrong if number == 3 else PREFIX + request,
                        False)
    status, summary, stderr = runLoadgen(
        loadgen, server.port, "--connections", "1", "--requests", "6",
    )
    assert (status, summary["requests"], summary["ok"], summary["errorCount"]) == (1, 6, 5, 1)
    assert summary["errors"][kind] == 1
    assert stderr == f"Error: 1 {kind} (of 6 requests, 5 answered)\n"


def test_oneShotCountsEveryRightReply(loadgen: Path, fakeServer: Any) -> None:
    """
    One-shot against the tutorial's server: every exchange counts.
    """
    server = fakeServer(lambda number, request: PREFIX + request, False)
    status, summary, stderr = runLoadgen(
        loadgen, server.port, "--connections", "2", "--requests", "20",
    )
    assert (status, stderr) == (0, "")
    assert (summary["mode"], summary["ok"], summary["errorCount"]) == ("one-shot", 20, 0)


def test_refusedConnections(loadgen: Path) -> None:
    """
    With nothing listening, every connection is a connect error, and the
    run stops at --max-errors.
    """
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    status, summary, _ = runLoadgen(loadgen, port, "--max-errors", "5", "--duration", "5")
    assert (status, summary["ok"], summary["stopped"]) == (1, 0, "max-errors")
    assert summary["errors"]["connect"] >= 5


@pytest.mark.parametrize(
    "options, error",
    [
        (["--host", "192.0.2.1"], "--host must be a loopback address (127.0.0.0/8 or ::1)"),
        (["--connections", "5000"], "--connections must be a number from 1 to 1000, not '5000'"),
        (["--keep-open"], "--keep-open needs --framing line"),
    ],
    ids=["not-loopback", "too-many-connections", "keep-open-raw"],
)
def test_loadgenUsageError(loadgen: Path, options: list[str], error: str) -> None:
    """
    A bad option is one error line and exit status 2, before any load.
    """
    result = subprocess.run(
        [str(loadgen), "--port", "9", *options], capture_output=True, text=True,
        timeout=DEADLINE, check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"Error: {error} (see the comment at the top of " \
        "benchmarks/loadgen.c)\n"


def test_chooseLoadWithoutACompiler(tmp_path: Path) -> None:
    """
    Without a C compiler, compare.py falls back to the Python generator
    and says why, for the report; asked for the C one, it fails saying
    what to do.
    """
    compare = loadCompare()
    load, fallback = compare.chooseLoad(None, tmp_path, which=lambda name: None)
    assert load == compare.PYTHON_LOAD
    assert fallback.startswith("No C compiler (cc) was found")
    with pytest.raises(compare.Failure, match="--load c needs a C compiler"):
        compare.chooseLoad("c", tmp_path, which=lambda name: None)
    assert compare.chooseLoad("python", tmp_path) == (compare.PYTHON_LOAD, None)


def test_targets() -> None:
    """
    Each target of issue 11 is judged from the medians of the same run:
    met, not met, or not measured when a figure is missing or the idle
    count is not 10,000; a ratio with a load-bound figure says so.
    """
    compare = loadCompare()
    outcome = compare.Outcome()
    names = {scenario.key: scenario.name for scenario in compare.SCENARIOS}

    def run(key: str, server: str, rate: float, loadBound: bool = False) -> None:
        # Which side used its whole core: the server, or the generator.
        summary = {"repliesPerSecond": rate, "latency_ms": {"p50": 1.0, "p99": 2.0},
                   "cpu": {"percentOfOneCore": 99.0 if loadBound else 50.0}}
        serverCpu = 0.5 if loadBound else 0.99
        outcome.runs.append(compare.Run(names[key], server, 1, summary, serverCpu, 0.0))

    run("ping-pong", "sockplay", 110_000)
    run("ping-pong", "uvloop", 100_000)
    run("pipelined", "sockplay", 900_000)
    run("pipelined", "uvloop", 1_000_000)
    run("one-shot", "sockplay", 19_000)
    run("one-shot", "blocking", 20_000, loadBound=True)
    outcome.idle["sockplay"] = {"connections": 10_000, "perConnection": 1600.0}
    assert compare.targets(outcome) == [
        ("keep-open ping-pong: sockplay ÷ uvloop ≥ 1.0", "1.10", "met", ""),
        ("16 pipelined: sockplay ÷ uvloop ≥ 1.0", "0.90", "not met", ""),
        ("one-shot: sockplay ÷ uvloop ≥ 1.0", "none", "not measured", ""),
        ("one-shot: sockplay ÷ blocking ≥ 0.9", "0.95", "met",
         "the load generator bounded blocking: the ratio is at most this"),
        ("idle: ≤ 1.5 KiB (1,536 bytes) of RSS per keep-open connection, 10,000 connections",
         "1.56 KiB (1,600 bytes)", "not met", ""),
    ]
    outcome.idle["sockplay"] = {"connections": 200, "perConnection": 800.0}
    assert compare.targets(outcome)[-1][1:] == (
        "0.78 KiB (800 bytes)", "not measured", "with 200 connections")
