"""
Tests for L{sockplay.bench.command}: the options, and how the load is
split over processes.
"""

from __future__ import annotations

import ast
import socket
import sys
from pathlib import Path

import pytest
from support.bench import PREFIX
from support.servers import assertUsageError, run
from twisted.python import usage

import sockplay.bench
from sockplay import cli
from sockplay.bench.command import (
    MAX_MESSAGE_SIZE,
    MAX_PIPELINE,
    MAX_SECONDS,
    Options,
    ensureDescriptors,
    makePlans,
)
from sockplay.bench.target import BenchError


def parse(*argv: str) -> Options:
    """
    Parse bench options as the command line would.
    """
    config = Options()  # type: ignore[no-untyped-call]
    config.parseOptions(list(argv))  # type: ignore[no-untyped-call]
    return config


def test_defaultOptions() -> None:
    """
    By default, what the default server answers: 127.0.0.1:12345, raw
    framing, the tutorial's message and prefix, one-shot exchanges (one
    request per connection, as the server closes after one reply), 50 at
    once, for 10 seconds, a deadline 10 seconds later, and 2 seconds for
    each exchange.
    """
    config = parse()
    assert (config["host"], config["port"], config["framing"]) == ("127.0.0.1", 12345, "raw")
    assert (config["message"], config["prefix"]) == (b"Hello Server !", PREFIX)
    assert (config["connections"], config["pipeline"], config.mode) == (50, 1, "one-shot")
    assert (config["duration"], config["requests"], config["deadline"]) == (10.0, None, 20.0)
    assert (config["rate"], config["processes"], config["max-errors"]) == (None, 1, 1000)
    assert config["timeout"] == 2.0


def test_requestsInsteadOfDuration() -> None:
    """
    With C{--requests} there is no duration, and a longer deadline.
    """
    config = parse("--requests", "500", "-k", "--framing", "int32", "--pipeline", "8")
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


def test_modes() -> None:
    """
    C{-k}/C{--keep-open} and C{--hold} select their modes; C{--one-shot},
    the default, is still accepted.
    """
    assert parse("-k").mode == parse("--keep-open").mode == "keep-open"
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
        (["-k", "--framing", "eof"], "--keep-open cannot be used with --framing eof"),
        (["--hold", "1", "--framing", "eof"], "--hold cannot be used with --framing eof"),
        (["-k", "--one-shot"], "--keep-open and --one-shot cannot be used together"),
        (["-k", "--pipeline", "4"], "--pipeline needs line or int32 framing"),
        (["--framing", "line", "--pipeline", "4"], "--pipeline needs --keep-open"),
        (["--one-shot", "--framing", "line", "--pipeline", "4"], "--pipeline needs --keep-open"),
        (["--timeout", "0"], "--timeout must be a positive number"),
        (["--framing", "line", "--message", "a\nb"], "cannot contain LF"),
        (["--message", ""], "an empty message"),
        (["--hold", "1", "--rate", "10"], "--hold cannot be used with --rate"),
        (["--connections", "2", "--processes", "3"], "--processes cannot be more"),
        (["--connections", "0"], "--connections must be a whole number of at least 1"),
        (["--rate", "-5"], "--rate must be a number of at least 0.001, not '-5'"),
        (["--rate", "1e-300"], "--rate must be a number of at least 0.001, not '1e-300'"),
        (["--message-size", "1000000000000000"],
         f"--message-size must be a whole number from 0 to {MAX_MESSAGE_SIZE}, "
         "not '1000000000000000'"),
        (["--message-size", "-1"], "--message-size must be a whole number from 0 to"),
        (["--duration", "1e300"],
         f"--duration must be a positive number up to {MAX_SECONDS}, not '1e300'"),
        (["--hold", "1e300"], f"--hold must be a positive number up to {MAX_SECONDS}"),
        (["--deadline", "1e300"], f"--deadline must be a positive number up to {MAX_SECONDS}"),
        (["--timeout", "1e300"], f"--timeout must be a positive number up to {MAX_SECONDS}"),
        (["-k", "-f", "line", "--pipeline", "1000000000000000"],
         f"--pipeline must be a whole number from 1 to {MAX_PIPELINE}"),
        (["-k", "-f", "line", "--pipeline", "1024", "--message-size", "65537"],
         "--pipeline 1024 of 65537-byte messages puts more than 67108864 bytes in flight per "
         "connection: use a smaller --pipeline or message"),
        (["--host", ""], "--host must be a host name or an IP address, not ''"),
        (["--connect", ""],
         "--connect must be an endpoint string such as tcp:host=...:port=..., not ''"),
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


def test_largestMessageAndPipeline() -> None:
    """
    The bounds themselves are accepted: a L{MAX_MESSAGE_SIZE} message, and
    L{MAX_PIPELINE} requests in flight while they fit in it.
    """
    assert len(parse("--message-size", str(MAX_MESSAGE_SIZE))["message"]) == MAX_MESSAGE_SIZE
    config = parse("-k", "-f", "line", "--pipeline", str(MAX_PIPELINE), "--message-size", "100")
    assert config["pipeline"] == MAX_PIPELINE


def test_hugeMessageSizeOneErrorLine(tmp_path: Path) -> None:
    """
    The real command with a C{--message-size} no memory holds (issue 10: a
    MemoryError traceback) is one C{Error:} line and where help is, exit 2.
    """
    result = run([sys.executable, "-m", "sockplay.bench", "--message-size",
                  "1000000000000000"], tmp_path)
    assertUsageError(
        result,
        f"--message-size must be a whole number from 0 to {MAX_MESSAGE_SIZE}, "
        "not '1000000000000000'",
        "python -m sockplay.bench",
    )


def test_helpUsesTheSharedFlags() -> None:
    """
    The help names the short flags every sockplay command shares (C{-p}
    port, C{-m} message, C{-f} framing, C{-k} keep-open, C{-c} connect,
    C{-H} host, C{-q} quiet), and writes every default as C{[default: X]}.
    """
    text = str(Options())  # type: ignore[no-untyped-call]
    for flags in ("-p, --port", "-m, --message", "-f, --framing", "-k, --keep-open",
                  "-c, --connect", "-H, --host", "-q, --quiet"):
        assert flags in text
    assert "[default: one-shot]" in text and "[default: closed loop]" in text
    assert "Default:" not in text and "(default" not in text


def test_plansCarryTheTimeout() -> None:
    """
    Every load process gets the exchange timeout.
    """
    config = parse("--timeout", "0.5", "--processes", "2", "--requests", "4")
    assert [plan.timeout for plan in makePlans(config, socket.AF_INET, ("127.0.0.1", 1))] == [
        0.5, 0.5,
    ]


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


def test_targetOptions() -> None:
    """
    The target options are the shared ones: C{--host} and C{--port}, or
    C{--connect}, named as messages name them.
    """
    assert isinstance(parse(), cli.TargetOptions)
    assert parse("--host", "::1", "--port", "8000").target() == "[::1]:8000"
    assert parse("--connect", "unix:/run/s.sock").target() == "unix:/run/s.sock"


def test_descriptorsRaised(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The open-file limit is raised to what a load process needs.
    """
    asked: list[int | None] = []

    def raiseFileLimit(needed: int | None = None) -> tuple[int, int]:
        asked.append(needed)
        return 4096, 8192

    monkeypatch.setattr(cli, "raiseFileLimit", raiseFileLimit)
    ensureDescriptors(1064)
    assert asked == [1064]


@pytest.mark.parametrize("soft, hard", [(1024, 1024), (cli.UNLIMITED, cli.UNLIMITED)])
def test_descriptorsEnough(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int) -> None:
    """
    A limit at least as high as needed, or none, is enough.
    """
    monkeypatch.setattr(cli, "raiseFileLimit", lambda needed=None: (soft, hard))
    ensureDescriptors(1024)


def test_tooFewDescriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    If the hard limit keeps the soft limit below what a load process
    needs, the run cannot start, and the error says what to change.
    """
    monkeypatch.setattr(cli, "raiseFileLimit", lambda needed=None: (1000, 1000))
    with pytest.raises(BenchError) as caught:
        ensureDescriptors(1064)
    assert str(caught.value) == (
        "1064 file descriptors per load process are needed and the limit is 1000 "
        "(ulimit -Hn): use fewer --connections or more --processes"
    )


def test_benchImportsNeitherServerNorClient() -> None:
    """
    The bench imports of sockplay only itself, the shared command-line
    module, framing's option check, the latency histogram's settings and
    the tally: never the server or the client, and never framing's
    encoder, so that it stays an independent judge of the server.
    """
    package = Path(sockplay.bench.__file__).parent
    imported: set[tuple[str, str]] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {(alias.name, "") for alias in node.names}
    foreign = {
        (module, name) for module, name in imported
        if module.startswith("sockplay") and not module.startswith("sockplay.bench")
    }
    assert foreign == {("sockplay", "cli"), ("sockplay.cli", "port"),
                       ("sockplay.cli", "splitEndpoint"),
                       ("sockplay.framing", "framingOption"),
                       ("sockplay.framing", "checkKeepOpen"),
                       ("sockplay.latency", "HIGHEST_MICROSECONDS"),
                       ("sockplay.latency", "newHistogram"),
                       ("sockplay.stickiness", "ConnectionWatch"),
                       ("sockplay.stickiness", "Stickiness"),
                       ("sockplay.tally", "Tally"),
                       ("sockplay.tally", "formatTally"),
                       ("sockplay.tally", "identityOf")}
