"""
Tests of the load generator, C{python -m sockplay.bench}, as a command
against real C{twistd} servers on loopback, and of the comparison script
that uses it, C{benchmarks/compare.py}.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.comparison import COMPARE, loadCompare
from support.servers import DEADLINE, LOOPBACK, SERVER, TWISTD, ServerPool, ServerProcess

from sockplay.certs import CertificateFiles, listenDescription, writeCertificates

BENCH = [sys.executable, "-m", "sockplay.bench"]


# Seconds within which a run that a mismatch dooms must fail: the exchange
# timeout (2 s), the start of the process, and room for a busy machine;
# far less than the deadline (duration + 10 s, or 120 s with --requests).
FAIL_FAST = 8.0


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


def test_benchAgainstSockplay(servers: ServerPool, tmp_path: Path) -> None:
    """
    Against C{twistd -n sockplay --keep-open --framing line}, 200 requests
    over 4 keep-open connections all get the right reply, and the run exits
    0.
    """
    server = servers.start(TWISTD, "--keep-open", "--framing", "line")
    status, summary, stderr = runBench(
        "--port", str(server.port), "-k", "--framing", "line", "--requests", "200",
        "--connections", "4", cwd=tmp_path,
    )
    assert (status, stderr) == (0, "")
    assert (summary["requests"], summary["ok"], summary["errorCount"]) == (200, 200, 0)
    assert summary["latency_ms"]["max"] > 0


def test_defaultBenchAgainstDefaultServer(servers: ServerPool, tmp_path: Path) -> None:
    """
    The plain bench against the plain server, as the quick start runs
    them, works: one-shot exchanges in raw framing, every reply right, no
    error, exit status 0.
    """
    server = servers.start(SERVER)
    result = subprocess.run(
        [*BENCH, "--port", str(server.port), "--duration", "1"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=DEADLINE * 3, check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"sockplay.bench: 127.0.0.1:{server.port}, raw framing, one-shot, 50 connections, "
        "14-byte messages"
    )
    assert lines[1].endswith(" 0 errors, 0 unanswered")


@pytest.mark.parametrize(
    "serverOptions, benchOptions, errors, hint",
    [
        pytest.param(
            [], ["-k", "--duration", "5"], "early-close",
            "the server closed every connection after one reply: it is a one-shot server; "
            "drop --keep-open, or start it with --keep-open.",
            id="keep-open-bench-one-shot-server",
        ),
        pytest.param(
            ["--framing", "line", "--keep-open"], ["--framing", "line", "--requests", "10000"],
            "timeout",
            "every reply came whole, but the server kept the connection open (2 s): it is a "
            "keep-open server; add --keep-open, or start it without --keep-open.",
            id="one-shot-bench-keep-open-server",
        ),
        pytest.param(
            ["--framing", "line", "--keep-open"],
            ["--one-shot", "--connections", "20", "--requests", "10000"],
            "timeout",
            "no reply came in 2 s: the server is waiting for the rest of a message, so its "
            "framing is not raw; use the server's --framing (line, int32 or eof), or raise "
            "--timeout for a slow server.",
            id="raw-bench-line-server",
        ),
        pytest.param(
            ["--keep-open"], ["-k", "--framing", "int32", "--requests", "10000"], "mismatch",
            "the server echoed the whole request, its int32 framing included, as one message: "
            "it is a raw server; use --framing raw, or start it with --framing int32.",
            id="int32-bench-raw-server",
        ),
        pytest.param(
            ["--framing", "int32"], ["--requests", "10000"], "mismatch",
            "the server answered 'Error: message too long (limit 65536 bytes)' instead of an "
            "echo: check that --framing (raw) is the server's, and the server's limits.",
            id="raw-bench-int32-server",
        ),
    ],
)
def test_mismatchFailsFastWithAHint(
    servers: ServerPool, tmp_path: Path, serverOptions: list[str], benchOptions: list[str],
    errors: str, hint: str,
) -> None:
    """
    A bench whose mode or framing does not match the server's fails within
    a few seconds, not at its deadline, and says, in one line after the
    error summary, what the server is doing and which flag fixes it (the
    JSON summary carries the same hint).
    """
    server = servers.start(SERVER, *serverOptions)
    started = time.monotonic()
    status, summary, stderr = runBench("--port", str(server.port), *benchOptions, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert (status, summary["ok"] == summary["requests"]) == (1, False)
    assert {kind for kind, count in summary["errors"].items() if count} == {errors}
    error, hintLine = stderr.splitlines()
    assert error.startswith("Error: ")
    assert (hintLine, summary["hint"]) == (f"Hint: {hint}", hint)
    assert elapsed < FAIL_FAST


@pytest.fixture(scope="module")
def tlsServer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """
    The default server, listening with TLS on an ephemeral loopback port.
    """
    certificates: CertificateFiles = writeCertificates(tmp_path_factory.mktemp("certs"))
    server = ServerProcess([*TWISTD, "--listen", listenDescription(certificates, 0)],
                           tmp_path_factory.mktemp("tls-server"))
    try:
        server.waitUntilReady()
        yield server
    finally:
        server.stop()


def test_benchAgainstTLSListener(tlsServer: ServerProcess, tmp_path: Path) -> None:
    """
    Against a TLS listener, which closes every plain connection without a
    reply, the bench fails at once and says that the server may speak TLS,
    which it does not.
    """
    status, summary, stderr = runBench("--port", str(tlsServer.port), "--requests", "10000",
                                       cwd=tmp_path)
    assert (status, summary["ok"], summary["stopped"]) == (1, 0, "max-errors")
    assert stderr.splitlines()[1] == (
        "Hint: the server closed every connection without a reply: if it listens with TLS "
        "(ssl:), bench a plain tcp: listener (the bench does not speak TLS); otherwise check "
        "--framing against the server's."
    )


def test_benchCountsMismatches(servers: ServerPool, tmp_path: Path) -> None:
    """
    Against a server with another prefix, every reply is a mismatch, the
    summary shows the first, and the run exits 1 with one error line.
    """
    server = servers.start(TWISTD, "--keep-open", "--framing", "line", "--prefix", "Got: ")
    status, summary, stderr = runBench(
        "--port", str(server.port), "-k", "--framing", "line", "--requests", "200",
        "--connections", "4", cwd=tmp_path,
    )
    assert (status, summary["ok"], summary["errors"]["mismatch"]) == (1, 0, 200)
    assert "received b'Got: Hello Server !\\n" in summary["firstMismatch"]
    assert stderr == (
        "Error: 200 mismatch\n"
        "Hint: the replies carry another prefix, 'Got: ': pass the server's with --prefix.\n"
    )


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
        "--port", str(server.port), "-k", "--framing", "int32", "--rate", "400",
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
    assert summary["hint"] == (
        f"nothing accepted a connection at 127.0.0.1:{port}: start the server, or point "
        "--host and --port (or --connect) at it."
    )


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


def test_compareWritesToATemporaryFolderByDefault(tmp_path: Path) -> None:
    """
    Without C{--output}, C{benchmarks/compare.py} writes its report into a
    new temporary folder, never over the tracked C{docs/benchmarks.*};
    with it, into the folder named, made if need be.
    """
    compare = loadCompare()
    docs = COMPARE.parents[1] / "docs"
    first, second = compare.outputFolder(None), compare.outputFolder(None)
    try:
        assert first != second
        assert first.is_dir() and not any(first.iterdir())
        assert docs.resolve() not in (first.resolve(), second.resolve())
    finally:
        first.rmdir()
        second.rmdir()
    named = tmp_path / "report" / "here"
    assert compare.outputFolder(named) == named and named.is_dir()


def test_compareSmoke(tmp_path: Path) -> None:
    """
    C{benchmarks/compare.py --smoke} runs every scenario against every
    server briefly, with the C load generator (CI has a C compiler), exits
    0, and writes its report, with the targets, where it is told, and says
    where.
    """
    assert shutil.which("cc"), "compare.py's smoke run is to use the C load generator"
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
    assert f"Writing the report into {tmp_path}\n" in result.stderr
    report = (tmp_path / "benchmarks.md").read_text()
    for row in ("| keep-open line, 50 connections, 1 in flight | sockplay |",
                "| keep-open line, 50 connections, 16 pipelined | twisted |",
                "| one-shot raw, 20 concurrent | blocking |",
                "| sockplay | 200 |",
                "### Targets",
                "| one-shot: sockplay ÷ blocking ≥ 0.9 | ",
                "load from `benchmarks/loadgen.c`",
                "- sockplay ran with `--quiet`."):
        assert row in report
    assert "Load generator: benchmarks/loadgen.c" in result.stderr


def withoutTheBenchExtra(tmp_path: Path) -> dict[str, str]:
    """
    An environment in which the C{bench} extra's packages, matplotlib and
    uvloop, cannot be imported (whether or not they are installed).
    """
    blocked = tmp_path / "blocked"
    for package in ("matplotlib", "uvloop"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text(
            f"raise ImportError('no {package} in this test')\n"
        )
    path = os.pathsep.join([str(blocked), *sys.path])
    return {**os.environ, "PYTHONPATH": path}


def test_compareWithoutTheBenchExtra(tmp_path: Path) -> None:
    """
    Without the C{bench} extra, C{benchmarks/compare.py} still runs, with
    one line for each part it leaves out, naming the extra to install. (It
    runs on the Python load generator here, C{--load python}, a run of
    that path too, and of the scenario and server filters.)
    """
    result = subprocess.run(
        [sys.executable, str(COMPARE), "--smoke", "--output", str(tmp_path / "out"),
         "--load", "python", "--only", "ping-pong,one-shot,idle",
         "--servers", "sockplay,uvloop,blocking"],
        cwd=tmp_path, env=withoutTheBenchExtra(tmp_path), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    missing = [line for line in result.stderr.splitlines() if "not installed" in line]
    assert missing == [
        "uvloop is not installed: no uvloop figures (pip install 'sockplay[bench]')",
        "matplotlib is not installed: no chart (pip install 'sockplay[bench]')",
    ]
    report = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "load from `python -m sockplay.bench`" in report
    assert "| one-shot raw, 20 concurrent | blocking |" in report
    assert "| one-shot raw, 20 concurrent | asyncio |" not in report
    assert "| keep-open line, 50 connections, 16 pipelined |" not in report
    assert "| one-shot: sockplay ÷ uvloop ≥ 1.0 | none | not measured |  |" in report


def test_uvloopPeerWithoutTheBenchExtra(tmp_path: Path) -> None:
    """
    The asyncio peer asked to run on uvloop without it says, in one line,
    which extra to install, and exits 1.
    """
    result = subprocess.run(
        [sys.executable, str(COMPARE.parent / "asyncio_server.py"), "--uvloop", "--port", "0"],
        cwd=tmp_path, env=withoutTheBenchExtra(tmp_path), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )
    assert (result.returncode, result.stderr) == (
        1, "Error: --uvloop needs the uvloop package: pip install 'sockplay[bench]'\n",
    )
