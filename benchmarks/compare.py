"""
Compare sockplay with other echo-reply servers under the same load.

It starts sockplay (C{twistd -n sockplay}, its default settings but for
C{--quiet}) and its peers on loopback, the asyncio server (also on uvloop,
if installed), a textbook Twisted C{LineReceiver} server and the socket
tutorial's blocking server, drives each with the same load, and writes
benchmarks.md (a table, the targets of issue 11, the machine, how it was
measured) and benchmarks.png (a chart, if matplotlib is installed) into the
folder C{--output} names (C{--output docs}: the published report), or else
into a new temporary folder, which it names.

The load comes from benchmarks/loadgen.c, compiled with C{cc -O2} into a
temporary folder at the start, when there is a C compiler: a Python load
generator is slower than the fastest servers, so it would bound what it
measures. Without a compiler (or with C{--load python}) it comes from
C{python -m sockplay.bench}, and the report says so. Both check every byte
of every reply. The idle-memory runs always use C{python -m sockplay.bench
--hold}: they measure the servers' memory, not their speed.

Servers run on one CPU and the load generator on another (C{taskset}, or
C{os.sched_setaffinity}), when there are two. Each server is warmed up with
a short run; then the servers take turns (A B C A B C ...) and each figure
is the median of its rounds.

    python benchmarks/compare.py                 # the full run, into a temp dir
    python benchmarks/compare.py --output docs   # the full run, into docs/
    python benchmarks/compare.py --smoke         # a few seconds, into a temp dir
    python benchmarks/compare.py --smoke --output /tmp/bench
    python benchmarks/compare.py --only ping-pong,pipelined --servers sockplay,uvloop
    python benchmarks/compare.py --sockplay-args '--reactor epoll'

It exits 1 if any server fails to start or any run reports an error (the
load generator checks every reply byte).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"

# Accept queue of every server: the same for all, and deep enough for the
# idle scenario's connection burst.
BACKLOG = 1024

# Seconds a server may take to say it is listening.
START_TIMEOUT = 30.0

# Seconds, past its own deadline, that one load run may take.
RUN_GRACE = 30.0

_LISTENING = re.compile(r"Listening on tcp:127\.0\.0\.1:(\d+)")

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
          "--pidfile=", "sockplay"]
PEER = [sys.executable, str(HERE / "asyncio_server.py")]
TWISTED = [sys.executable, str(HERE / "twisted_server.py")]
BLOCKING = [sys.executable, str(HERE / "blocking_server.py")]
BENCH = [sys.executable, "-m", "sockplay.bench"]
LOADGEN = HERE / "loadgen.c"

# What installs the optional parts of the comparison (the chart's
# matplotlib, the uvloop peer): named in the one line said when one is missing.
BENCH_EXTRA = "pip install 'sockplay[bench]'"


class Failure(Exception):
    """
    The comparison cannot go on (a server did not start, a run failed).
    """


@dataclass(frozen=True)
class Settings:
    """
    How long and how big the runs are.

    @ivar settle: seconds to wait, at most, before each measured run, for
        the rest of the machine to be nearly idle (0: do not wait).
    @ivar retries: times a run is repeated if other processes were busy
        during it.
    """

    duration: float
    warmup: float
    rounds: int
    idleConnections: int
    hold: float
    smoke: bool
    settle: float = 0.0
    retries: int = 0


FULL = Settings(duration=5.0, warmup=1.0, rounds=5, idleConnections=10_000, hold=2.0,
                smoke=False, settle=120.0, retries=3)

# Share of one core that the rest of the machine may use for it to count as
# nearly idle before a measured run.
QUIET = 0.25
# Everything runs, briefly, without warm-ups: a check that it works.
SMOKE = Settings(duration=0.2, warmup=0.0, rounds=1, idleConnections=200, hold=0.2,
                 smoke=True)


@dataclass(frozen=True)
class LoadGenerator:
    """
    What drives the load of the measured runs.

    @ivar name: C{c} (benchmarks/loadgen.c, compiled) or C{python}
        (C{python -m sockplay.bench}); C{--load} takes these names.
    @ivar command: the command, before a run's C{--port} and load options
        (which both generators take alike), that prints one JSON summary.
    """

    name: str
    command: tuple[str, ...]

    @property
    def description(self) -> str:
        """
        How the report names it.
        """
        if self.name == "c":
            return "`benchmarks/loadgen.c` (a C epoll load generator, compiled with `cc -O2`)"
        return "`python -m sockplay.bench`"


PYTHON_LOAD = LoadGenerator("python", (*BENCH, "--json", "--quiet"))


def chooseLoad(
    wanted: str | None, folder: Path, which: Callable[[str], str | None] = shutil.which
) -> tuple[LoadGenerator, str | None]:
    """
    The load generator to use (C{wanted}: C{c}, C{python}, or C{None}: the
    C one if a C compiler is found), compiled into C{folder} if it is the C
    one; and, if the choice fell back to Python, why, for the report.

    @raise Failure: if C{c} is wanted but cannot be had.
    """
    if wanted == "python":
        return PYTHON_LOAD, None
    compiler = which("cc")
    if compiler is None:
        if wanted == "c":
            raise Failure("--load c needs a C compiler (cc): install one (such as gcc), "
                          "or use --load python")
        return PYTHON_LOAD, (
            "No C compiler (cc) was found, so the load came from `python -m sockplay.bench`, "
            "which is slower than the fastest servers: a run it bounds (*load*) gives a floor, "
            "not a figure."
        )
    binary = folder / "loadgen"
    try:
        built = subprocess.run(
            [compiler, "-O2", "-std=c99", "-o", str(binary), str(LOADGEN)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failure(f"{compiler} could not compile {LOADGEN}: {e}") from None
    if built.returncode != 0:
        raise Failure(f"{compiler} could not compile {LOADGEN}:\n{built.stderr.strip()}")
    return LoadGenerator("c", (str(binary),)), None


@dataclass(frozen=True)
class Choices:
    """
    What one comparison runs, besides how long (L{Settings}).

    @ivar load: the load generator of the measured runs.
    @ivar sockplayArgs: options added to sockplay's command (C{--sockplay-args}).
    @ivar only: the keys of the scenarios to run (L{Scenario.key}, C{idle}),
        or C{None} for all.
    @ivar servers: the servers to run, or C{None} for all.
    @ivar command: the command line, for the report.
    """

    load: LoadGenerator = PYTHON_LOAD
    sockplayArgs: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    servers: frozenset[str] | None = None
    command: str = "python benchmarks/compare.py"

    def runs(self, key: str) -> bool:
        """
        Whether the scenario with this key is to be run.
        """
        return self.only is None or key in self.only


@dataclass(frozen=True)
class Scenario:
    """
    One load, and the servers it is run against.

    @ivar key: the short name C{--only} takes.
    """

    key: str
    name: str
    framing: str
    keepOpen: bool
    load: tuple[str, ...]
    servers: tuple[str, ...]

    @property
    def arguments(self) -> list[str]:
        """
        The load generator's options: the load, on keep-open connections
        when the servers keep them open (the generator is one-shot by
        default, as the servers are).
        """
        return [*(["--keep-open"] if self.keepOpen else []), *self.load]


@dataclass
class Run:
    """
    One load run against one server.
    """

    scenario: str
    server: str
    round: int
    summary: dict[str, Any]
    serverCpu: float
    otherCpu: float

    @property
    def rate(self) -> float:
        return float(self.summary["repliesPerSecond"])


@dataclass
class Outcome:
    """
    Everything measured.
    """

    runs: list[Run] = field(default_factory=list)
    idle: dict[str, dict[str, Any]] = field(default_factory=dict)
    ceiling: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Measured runs, those of them that started on a busy machine, those
    # repeated because other processes were busy during them, and those
    # that were disturbed still after the last retry.
    started: int = 0
    unsettled: int = 0
    retried: int = 0
    disturbed: int = 0


def cpuSets() -> tuple[list[str], list[str]]:
    """
    Command prefixes that pin a server and the load generator to different
    CPUs, or empty ones if there is a single CPU.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or not shutil.which("taskset"):
        return [], []
    return ["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[1])]


SERVER_CPU, LOAD_CPU = cpuSets()


def processCpu(pid: int) -> float:
    """
    CPU seconds (user + system) that process C{pid} has used.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machineBusy() -> float:
    """
    CPU seconds all CPUs have spent busy since boot.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def ownCpu() -> float:
    """
    CPU seconds this script and its finished children (the load runs)
    have used.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rss(pid: int) -> int:
    """
    Resident memory of process C{pid}, in KiB.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise Failure(f"no VmRSS for process {pid}")


class Server:
    """
    A server process on an ephemeral loopback port, its output read on a
    thread.
    """

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.process = subprocess.Popen(
            [*SERVER_CPU, *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.port = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def waitUntilListening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.port:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise Failure(f"{self.name} did not start in {START_TIMEOUT:g} s") from None
            if line is None:
                self.process.wait()
                raise Failure(
                    f"{self.name} exited ({self.process.returncode}) before listening:\n"
                    + "".join(self.output)
                )
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def sockplayOptions() -> list[str]:
    """
    The one option that sockplay runs with besides its defaults (limits and
    idle timeout on, as issue 11's targets ask): C{--quiet}, no
    per-connection log lines, since the peers log nothing. The default
    C{--max-connections} (10,000) admits the idle scenario's 10,000
    connections.
    """
    from sockplay.server.tap import Options

    return ["--quiet"] if "--quiet" in Options().getUsage() else []


def serverCommands(keepOpen: bool, framing: str, extra: list[str]) -> dict[str, list[str]]:
    """
    The command of every server that can serve this framing and lifecycle.
    """
    keep = ["--keep-open"] if keepOpen else []
    listen = f"tcp:0:interface={LOOPBACK}:backlog={BACKLOG}"
    common = ["--port", "0", "--backlog", str(BACKLOG), "--framing", framing, *keep]
    commands = {
        "sockplay": [*TWISTD, "--framing", framing, *keep, *extra, "--listen", listen],
        "asyncio": [*PEER, *common],
    }
    if haveUvloop():
        commands["uvloop"] = [*PEER, *common, "--uvloop"]
    if framing == "line" and keepOpen:
        commands["twisted"] = [*TWISTED, "--port", "0", "--backlog", str(BACKLOG)]
    if framing == "raw" and not keepOpen:
        commands["blocking"] = [*BLOCKING, "--port", "0", "--backlog", str(BACKLOG)]
        commands["blocking-threads"] = [*commands["blocking"], "--threads"]
    return commands


def chosen(commands: dict[str, list[str]], choices: Choices) -> dict[str, list[str]]:
    """
    The commands of the servers that C{--servers} keeps.
    """
    return {name: command for name, command in commands.items()
            if choices.servers is None or name in choices.servers}


def haveUvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def startServers(commands: dict[str, list[str]]) -> dict[str, Server]:
    servers = {name: Server(name, command) for name, command in commands.items()}
    try:
        for server in servers.values():
            server.waitUntilListening()
    except BaseException:
        stopServers(servers)
        raise
    return servers


def stopServers(servers: dict[str, Server]) -> None:
    for server in servers.values():
        server.stop()


def bench(
    port: int, arguments: list[str], *, quiet: bool = True, load: LoadGenerator | None = None
) -> subprocess.Popen[str]:
    """
    Start one load run, pinned to the load generator's CPU: from C{load},
    else from C{python -m sockplay.bench} (C{quiet}: without its progress
    lines on stderr).
    """
    command = list(load.command) if load is not None else [
        *BENCH, "--json", *(["--quiet"] if quiet else [])]
    return subprocess.Popen(
        [*LOAD_CPU, *command, "--port", str(port), *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], what: str, timeout: float) -> dict[str, Any]:
    """
    Wait for a load run; its summary, or L{Failure} if it failed.
    """
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise Failure(f"{what}: the load generator did not finish in {timeout:g} s") from None
    if process.returncode != 0:
        raise Failure(f"{what}: exit status {process.returncode}: {err.strip() or out.strip()}")
    summary: dict[str, Any] = json.loads(out)
    return summary


def measure(
    scenario: Scenario, server: Server, round: int, duration: float, load: LoadGenerator
) -> Run:
    """
    One load run of C{duration} seconds, with the CPU that the server and
    everything else on the machine used meanwhile.
    """
    pid = server.process.pid
    started = time.monotonic()
    before, busyBefore, ownBefore = processCpu(pid), machineBusy(), ownCpu()
    process = bench(server.port, [*scenario.arguments, "--duration", str(duration)],
                    load=load)
    summary = finish(process, f"{scenario.name} / {server.name}", duration + 10 + RUN_GRACE)
    serverCpu = processCpu(pid) - before
    # Everything else: the machine's busy time less the server's, the load
    # generator's (start-up included) and this script's.
    other = machineBusy() - busyBefore - serverCpu - (ownCpu() - ownBefore)
    wall = time.monotonic() - started
    return Run(scenario.name, server.name, round, summary, serverCpu / summary["elapsed"],
               max(other, 0.0) / wall)


def settle(settings: Settings, outcome: Outcome) -> None:
    """
    Wait, at most C{settings.settle} seconds, until the rest of the machine
    uses less than L{QUIET} of a core over a second (the servers are idle
    between runs).
    """
    outcome.started += 1
    if not settings.settle:
        return
    deadline = time.monotonic() + settings.settle
    while time.monotonic() < deadline:
        before = machineBusy()
        time.sleep(1.0)
        if machineBusy() - before < QUIET:
            return
    outcome.unsettled += 1


def measureSettled(
    scenario: Scenario, server: Server, round: int, settings: Settings, outcome: Outcome,
    load: LoadGenerator,
) -> Run:
    """
    L{measure}, on a quiet machine if it can be had: after L{settle}, and
    again (up to C{settings.retries} times) if other processes used more
    than L{QUIET} of a core during the run.
    """
    for attempt in range(settings.retries + 1):
        settle(settings, outcome)
        run = measure(scenario, server, round, settings.duration, load)
        if run.otherCpu <= QUIET:
            break
        if attempt < settings.retries:
            outcome.retried += 1
    else:
        outcome.disturbed += 1
    return run


def runScenario(
    scenario: Scenario, servers: dict[str, Server], settings: Settings, outcome: Outcome,
    load: LoadGenerator,
) -> None:
    """
    Warm every server up, then run the load against each in turn, round
    after round.
    """
    names = [name for name in scenario.servers if name in servers]
    for name in names:
        if settings.warmup:
            print(f"  warm-up {scenario.name} / {name}", file=sys.stderr)
            measure(scenario, servers[name], 0, settings.warmup, load)
    for round in range(1, settings.rounds + 1):
        for name in names:
            run = measureSettled(scenario, servers[name], round, settings, outcome, load)
            print(
                f"  {scenario.name} / {name} round {round}: {run.rate:,.0f} replies/s",
                file=sys.stderr,
            )
            outcome.runs.append(run)


def runIdle(servers: dict[str, Server], connections: int, settings: Settings,
            outcome: Outcome) -> None:
    """
    Resident memory per idle keep-open connection: each server's RSS before
    and while the load generator holds C{connections} connections open, each
    of which has made one verified exchange (so the server has accepted it).
    """
    for name, server in servers.items():
        pid = server.process.pid
        if settings.warmup:
            warmup = ["--keep-open", "--framing", "line", "--duration", str(settings.warmup)]
            finish(bench(server.port, warmup), f"idle warm-up / {name}",
                   settings.warmup + 10 + RUN_GRACE)
        settle(settings, outcome)
        before = rss(pid)
        process = bench(
            server.port,
            ["--framing", "line", "--connections", str(connections), "--hold",
             str(settings.hold)],
            quiet=False,
        )
        assert process.stderr is not None
        holding = None
        for line in process.stderr:
            if line.startswith("holding "):
                holding = int(line.split()[1])
                break
        during = rss(pid)
        summary = finish(process, f"idle / {name}", settings.hold + 120 + RUN_GRACE)
        if holding != connections:
            raise Failure(f"idle / {name}: held {holding} connections, not {connections}")
        outcome.idle[name] = {
            "connections": connections,
            "setup": summary["elapsed"] - settings.hold,
            "before": before,
            "during": during,
            "perConnection": (during - before) * 1024 / connections,
            "summary": summary,
        }
        print(
            f"  idle / {name}: {before} KiB -> {during} KiB with {connections} connections",
            file=sys.stderr,
        )


def idleConnectionsPossible(wanted: int, outcome: Outcome) -> int:
    """
    Raise the open-file limit (inherited by the servers and the generator)
    for C{wanted} connections; if the hard limit is too low, the most it
    allows.
    """
    needed = wanted + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        possible = max(hard - 256, 1)
        outcome.notes.append(
            f"The open-file limit (ulimit -Hn {hard}) allows {possible} idle connections, "
            f"not {wanted}: the idle scenario uses {possible}."
        )
        wanted, needed = possible, hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return wanted


KEEP_OPEN_SERVERS = ("sockplay", "asyncio", "uvloop", "twisted")

SCENARIOS = [
    Scenario(
        "ping-pong", "keep-open line, 50 connections, 1 in flight",
        "line", True, ("--framing", "line", "--connections", "50"), KEEP_OPEN_SERVERS,
    ),
    Scenario(
        "pipelined", "keep-open line, 50 connections, 16 pipelined",
        "line", True, ("--framing", "line", "--connections", "50", "--pipeline", "16"),
        KEEP_OPEN_SERVERS,
    ),
    Scenario(
        "one-shot", "one-shot raw, 20 concurrent",
        "raw", False, ("--framing", "raw", "--connections", "20"),
        ("sockplay", "asyncio", "uvloop", "blocking", "blocking-threads"),
    ),
]

# The idle-memory scenario's key for --only, and its servers.
IDLE = "idle"
IDLE_SERVERS = KEEP_OPEN_SERVERS

# How far the generator goes: against the fastest peers (the first of
# those listed that runs), with the scenario whose servers they are.
CEILING = [
    Scenario("ping-pong", "keep-open line, 50 connections, 1 in flight", "line", True,
             ("--framing", "line", "--connections", "50"), ("uvloop", "asyncio")),
    Scenario("pipelined", "keep-open line, 50 connections, 64 pipelined", "line", True,
             ("--framing", "line", "--connections", "50", "--pipeline", "64"),
             ("uvloop", "asyncio")),
    Scenario("one-shot", "one-shot raw, 20 concurrent", "raw", False,
             ("--framing", "raw", "--connections", "20"), ("blocking",)),
]


def compare(settings: Settings, choices: Choices | None = None) -> Outcome:
    """
    Run every scenario (that C{choices} keeps) against every server.
    """
    choices = choices or Choices()
    outcome = Outcome()
    extra = [*sockplayOptions(), *choices.sockplayArgs]
    if extra:
        outcome.notes.append(f"sockplay ran with `{shlex.join(extra)}`.")
    if not haveUvloop():
        outcome.notes.append("uvloop is not installed: no uvloop figures.")
        print(f"uvloop is not installed: no uvloop figures ({BENCH_EXTRA})", file=sys.stderr)
    if not SERVER_CPU:
        outcome.notes.append("Servers and the load generator were not pinned to separate CPUs.")
    groups: dict[tuple[str, bool], list[Scenario]] = {}
    for scenario in SCENARIOS:
        if choices.runs(scenario.key):
            groups.setdefault((scenario.framing, scenario.keepOpen), []).append(scenario)
    for (framing, keepOpen), scenarios in groups.items():
        servers = startServers(chosen(serverCommands(keepOpen, framing, extra), choices))
        try:
            for scenario in scenarios:
                print(f"{scenario.name}", file=sys.stderr)
                runScenario(scenario, servers, settings, outcome, choices.load)
            for scenario in CEILING:
                if scenario.key not in {s.key for s in scenarios}:
                    continue
                peer = next((name for name in scenario.servers if name in servers), None)
                if peer is None:
                    continue
                print(f"generator ceiling: {scenario.name} / {peer}", file=sys.stderr)
                runs = sorted(
                    (measureSettled(scenario, servers[peer], round, settings, outcome,
                                    choices.load)
                     for round in range(1, settings.rounds + 1)),
                    key=lambda run: run.rate,
                )
                # The median run, whole, so that its CPU figures go with it.
                outcome.ceiling.append(runs[len(runs) // 2])
        finally:
            stopServers(servers)
    if not choices.runs(IDLE):
        return outcome
    connections = idleConnectionsPossible(settings.idleConnections, outcome)
    print(f"idle memory, {connections} connections", file=sys.stderr)
    commands = chosen(serverCommands(True, "line", extra), choices)
    servers = startServers({name: commands[name] for name in IDLE_SERVERS if name in commands})
    try:
        runIdle(servers, connections, settings, outcome)
    finally:
        stopServers(servers)
    return outcome


def medians(outcome: Outcome) -> list[dict[str, Any]]:
    """
    One row per scenario and server: the medians of its rounds.
    """
    rows = []
    for scenario in SCENARIOS:
        for server in scenario.servers:
            runs = [r for r in outcome.runs if r.scenario == scenario.name and r.server == server]
            if not runs:
                continue
            latencies = [r.summary["latency_ms"] for r in runs]
            rows.append({
                "scenario": scenario.name,
                "server": server,
                "rate": statistics.median(r.rate for r in runs),
                "rates": [r.rate for r in runs],
                "others": [r.otherCpu for r in runs],
                "p50": statistics.median(x["p50"] for x in latencies),
                "p99": statistics.median(x["p99"] for x in latencies),
                "serverCpu": statistics.median(r.serverCpu for r in runs),
                "loadCpu": statistics.median(
                    r.summary["cpu"]["percentOfOneCore"] / 100 for r in runs
                ),
                "otherCpu": statistics.median(r.otherCpu for r in runs),
            })
    return rows


def machine() -> dict[str, str]:
    """
    What the figures were measured on.
    """
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import twisted

    import sockplay

    versions = {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Twisted": twisted.__version__,
        "sockplay": sockplay.__version__,
    }
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE.parent), "log", "-1", "--format=%h %cs"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no",
             "--", "sockplay"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        versions["sockplay"] += f", checkout at commit {commit}" + (
            " with uncommitted changes in sockplay/" if changed else ""
        )
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import uvloop

        versions["uvloop"] = str(getattr(uvloop, "__version__", "?"))
    except ImportError:
        pass
    return versions


# Share of its core from which a side counts as what bounded a run.
SATURATED = 0.9


def boundBy(row: dict[str, Any]) -> str:
    """
    Which side bounded a run: the one that used (nearly) all of its core.
    """
    server, load = row["serverCpu"] >= SATURATED, row["loadCpu"] >= SATURATED
    if server and load:
        return "both"
    return "server" if server else "load" if load else "latency"


def _ms(milliseconds: float) -> str:
    return f"{milliseconds:.2f}"


# Issue 11's targets for sockplay, each a ratio of replies/s: what it is,
# the scenario's key, the peer, and the least ratio that meets it.
TARGETS = [
    ("keep-open ping-pong", "ping-pong", "uvloop", 1.0),
    ("16 pipelined", "pipelined", "uvloop", 1.0),
    ("one-shot", "one-shot", "uvloop", 1.0),
    ("one-shot", "one-shot", "blocking", 0.9),
]
# And for memory: at most this many bytes of RSS per idle keep-open
# connection (1.5 KiB), with this many connections open.
IDLE_TARGET = 1.5 * 1024
IDLE_TARGET_CONNECTIONS = 10_000


def targets(outcome: Outcome) -> list[tuple[str, str, str, str]]:
    """
    Issue 11's targets, each as the target, the measured value, C{met},
    C{not met} or C{not measured}, and a note (when a figure in it is a
    bound, not a measurement).
    """
    names = {scenario.key: scenario.name for scenario in SCENARIOS}
    rows = {(row["scenario"], row["server"]): row for row in medians(outcome)}
    table = []
    for what, key, peer, least in TARGETS:
        target = f"{what}: sockplay ÷ {peer} ≥ {least:.1f}"
        mine, theirs = rows.get((names[key], "sockplay")), rows.get((names[key], peer))
        if mine is None or theirs is None or not theirs["rate"]:
            table.append((target, "none", "not measured", ""))
            continue
        ratio = mine["rate"] / theirs["rate"]
        notes = []
        if boundBy(theirs) == "load":
            notes.append(f"the load generator bounded {peer}: the ratio is at most this")
        if boundBy(mine) == "load":
            notes.append("the load generator bounded sockplay: the ratio is at least this")
        table.append((target, f"{ratio:.2f}", "met" if ratio >= least else "not met",
                      "; ".join(notes)))
    target = (f"idle: ≤ {IDLE_TARGET / 1024:.1f} KiB ({IDLE_TARGET:,.0f} bytes) of RSS per "
              f"keep-open connection, {IDLE_TARGET_CONNECTIONS:,} connections")
    idle = outcome.idle.get("sockplay")
    if idle is None:
        table.append((target, "none", "not measured", ""))
    else:
        value = idle["perConnection"]
        measured = f"{value / 1024:.2f} KiB ({value:,.0f} bytes)"
        if idle["connections"] != IDLE_TARGET_CONNECTIONS:
            table.append((target, measured, "not measured",
                           f"with {idle['connections']:,} connections"))
        else:
            table.append((target, measured, "met" if value <= IDLE_TARGET else "not met", ""))
    return table


def render(
    outcome: Outcome, settings: Settings, when: datetime.datetime, chart: bool = True,
    choices: Choices | None = None,
) -> str:
    """
    docs/benchmarks.md (C{chart}: with the chart), of a run of C{choices}.
    """
    choices = choices or Choices()
    load = choices.load
    rows = medians(outcome)
    sockplay = {row["scenario"]: row["rate"] for row in rows if row["server"] == "sockplay"}
    lines = [
        "# Benchmarks",
        "",
        "sockplay against other echo-reply servers on the same machine, under the same",
        f"load from {load.description}, which checks every byte of every reply.",
        "",
        f"Measured on {when:%Y-%m-%d %H:%M} UTC with `{choices.command}`.",
        "What each change to sockplay's hot path gained, what connection logs and metrics",
        "cost, and one versus several worker processes are measured separately, in",
        "[performance.md](performance.md).",
        "",
        "## Results",
        "",
        f"Median of {settings.rounds} round{'s' if settings.rounds > 1 else ''} of "
        f"{settings.duration:g} s per server, the servers taking turns (A B C A B C ...)"
        + (f", each warmed up first with a {settings.warmup:g} s run." if settings.warmup
           else ", without warm-up."),
        "The ratio is sockplay's replies/s divided by the server's. The CPU columns are the",
        "share of one core that the server and the load generator used during the run"
        + (" (each is pinned to a core of its own)." if SERVER_CPU else "."),
        "",
        "| scenario | server | replies/s | p50 ms | p99 ms | server CPU | load CPU "
        "| bound by | sockplay ÷ server |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in rows:
        ratio = sockplay.get(row["scenario"], 0) / row["rate"] if row["rate"] else 0
        floor = "≥ " if boundBy(row) == "load" else ""
        lines.append(
            f"| {row['scenario']} | {row['server']} | {floor}{row['rate']:,.0f} "
            f"| {_ms(row['p50'])} | {_ms(row['p99'])} | {row['serverCpu']:.0%} "
            f"| {row['loadCpu']:.0%} | {boundBy(row)} | {ratio:.2f} |"
        )
    lines += [
        "",
        f"*Bound by*: the side that used at least {SATURATED:.0%} of its core (*server*, "
        "*load* for the load generator, or *both*), or *latency* when neither did (the run "
        "was then bounded by the round trips between the two CPUs). When the load generator "
        "bounds a run, that server's figure is a floor (≥), not its ceiling, and its ratio "
        "is a bound too.",
        "",
        *(["![replies per second and idle memory per connection](benchmarks.png)", ""]
          if chart else []),
        "### Targets",
        "",
        "Issue 11's targets for sockplay, with its default settings (limits and idle timeout",
        "on) but for `--quiet`, against the peers of the same run: each ratio is of the",
        "medians above, and the idle memory is from the table below.",
        *(["", "This is a smoke run (`--smoke`): its verdicts show that the harness works, "
           "and measure nothing."] if settings.smoke else []),
        "",
        "| target | measured | verdict | note |",
        "| --- | ---: | --- | --- |",
        *(f"| {target} | {measured} | {verdict} | {note} |"
          for target, measured, verdict, note in targets(outcome)),
        "",
        "### Idle connections",
        "",
        "Resident memory (VmRSS from /proc/PID/status) of each server, after a warm-up, then",
        "while the load generator holds the connections open and idle; each connection has",
        "made one verified exchange first, so the server has accepted it. The load here is",
        "always `python -m sockplay.bench --hold`, whatever drives the other runs: it measures",
        "the servers' memory, not their speed.",
        "",
        "The last column is how long the generator took to open the connections and get",
        "every reply (at most 128 connecting at once).",
        "",
        "| server | connections | RSS before | RSS with them open | per connection "
        "| setup |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, idle in outcome.idle.items():
        lines.append(
            f"| {name} | {idle['connections']:,} | {idle['before'] / 1024:.1f} MiB "
            f"| {idle['during'] / 1024:.1f} MiB | {idle['perConnection'] / 1024:.1f} KiB "
            f"| {idle['setup']:.1f} s |"
        )
    if load.name == "c":
        generator = [
            "The generator is `benchmarks/loadgen.c`: one thread, one epoll set, edge-triggered",
            "non-blocking sockets, one write per batch of requests, and each read compared with",
            "the expected replies in one `memcmp`.",
        ]
    else:
        generator = [
            "The generator is `python -m sockplay.bench`, a plain non-blocking socket loop",
            "(epoll, one process) that batches its writes, reads into one reused buffer and",
            "checks each read with one comparison.",
        ]
    lines += [
        "",
        "### How far the load generator goes",
        "",
        *generator,
        f"Against the fastest servers here (the median of {settings.rounds} "
        f"run{'s' if settings.rounds > 1 else ''}), with the CPU time each side spent per reply:",
        "",
        "| load | server | replies/s | server CPU | load CPU | server CPU per reply "
        "| load CPU per reply |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in outcome.ceiling:
        cpu = run.summary["cpu"]
        ok = run.summary["ok"] or 1
        lines.append(
            f"| {run.scenario} | {run.server} | {run.rate:,.0f} | {run.serverCpu:.0%} "
            f"| {cpu['percentOfOneCore'] / 100:.0%} "
            f"| {run.serverCpu * run.summary['elapsed'] / ok * 1e6:.1f} µs "
            f"| {cpu['seconds'] / ok * 1e6:.1f} µs |"
        )
    lines += [
        "",
        "On loopback, the kernel work of delivering each request to the server is done in",
        "the sender's `send()`, so the generator pays for part of the server's receive path",
        "(and the server for the generator's); one request in flight per connection costs",
        "each side a `send` and a `recv` per request, and a one-shot exchange costs the",
        "generator a whole TCP connection set up and torn down. More in flight (`--pipeline`)",
        "or more load processes (`--processes`, given cores to run them) offer more load.",
        "",
        "## Machine",
        "",
    ]
    for name, value in machine().items():
        lines.append(f"- {name}: {value}")
    lines.append(f"- Load generator: {load.description}.")
    busy = [run.otherCpu for run in outcome.runs]
    if busy:
        lines.append(
            f"- Other processes' CPU during the kept runs: median {statistics.median(busy):.0%} "
            f"of one core, at most {max(busy):.0%}."
        )
    if SERVER_CPU:
        lines.append(
            f"- Servers pinned with `{' '.join(SERVER_CPU)}`, the load generator with "
            f"`{' '.join(LOAD_CPU)}`."
        )
    if settings.settle:
        lines.append(
            f"- The machine is shared. Before each measured run the script waited (at most "
            f"{settings.settle:g} s) for the rest of it to use less than {QUIET:.0%} of a "
            f"core ({outcome.unsettled} of {outcome.started} runs started without that), and "
            f"a run during which other processes used more was repeated, up to "
            f"{settings.retries} times ({outcome.retried} repeats; {outcome.disturbed} runs "
            "kept though still disturbed)."
        )
    lines += [f"- {note}" for note in outcome.notes]
    lines += [
        "",
        "## The servers",
        "",
        "- **sockplay**: `twistd -n sockplay`, with its default settings (limits and idle",
        "  timeout on, on its default reactor, `sockplay`) and `--quiet`.",
        "- **asyncio**: `benchmarks/asyncio_server.py`, an `asyncio.Protocol` with sockplay's",
        "  wire behaviour, as fast as asyncio allows it: each read is framed and answered in",
        "  one pass through the batch path of sockplay's framing module (`feedReplies`, as",
        "  sockplay's server does) and one `transport.write`, so the difference measured is",
        "  the event loop and protocol layer, not the parsing.",
        "- **uvloop**: the same server on uvloop (`--uvloop`).",
        "- **twisted**: `benchmarks/twisted_server.py`, plain Twisted as its tutorials write",
        "  it: a `LineReceiver` whose `lineReceived` calls `sendLine(prefix + line)`, built",
        "  with `Factory.forProtocol`, on the stock reactor; keep-open line framing only.",
        "- **blocking**: `benchmarks/blocking_server.py`, the socket tutorial's server:",
        "  accept, `recv(1024)`, send, close, one connection after the other; one-shot raw",
        "  only. **blocking-threads**: the same with a thread per connection (`--threads`).",
        "",
        f"Every server listens on 127.0.0.1 with an accept backlog of {BACKLOG}.",
        "",
        "## Rounds",
        "",
        "Replies/s of every round, and in brackets the share of one core that other",
        "processes on the machine used meanwhile.",
        "",
        "| scenario | server | replies/s, round by round |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        rates = ", ".join(
            f"{rate:,.0f} ({other:.0%})" for rate, other in zip(row["rates"], row["others"],
                                                              strict=True)
        )
        lines.append(f"| {row['scenario']} | {row['server']} | {rates} |")
    lines += [
        "",
        "## Running it",
        "",
        "<!-- example: not run: installs the bench extra from the package index, and the full "
        "comparison takes minutes; tests/bench/test_bench.py runs compare.py --smoke -->",
        "```sh",
        "pip install '.[bench]'                      "
        "# matplotlib, uvloop (hdrhistogram: base install)",
        "python benchmarks/compare.py                # ~10 minutes; into a new temp dir",
        "python benchmarks/compare.py --output docs  # the same, rewriting docs/benchmarks.*",
        "python benchmarks/compare.py --smoke        # seconds; into a new temp dir (CI)",
        "python benchmarks/compare.py --load python  # the Python load generator, not the C one",
        "python benchmarks/compare.py --only ping-pong,idle --servers sockplay,uvloop",
        "python benchmarks/compare.py --sockplay-args '--reactor epoll'  # extra server options",
        "```",
        "",
        "`--only` takes the scenarios' keys: " + ", ".join(
            f"`{scenario.key}`" for scenario in SCENARIOS) + f", `{IDLE}`.",
        "",
        "The load generators on their own: the C one (its options are in the comment at",
        "the top of `benchmarks/loadgen.c`),",
        "",
        "<!-- example: not run: needs a checkout's benchmarks/ folder; "
        "tests/bench/test_loadgen.py runs the C load generator -->",
        "```sh",
        "cc -O2 -o /tmp/loadgen benchmarks/loadgen.c",
        "twistd -n sockplay --framing line --keep-open &",
        "/tmp/loadgen --port 12345 --keep-open --framing line --connections 50 --pipeline 16"
        " --duration 1",
        "```",
        "",
        "and the Python one:",
        "",
        "```sh",
        "twistd -n sockplay --framing line --keep-open &",
        "python -m sockplay.bench --keep-open --framing line --connections 50 --pipeline 16"
        " --duration 1",
        "python -m sockplay.bench --keep-open --framing line --rate 5000 --duration 1  # open loop",
        "",
        "twistd -n sockplay &                        # one-shot, raw: the defaults",
        "python -m sockplay.bench --connections 20 --requests 1000 --json",
        "```",
        "",
        "See `python -m sockplay.bench --help` and [bench.md](bench.md) for",
        "every option.",
        "",
    ]
    return "\n".join(lines)


def plot(outcome: Outcome, path: Path) -> bool:
    """
    Write the chart; C{False} if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return False
    thousands = FuncFormatter(lambda value, _: f"{value:,.0f}")
    rows = medians(outcome)
    panels = [s.name for s in SCENARIOS if any(r["scenario"] == s.name for r in rows)]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 4.2))
    colours = {"sockplay": "#d62728", "asyncio": "#1f77b4", "uvloop": "#2ca02c",
               "twisted": "#9467bd", "blocking": "#7f7f7f", "blocking-threads": "#bcbd22"}
    for axis, name in zip(axes, panels, strict=False):
        mine = [r for r in rows if r["scenario"] == name]
        bars = axis.bar([r["server"] for r in mine], [r["rate"] for r in mine],
                        color=[colours.get(r["server"], "#555555") for r in mine])
        for bar, row in zip(bars, mine, strict=True):
            if boundBy(row) == "load":
                # A floor: the load generator was the bottleneck.
                bar.set_hatch("//")
                bar.set_edgecolor("white")
        axis.set_title(name, fontsize=9)
        axis.set_ylabel("replies/s (median; hatched: at least)")
        axis.yaxis.set_major_formatter(thousands)
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    axis = axes[-1]
    names = list(outcome.idle)
    axis.bar(names, [outcome.idle[n]["perConnection"] / 1024 for n in names],
             color=[colours.get(n, "#555555") for n in names])
    count = next(iter(outcome.idle.values()))["connections"] if outcome.idle else 0
    axis.set_title(f"idle keep-open connections ({count:,})", fontsize=9)
    axis.set_ylabel("KiB of RSS per connection")
    axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def outputFolder(named: Path | None) -> Path:
    """
    Where the report goes: the folder C{named} on the command line (made if
    need be), or else a new temporary one. Never the tracked docs/ unless
    it is named (C{--output docs}): a trial run must not overwrite the
    published figures.
    """
    if named is None:
        return Path(tempfile.mkdtemp(prefix="sockplay-bench-"))
    named.mkdir(parents=True, exist_ok=True)
    return named


def _names(text: str) -> frozenset[str]:
    """
    A comma-separated list of names, for C{--only} and C{--servers}.
    """
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny runs, to check that everything works (CI)")
    parser.add_argument("--output", type=Path,
                        help="where to write benchmarks.md and benchmarks.png (default: a new "
                             "temporary directory; --output docs rewrites the tracked report)")
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, help="measured runs per server")
    parser.add_argument("--load", choices=("c", "python"),
                        help="the load generator: c (benchmarks/loadgen.c, compiled with cc; "
                             "the default when cc is found) or python (python -m sockplay.bench)")
    parser.add_argument("--sockplay-args", default="", metavar="OPTIONS",
                        help="more options for sockplay's server, such as '--reactor epoll'")
    parser.add_argument("--only", type=_names, metavar="SCENARIOS",
                        help="run only these scenarios (comma-separated: "
                             + ", ".join([*(s.key for s in SCENARIOS), IDLE]) + ")")
    parser.add_argument("--servers", type=_names, metavar="SERVERS",
                        help="run only these servers (comma-separated: sockplay, asyncio, "
                             "uvloop, twisted, blocking, blocking-threads)")
    options = parser.parse_args(argv)
    keys = {scenario.key for scenario in SCENARIOS} | {IDLE}
    if options.only is not None and not options.only <= keys:
        parser.error(f"--only: no scenario {', '.join(sorted(options.only - keys))} "
                     f"(choose from {', '.join(sorted(keys))})")
    try:
        sockplayArgs = tuple(shlex.split(options.sockplay_args))
    except ValueError as e:
        parser.error(f"--sockplay-args: {e}")
    settings = SMOKE if options.smoke else FULL
    if options.duration is not None or options.rounds is not None:
        settings = Settings(
            duration=options.duration or settings.duration,
            warmup=settings.warmup,
            rounds=options.rounds or settings.rounds,
            idleConnections=settings.idleConnections,
            hold=settings.hold,
            smoke=settings.smoke,
        )
    output = outputFolder(options.output)
    print(f"Writing the report into {output}", file=sys.stderr)
    when = datetime.datetime.now(datetime.timezone.utc)
    command = shlex.join(["python", "benchmarks/compare.py",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        with tempfile.TemporaryDirectory(prefix="sockplay-loadgen-") as folder:
            load, fallback = chooseLoad(options.load, Path(folder))
            print(f"Load generator: {load.description.replace('`', '')}", file=sys.stderr)
            if fallback:
                print("No C compiler (cc): the load comes from python -m sockplay.bench",
                      file=sys.stderr)
            choices = Choices(load, sockplayArgs, options.only, options.servers, command)
            outcome = compare(settings, choices)
            if fallback:
                outcome.notes.append(fallback)
    except Failure as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    chart = plot(outcome, output / "benchmarks.png")
    if not chart:
        print(f"matplotlib is not installed: no chart ({BENCH_EXTRA})", file=sys.stderr)
    (output / "benchmarks.md").write_text(render(outcome, settings, when, chart, choices))
    print(f"Wrote {output / 'benchmarks.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
