"""
C{python -m sockplay.bench}: a load generator for echo-reply servers that
checks every byte of every reply.

It opens C{--connections} connections to a server and sends requests, closed
loop (the next request when a reply comes in, C{--pipeline} in flight per
connection) or open loop (C{--rate} requests per second, latency counted
from when each request was due), for C{--duration} seconds or C{--requests}
requests, always within a hard C{--deadline}. Each reply must be exactly the
prefix and the message, framed: any other byte, a connection that fails, or
a server that closes too early is counted by kind, and the run exits 1.

It prints a live progress line on stderr and, at the end, a summary:
requests, replies per second, errors by kind, and the latency distribution
from an HDR histogram (C{--json}: the same as one JSON object).

The load runs in one process, or in C{--processes} processes whose results
(histograms included) merge exactly. See docs/benchmarks.md.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

from twisted.python import usage

from sockplay.bench.check import makeExchange
from sockplay.bench.loop import Plan, Worker
from sockplay.bench.stats import Results, formatSummary
from sockplay.cli import number
from sockplay.cli import port as portOption
from sockplay.framing import FRAMINGS

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "BenchError",
    "Options",
    "Progress",
    "main",
    "makePlans",
    "parseEndpoint",
    "run",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345
DEFAULT_PREFIX = "Message received: "
DEFAULT_MESSAGE = "Hello Server !"
DEFAULT_CONNECTIONS = 50
DEFAULT_DURATION = 10.0

# Seconds the hard deadline adds to the planned length of a run, to let the
# last replies in: past it, whatever is unanswered has failed.
DEADLINE_MARGIN = 10.0

# The deadline when the length of a run is a number of requests: long
# enough for millions of requests at the rates this generator reaches.
REQUESTS_DEADLINE = 120.0

# Errors after which a run stops: enough to see a pattern, few enough that
# a dead server does not get hammered with connection attempts.
DEFAULT_MAX_ERRORS = 1000

# File descriptors a load process needs besides its connections.
SPARE_DESCRIPTORS = 64

# Seconds a load process may take, past the deadline, to report its
# results before it is killed.
REPORT_GRACE = 10.0

# The progress line: redrawn this often (seconds) on a terminal, written as
# a new line this often otherwise (a log should not fill up with them).
TTY_PROGRESS = 1.0
LOG_PROGRESS = 5.0

# The characters of --message-size messages: printable ASCII, so never a
# line delimiter.
_PATTERN = bytes(range(33, 127))


class BenchError(Exception):
    """
    An error the user can cause (a bad target, too few file descriptors),
    with the one-line message to show.
    """


def _framing(value: str) -> str:
    if value not in FRAMINGS:
        raise ValueError(f"--framing must be one of {', '.join(FRAMINGS)}, not {value!r}")
    return value


def _messageSize(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"--message-size must be a whole number of bytes, not {value!r}")
    return number


class Options(usage.Options):
    """
    Command-line options of the load generator.
    """

    synopsis = "[options]"
    longdesc = (
        "Load an echo-reply server and check every reply byte. Exits 0 if every "
        "request got the right reply, 1 otherwise, 2 on a usage error."
    )
    optFlags = [
        ["one-shot", None, "Every request on a new connection, read until the server closes "
         "(for a server without --keep-open). Default: keep-open connections."],
        ["json", None, "Print the summary as one JSON object."],
        ["quiet", "q", "No progress line."],
    ]
    optParameters = [
        ["host", "H", DEFAULT_HOST, "Server host name or address."],
        ["port", "p", DEFAULT_PORT, "Server TCP port.", portOption],
        ["connect", "c", None, "A client endpoint string (tcp:host=H:port=P, tcp6:..., "
         "unix:path=...); overrides --host and --port."],
        ["framing", "f", "raw", "raw, line, int32 or eof: must match the server's.", _framing],
        ["prefix", None, DEFAULT_PREFIX, "The reply prefix the server uses."],
        ["message", "m", None, f"The message to send. [default: {DEFAULT_MESSAGE}]"],
        ["message-size", None, None, "Send a message of this many bytes (printable ASCII) "
         "instead of --message.", _messageSize],
        ["connections", None, DEFAULT_CONNECTIONS,
         "Connections (--one-shot: exchanges at once).", number("--connections", int, 1)],
        ["duration", "d", None, f"Seconds to send requests for. [default: {DEFAULT_DURATION:g}]",
         number("--duration", float, 0.0, positive=True)],
        ["requests", "n", None, "Send this many requests in all, instead of a duration.",
         number("--requests", int, 1)],
        ["pipeline", None, 1, "Requests in flight per keep-open connection.",
         number("--pipeline", int, 1)],
        ["rate", None, None, "Open loop: requests per second in all, latency counted from "
         "when each was due. Default: closed loop.", number("--rate", float, 0.0, positive=True)],
        ["processes", None, 1, "Spread the load over this many processes.",
         number("--processes", int, 1)],
        ["hold", None, None, "Make one exchange on each connection, then hold them all open, "
         "idle, this many seconds (to measure what idle connections cost).",
         number("--hold", float, 0.0, positive=True)],
        ["deadline", None, None, "Hard bound on the whole run, in seconds. [default: the "
         f"duration + {DEADLINE_MARGIN:g}; {REQUESTS_DEADLINE:g} with --requests; the hold "
         f"+ {REQUESTS_DEADLINE:g} with --hold]", number("--deadline", float, 0.0, positive=True)],
        ["max-errors", None, DEFAULT_MAX_ERRORS, "Stop after this many errors.",
         number("--max-errors", int, 1)],
    ]

    def postOptions(self) -> None:
        framing = self["framing"]
        if self["message"] is not None and self["message-size"] is not None:
            raise usage.UsageError("--message and --message-size cannot be used together")
        if self["message-size"] is not None:
            size = self["message-size"]
            message = (_PATTERN * (size // len(_PATTERN) + 1))[:size]
        else:
            text = DEFAULT_MESSAGE if self["message"] is None else self["message"]
            message = text.encode("utf-8", "surrogateescape")
        self["message"] = message
        self["prefix"] = self["prefix"].encode("utf-8", "surrogateescape")
        if self["duration"] is not None and self["requests"] is not None:
            raise usage.UsageError("--duration and --requests cannot be used together")
        if self["hold"] is not None:
            for name in ("one-shot", "rate", "duration", "requests"):
                if self[name]:
                    raise usage.UsageError(f"--hold cannot be used with --{name}")
            if self["pipeline"] != 1:
                raise usage.UsageError("--hold cannot be used with --pipeline")
        elif self["duration"] is None and self["requests"] is None:
            self["duration"] = DEFAULT_DURATION
        if framing == "raw" and not message:
            raise usage.UsageError("an empty message cannot be sent in raw framing")
        if framing == "line" and (b"\n" in message or message.endswith(b"\r")):
            raise usage.UsageError(
                "in line framing the message cannot contain LF or end with CR"
            )
        if framing == "eof" and not self["one-shot"]:
            raise usage.UsageError("--framing eof needs --one-shot (one message per connection)")
        if self["one-shot"] and self["pipeline"] != 1:
            raise usage.UsageError("--pipeline cannot be used with --one-shot")
        if framing == "raw" and self["pipeline"] != 1:
            raise usage.UsageError(
                "--pipeline needs line or int32 framing: a raw server answers each read, "
                "so pipelined raw requests merge"
            )
        if self["processes"] > self["connections"]:
            raise usage.UsageError("--processes cannot be more than --connections")
        if self["requests"] is not None and self["processes"] > self["requests"]:
            raise usage.UsageError("--processes cannot be more than --requests")
        if self["deadline"] is None:
            if self["hold"] is not None:
                self["deadline"] = self["hold"] + REQUESTS_DEADLINE
            elif self["requests"] is not None:
                self["deadline"] = REQUESTS_DEADLINE
            else:
                self["deadline"] = self["duration"] + DEADLINE_MARGIN

    @property
    def mode(self) -> str:
        """
        C{"keep-open"}, C{"one-shot"} or C{"hold"}.
        """
        if self["hold"] is not None:
            return "hold"
        return "one-shot" if self["one-shot"] else "keep-open"

    def target(self) -> str:
        """
        What the load goes to, for messages.
        """
        if self["connect"]:
            return str(self["connect"])
        host = self["host"]
        return f"[{host}]:{self['port']}" if ":" in host else f"{host}:{self['port']}"


def _splitEndpoint(description: str) -> list[str]:
    """
    Split a Twisted endpoint string at its unescaped colons, removing the
    backslash escapes.
    """
    parts = [""]
    escaped = False
    for character in description:
        if escaped:
            parts[-1] += character
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            parts.append("")
        else:
            parts[-1] += character
    return parts


def parseEndpoint(description: str) -> tuple[int, Any]:
    """
    The address family and socket address of a client endpoint string:
    C{tcp:host=H:port=P} (or C{tcp:H:P}), C{tcp6:...} or C{unix:path=...}
    (or C{unix:PATH}), in Twisted's syntax. A C{timeout} argument is
    accepted and ignored (the run has its deadline).

    @raise BenchError: for any other endpoint, or a malformed one.
    """
    kind, *arguments = _splitEndpoint(description)
    names = {"tcp": ["host", "port"], "tcp6": ["host", "port"], "unix": ["path"]}
    if kind not in names:
        raise BenchError(
            f"bad --connect endpoint {description!r}: the load generator supports "
            "tcp:, tcp6: and unix: endpoints"
        )
    values: dict[str, str] = {}
    positional = iter(names[kind])
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if not equals:
            name, value = next(positional, ""), argument
        if name == "timeout":
            continue
        if name not in names[kind] or name in values:
            raise BenchError(f"bad --connect endpoint {description!r}: unexpected {argument!r}")
        values[name] = value
    missing = [name for name in names[kind] if not values.get(name)]
    if missing:
        raise BenchError(f"bad --connect endpoint {description!r}: no {missing[0]}")
    if kind == "unix":
        return socket.AF_UNIX, values["path"]
    try:
        port = portOption(values["port"])
    except ValueError:
        raise BenchError(
            f"bad --connect endpoint {description!r}: bad port {values['port']!r}"
        ) from None
    return resolve(values["host"], port, socket.AF_INET6 if kind == "tcp6" else socket.AF_INET)


def resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[int, Any]:
    """
    The address family and socket address to connect to for C{host}.

    @raise BenchError: if the name does not resolve.
    """
    try:
        found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise BenchError(f"cannot resolve {host!r}: {e}") from None
    family, _, _, _, address = found[0]
    return family, address


def makePlans(config: Options, family: int, address: Any) -> list[Plan]:
    """
    Split the load that C{config} describes over C{config["processes"]}
    processes: connections, requests and rate as evenly as they divide.
    """
    count: int = config["processes"]

    def share(total: int, index: int) -> int:
        return total // count + (1 if index < total % count else 0)

    exchange = makeExchange(config["framing"], config["message"], config["prefix"])
    plans = []
    for index in range(count):
        plans.append(
            Plan(
                family=family,
                address=address,
                exchange=exchange,
                mode=config.mode,
                connections=share(config["connections"], index),
                pipeline=config["pipeline"],
                duration=config["duration"],
                requests=(
                    share(config["requests"], index) if config["requests"] is not None else None
                ),
                rate=config["rate"] / count if config["rate"] is not None else None,
                deadline=config["deadline"],
                maxErrors=config["max-errors"],
                hold=config["hold"] or 0.0,
            )
        )
    return plans


def ensureDescriptors(needed: int) -> None:
    """
    Raise this process's soft limit on open files to C{needed} if it is
    lower (the hard limit permitting); children inherit it.

    @raise BenchError: if the hard limit is lower.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise BenchError(
                f"{needed} file descriptors per load process are needed and the limit is "
                f"{hard} (ulimit -Hn): use fewer --connections or more --processes"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class Progress:
    """
    The live progress line on stderr: on a terminal, redrawn in place about
    once a second; otherwise a plain line every few seconds.
    """

    def __init__(
        self, stream: IO[str], clock: Callable[[], float] = time.monotonic, tty: bool | None = None
    ) -> None:
        """
        @param tty: whether C{stream} is a terminal (default: ask it).
        """
        self._stream = stream
        self._clock = clock
        self._tty = stream.isatty() if tty is None else tty
        self._interval = TTY_PROGRESS if self._tty else LOG_PROGRESS
        self._start = clock()
        self._last = self._start
        self._lastOk = 0
        self._drawn = False

    def update(self, ok: int, errors: int) -> None:
        """
        Show the totals so far, if it is time to.
        """
        now = self._clock()
        if now - self._last < self._interval:
            return
        rate = (ok - self._lastOk) / (now - self._last)
        self._last, self._lastOk = now, ok
        line = f"{now - self._start:6.1f} s  {ok:>12,} ok  {rate:>10,.0f}/s  {errors:,} errors"
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def note(self, text: str) -> None:
        """
        Show a line that stays.
        """
        self.finish()
        self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """
        Clear the progress line (on a terminal) before the summary.
        """
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


def _runOne(plan: Plan, progress: Progress | None) -> Results:
    """
    Run the whole load in this process.
    """

    def onTick(worker: Worker) -> None:
        if progress is not None:
            progress.update(worker.results.ok, worker.results.errorCount)

    def onHold(count: int) -> None:
        if progress is not None:
            progress.note(f"holding {count} connections open for {plan.hold:g} s")

    return Worker(plan, onTick=onTick, onHold=onHold).run()


def _workerMain(plan: Plan, slot: int, counters: Any, holding: Any, output: Connection) -> None:
    """
    A load process: run C{plan}, keep its totals in C{counters} for the
    progress line, and send its results, as plain data, to C{output}.
    """

    def onTick(worker: Worker) -> None:
        counters[2 * slot] = worker.results.ok
        counters[2 * slot + 1] = worker.results.errorCount

    def onHold(count: int) -> None:
        holding[slot] = count + 1

    try:
        results = Worker(plan, onTick=onTick, onHold=onHold).run()
    except KeyboardInterrupt:
        results = Results(stopped="interrupted")
    output.send(results.toWire())
    output.close()


def _runMany(plans: list[Plan], progress: Progress | None) -> Results:
    """
    Run one plan per process and merge their results.
    """
    # Imported here: multiprocessing takes a tenth of a second to import,
    # and most runs use one process.
    import multiprocessing
    from multiprocessing.connection import wait

    methods = multiprocessing.get_all_start_methods()
    context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    counters = context.Array("q", 2 * len(plans), lock=False)
    holding = context.Array("q", len(plans), lock=False)
    processes = []
    readers: dict[Connection, int] = {}
    for slot, plan in enumerate(plans):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_workerMain, args=(plan, slot, counters, holding, writer), daemon=True
        )
        process.start()
        writer.close()
        processes.append(process)
        readers[reader] = slot
    merged: Results | None = None
    limit = time.monotonic() + plans[0].deadline + REPORT_GRACE
    held = False
    try:
        while readers and time.monotonic() < limit:
            try:
                ready = wait(list(readers), timeout=0.25)
            except KeyboardInterrupt:
                # The load processes got it too, and report what they have.
                continue
            for done in ready:
                reader = cast("Connection", done)
                slot = readers.pop(reader)
                try:
                    results = Results.fromWire(reader.recv())
                except EOFError:
                    results = Results()
                    results.addError("worker", f"load process {slot} died")
                if merged is None:
                    merged = results
                else:
                    merged.merge(results)
            if progress is not None:
                progress.update(
                    sum(counters[0::2]), sum(counters[1::2])
                )
                if not held and all(holding):
                    held = True
                    count = sum(holding) - len(plans)
                    progress.note(f"holding {count} connections open for {plans[0].hold:g} s")
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()
    if merged is None:
        merged = Results(processes=0)
    for slot in readers.values():
        failed = Results(processes=0)
        failed.addError("worker", f"load process {slot} did not report in time")
        merged.merge(failed)
    return merged


def run(config: Options, stdout: TextIO, stderr: TextIO) -> int:
    """
    Generate the load C{config} describes and print its summary.

    @return: the exit status: 0 if every request got the right reply, else 1.
    @raise BenchError: for a target that cannot be used.
    """
    if config["connect"]:
        family, address = parseEndpoint(config["connect"])
    else:
        family, address = resolve(config["host"], config["port"])
    plans = makePlans(config, family, address)
    ensureDescriptors(max(plan.connections for plan in plans) + SPARE_DESCRIPTORS)
    progress = None if config["quiet"] else Progress(stderr)
    if len(plans) == 1:
        results = _runOne(plans[0], progress)
    else:
        results = _runMany(plans, progress)
    if progress is not None:
        progress.finish()
    summary = results.summary(
        {
            "target": config.target(),
            "framing": config["framing"],
            "mode": config.mode,
            "connections": config["connections"],
            "pipeline": config["pipeline"],
            "processes": config["processes"],
            "rate": config["rate"],
            "messageSize": len(config["message"]),
        }
    )
    if config["json"]:
        stdout.write(json.dumps(summary) + "\n")
    else:
        stdout.write(formatSummary(summary) + "\n")
    stdout.flush()
    if results.failed:
        problems = [f"{count} {kind}" for kind, count in results.errors.items() if count]
        if results.unanswered:
            problems.append(f"{results.unanswered} unanswered")
        if results.stopped:
            problems.append(f"stopped early ({results.stopped})")
        stderr.write(f"Error: {', '.join(problems)}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), run the load and exit: 0 if
    every reply was right, 1 otherwise, 2 on a usage error.
    """
    config = Options()  # type: ignore[no-untyped-call]
    try:
        config.parseOptions(list(argv) if argv is not None else None)  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        print("Try 'python -m sockplay.bench --help'.", file=sys.stderr)
        sys.exit(2)
    try:
        status = run(config, sys.stdout, sys.stderr)
    except BenchError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status)


if __name__ == "__main__":
    main()
