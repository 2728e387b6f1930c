"""
Tests of the load generator, C{python -m sockplay.bench}, as a command
against real C{twistd} servers on loopback, and of the comparison script
that uses it, C{benchmarks/compare.py}.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.servers import DEADLINE, LOOPBACK, TWISTD, ServerPool

BENCH = [sys.executable, "-m", "sockplay.bench"]
COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"


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
    one line for each part it leaves out, naming the extra to install.
    """
    result = subprocess.run(
        [sys.executable, str(COMPARE), "--smoke", "--output", str(tmp_path / "out")],
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
