"""
C{--tally} with real processes on loopback: the client and the bench
against one sockplay server, and against two (each with its own
C{--prefix}) behind a round-robin relay (L{support.relay}, Twisted's
C{portforward}), which stands in for a load balancer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import CLIENT, TWISTD, ServerPool, ServerProcess, run

RELAY = [sys.executable, str(Path(__file__).parent.parent / "support" / "relay.py")]
BENCH = [sys.executable, "-m", "sockplay.bench"]
SERVER = [*TWISTD, "--keep-open", "--framing", "line"]
PROBE = ["--framing", "line", "--interval", "0", "--tally", "--json"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """
    Servers for the module's tests, all stopped at its end.
    """
    with ServerPool(tmp_path_factory.mktemp("tally")) as servers:
        yield servers


@pytest.fixture(scope="module")
def backendA(pool: ServerPool) -> ServerProcess:
    """
    A keep-open line server whose replies start with C{A:<pid> }.
    """
    return pool.start(SERVER, "--prefix", "A:{pid} ")


@pytest.fixture(scope="module")
def backendB(pool: ServerPool) -> ServerProcess:
    """
    Another, whose replies start with C{B:<pid> }.
    """
    return pool.start(SERVER, "--prefix", "B:{pid} ")


@pytest.fixture
def relay(pool: ServerPool, backendA: ServerProcess, backendB: ServerProcess) -> ServerProcess:
    """
    A round-robin relay in front of both backends, started afresh for each
    test so that its turn starts at backend A.
    """
    return pool.start(
        RELAY, "--backend", str(backendA.port), "--backend", str(backendB.port)
    )


def identity(server: ServerProcess, name: str) -> str:
    """
    The identity of C{server}'s replies: C{NAME:<pid> }.
    """
    return f"{name}:{server.process.pid} "


def probe(port: int, cwd: Path, *args: str) -> dict[str, object]:
    """
    Run the client's C{--tally --json} probe against C{port}; it must
    succeed.

    @return: its C{tally}.
    """
    result = run([*CLIENT, "--port", str(port), *PROBE, *args], cwd)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    tally: dict[str, object] = json.loads(result.stdout)["tally"]
    return tally


def test_oneServer(backendA: ServerProcess, tmp_path: Path) -> None:
    """
    Against one server, the tally has one backend: its identity, every
    reply, a share of 1.
    """
    tally = probe(backendA.port, tmp_path, "--count", "6")
    assert tally["replies"] == 6
    [backend] = tally["backends"]  # type: ignore[misc]
    assert (backend["identity"], backend["count"], backend["share"]) == (
        identity(backendA, "A"), 6, 1.0,
    )
    assert 0 < backend["p50_ms"] <= backend["p99_ms"]
    assert "sticky" not in tally


def test_twoServersBehindARelay(
    relay: ServerProcess, backendA: ServerProcess, backendB: ServerProcess, tmp_path: Path
) -> None:
    """
    Through the relay, each probe on a connection of its own, the tally
    reports both backends, and their counts sum to the probes sent; the
    text form lists both.
    """
    tally = probe(relay.port, tmp_path, "--count", "8")
    assert tally["replies"] == 8
    counts = {b["identity"]: b["count"] for b in tally["backends"]}  # type: ignore[attr-defined]
    assert counts == {identity(backendA, "A"): 4, identity(backendB, "B"): 4}
    assert sum(b["share"] for b in tally["backends"]) == pytest.approx(1.0)  # type: ignore[attr-defined]
    result = run(
        [*CLIENT, "--port", str(relay.port), "--framing", "line", "--interval", "0",
         "--count", "4", "--tally"],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[6] == "--- tally: 4 replies from 2 backends ---"
    assert sorted(line.rsplit("  ", 1)[1] for line in lines[7:]) == [
        repr(identity(backendA, "A")), repr(identity(backendB, "B")),
    ]
    assert all(line.startswith("  2   50.0%  p50 ") for line in lines[7:])


def test_keepOpenIsSticky(relay: ServerProcess, backendA: ServerProcess, tmp_path: Path) -> None:
    """
    With C{--keep-open}, every probe goes over one connection, relayed to
    one backend: sticky, and one backend.
    """
    tally = probe(relay.port, tmp_path, "--count", "5", "--keep-open")
    assert (tally["sticky"], tally["connections"], tally["changes"]) == (True, 1, [])
    [backend] = tally["backends"]  # type: ignore[misc]
    assert (backend["identity"], backend["count"]) == (identity(backendA, "A"), 5)


def test_benchBehindARelay(
    relay: ServerProcess, backendA: ServerProcess, backendB: ServerProcess, tmp_path: Path
) -> None:
    """
    The bench's C{--tally} through the relay, over two load processes:
    both backends, their counts summing to the bench's replies, and each
    keep-open connection sticky.
    """
    result = run(
        [*BENCH, "--port", str(relay.port), "--framing", "line", "--keep-open",
         "--connections", "4", "--processes", "2", "--requests", "400", "--tally",
         "--json", "-q"],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    tally = summary["tally"]
    counts = {b["identity"]: b["count"] for b in tally["backends"]}
    assert set(counts) == {identity(backendA, "A"), identity(backendB, "B")}
    assert sum(counts.values()) == tally["replies"] == summary["ok"] == 400
    assert (tally["sticky"], tally["connections"]) == (True, 4)


def test_benchWithoutTallyRefusesOtherPrefixes(
    backendA: ServerProcess, tmp_path: Path
) -> None:
    """
    Without C{--tally} the bench still wants the exact prefix: a backend
    with its own is a mismatch, exit 1.
    """
    result = run(
        [*BENCH, "--port", str(backendA.port), "--framing", "line", "--keep-open",
         "--connections", "1", "--requests", "5", "-q"],
        tmp_path,
    )
    assert result.returncode == 1
    assert "mismatch" in result.stderr
