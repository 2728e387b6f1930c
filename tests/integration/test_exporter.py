"""
The probe exporter (C{python -m sockplay.client --count 0 --metrics ...})
as real processes on loopback: its counters follow a server that is
stopped and started again on the same port (C{ok}, then C{refused}, then
C{ok}), it ends on SIGTERM with the statistics, and bad input ends it at
once with one line.

Nothing sleeps: each step waits, with a bound, for the exporter's own line
for a probe, and only then scrapes; the exporter is one thread, so a
scrape is served after the probe it printed has been counted.
"""

from __future__ import annotations

import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.servers import (
    CLIENT,
    LOOPBACK,
    SOCKET_TIMEOUT,
    TWISTD,
    ServerPool,
    ServerProcess,
    assertOneErrorLine,
    assertUsageError,
    run,
)

_SERVING = re.compile(r"Serving metrics on http://127\.0\.0\.1:(\d+)/metrics \(")
_PROGRAM = "python -m sockplay.client"


class Exporter:
    """
    The exporter, running as a child process against C{port}.

    @ivar process: the process (read as a L{ServerProcess} reads a server).
    @ivar url: where it serves its metrics.
    """

    def __init__(self, port: int, cwd: Path, *args: str) -> None:
        self.process = ServerProcess(
            [
                *CLIENT,
                "--connect", f"tcp:host={LOOPBACK}:port={port}",
                "--count", "0",
                "--interval", "0.1",
                "--timeout", "2",
                "--metrics", f"tcp:0:interface={LOOPBACK}",
                *args,
            ],
            cwd,
        )  # fmt: skip
        line = self.process.waitForLine(_SERVING.search, "where it serves metrics")
        match = _SERVING.search(line)
        assert match is not None
        self.url = f"http://{LOOPBACK}:{match.group(1)}/metrics"

    def waitForProbes(self, count: int, what: str) -> None:
        """
        Wait for C{count} more probe lines that contain C{what}.
        """
        for _ in range(count):
            self.process.waitForLine(lambda line: line.startswith("seq=") and what in line, what)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """
        Every sample the exporter serves now, by name and labels.
        """
        with urllib.request.urlopen(self.url, timeout=SOCKET_TIMEOUT) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def result(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """
    C{sockplay_probe_results_total} for the result C{name}.
    """
    return samples[("sockplay_probe_results_total", (("result", name),))]


def up(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    """
    C{sockplay_probe_up}.
    """
    return samples[("sockplay_probe_up", ())]


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    """
    The exporters a test starts, each stopped at its end.
    """
    started: list[Exporter] = []
    try:
        yield started
    finally:
        for exporter in started:
            exporter.process.stop()


@pytest.mark.parametrize(
    "server, client",
    [
        ([], []),
        (
            ["--keep-open", "--framing", "line", "--prefix", "web1 "],
            ["--keep-open", "--framing", "line", "--tally"],
        ),
    ],
    ids=["one-shot", "keep-open-tally"],
)
def test_countersFollowTheServer(
    servers: ServerPool,
    exporters: list[Exporter],
    tmp_path: Path,
    server: list[str],
    client: list[str],
) -> None:
    """
    Against a server that is stopped and started again on its port, the
    exporter counts C{ok} with C{up} 1, then C{refused} with C{up} 0, then
    C{ok} again with C{up} 1. SIGTERM ends it with the statistics, and exit
    status 0 although probes were lost (an exporter is a service: its
    losses are in its metrics), and its metrics port is closed.
    """
    first = servers.start(TWISTD, *server)
    port = first.port
    exporter = Exporter(port, tmp_path, *client)
    exporters.append(exporter)

    exporter.waitForProbes(3, " rtt=")
    samples = exporter.scrape()
    assert result(samples, "ok") >= 3 and result(samples, "refused") == 0
    assert up(samples) == 1
    if "--tally" in client:
        assert samples[("sockplay_probe_rtt_seconds_count", (("backend", "web1 "),))] >= 3
    else:
        assert samples[("sockplay_probe_rtt_seconds_count", ())] >= 3

    first.stop()
    exporter.waitForProbes(2, "error=connection refused")
    samples = exporter.scrape()
    assert result(samples, "refused") >= 2
    assert up(samples) == 0
    okWhileDown = result(samples, "ok")

    second = ServerProcess([*TWISTD, *server, "--listen", f"tcp:{port}:interface={LOOPBACK}"],
                           tmp_path)
    try:
        assert second.waitUntilReady() == port
        exporter.waitForProbes(2, " rtt=")
        samples = exporter.scrape()
        assert result(samples, "ok") >= okWhileDown + 2
        assert up(samples) == 1
    finally:
        second.stop()

    exporter.process.process.send_signal(signal.SIGTERM)
    assert exporter.process.waitForExit() == 0
    output = exporter.process.transcript()
    assert "Traceback" not in output
    assert f"--- tcp:host={LOOPBACK}:port={port} probe statistics ---" in output
    assert re.search(r"^\d+ sent, \d+ received, [\d.]+% loss, rtt ", output, re.MULTILINE)
    with pytest.raises(OSError):
        urllib.request.urlopen(exporter.url, timeout=SOCKET_TIMEOUT)


def test_sigtermWhileUpExitsZero(
    servers: ServerPool, exporters: list[Exporter], tmp_path: Path
) -> None:
    """
    Stopped by SIGTERM with every probe answered, the exporter exits 0, as
    the probe does, with its statistics.
    """
    server = servers.start(TWISTD)
    exporter = Exporter(server.port, tmp_path, "--interval", "30")
    exporters.append(exporter)
    exporter.waitForProbes(1, " rtt=")
    exporter.process.process.send_signal(signal.SIGTERM)
    assert exporter.process.waitForExit() == 0
    assert exporter.process.output[-1].startswith("1 sent, 1 received, 0% loss, rtt ")


def test_metricsNeedsCount(tmp_path: Path) -> None:
    """
    C{--metrics} without C{--count} is a usage error.
    """
    result = run([*CLIENT, "--metrics", "tcp:0"], tmp_path)
    assertUsageError(result, "--metrics needs --count", _PROGRAM)


def test_metricsBadEndpoint(tmp_path: Path) -> None:
    """
    A C{--metrics} that is not an endpoint string is a usage error that
    names it.
    """
    result = run([*CLIENT, "--count", "0", "--metrics", "nope:9465"], tmp_path)
    assertUsageError(
        result,
        "bad --metrics 'nope:9465': Unknown endpoint type: 'nope' (an endpoint looks like "
        "tcp:9465:interface=127.0.0.1)",
        _PROGRAM,
    )


def test_metricsPortInUse(tmp_path: Path) -> None:
    """
    A C{--metrics} port that another socket holds ends the exporter at
    once, before any probe, with one line and exit status 1.
    """
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = run(
            [*CLIENT, "--count", "0", "--metrics", f"tcp:{busy}:interface={LOOPBACK}"], tmp_path
        )
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(result.stderr)
    assert result.stderr == (
        f"Error: cannot listen on tcp:{busy}:interface={LOOPBACK} for --metrics: "
        "Address already in use\n"
    )


def test_finiteCountWithMetricsKeepsTheProbesStatus(tmp_path: Path) -> None:
    """
    With a finite C{--count}, C{--metrics} does not change the exit status:
    a run whose probes were lost exits 1, as without it (only an exporter,
    C{--count 0}, exits 0 when stopped).
    """
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        closed = holder.getsockname()[1]
    result = run(
        [*CLIENT, "--port", str(closed), "--count", "2", "--interval", "0",
         "--metrics", f"tcp:0:interface={LOOPBACK}"],
        tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "2 sent, 0 received, 100% loss" in result.stdout
