"""
C{python -m sockplay.bench}: a load generator for echo-reply servers that
checks every byte of every reply.

It makes C{--connections} exchanges at once, one-shot (every request on a
new connection, read until the server closes: what the default server
does) or on keep-open connections (C{--keep-open}: the next request when a
reply comes in, C{--pipeline} in flight per connection), closed loop or
open loop (C{--rate} requests per second, latency counted from when each
request was due), for C{--duration} seconds or C{--requests} requests,
always within a hard C{--deadline}. Each reply must be exactly the prefix
and the message, framed: any other byte, a connection that fails, a server
that closes too early or keeps an exchange waiting past C{--timeout} is
counted by kind, and the run exits 1, with a hint when the failures point
at a setting that does not match the server's.

It prints a live progress line on stderr and, at the end, a summary:
requests, replies per second, errors by kind, and the latency distribution
from an HDR histogram (C{--json}: the same as one JSON object).

The load runs in one process, or in C{--processes} processes whose results
(histograms included) merge exactly. See docs/bench.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.python import usage

from sockplay import cli
from sockplay.bench.check import makeExchange
from sockplay.bench.diagnosis import diagnose
from sockplay.bench.plan import DEFAULT_TIMEOUT, Plan
from sockplay.bench.processes import runPlans
from sockplay.bench.progress import Progress
from sockplay.bench.stats import formatSummary
from sockplay.bench.target import BenchError, parseEndpoint, resolve
from sockplay.framing import checkKeepOpen, framingOption

__all__ = ["Options", "ensureDescriptors", "main", "makePlans", "run"]

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

# The characters of --message-size messages: printable ASCII, so never a
# line delimiter.
_PATTERN = bytes(range(33, 127))


# The largest --message-size, and the most bytes in flight on one
# connection (--pipeline messages): 64 MiB, a thousand times the server's
# default --max-message. The bench holds the message and writes up to a
# pipeline's worth at once, so this also bounds its memory.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024

# The most requests in flight per connection: far more than any client
# pipelines; past it, a run measures socket buffers, not the server.
MAX_PIPELINE = 1024

# The longest --duration, --hold, --deadline or --timeout, in seconds: a
# month, longer than any soak test, and within the loop's nanosecond clock
# arithmetic (a float of seconds times 10**9 must stay finite).
MAX_SECONDS = 30 * 24 * 3600.0

# The lowest --rate, in requests per second: one every quarter of an hour
# is no load; slower, the time between requests overflows the loop's clock
# arithmetic somewhere below 1e-290.
MIN_RATE = 0.001


def _seconds(option: str) -> Callable[[str], float]:
    """
    A coerce function for a positive number of seconds, at most
    L{MAX_SECONDS}.
    """
    return cli.number(option, float, 0.0, MAX_SECONDS, positive=True)


class Options(cli.TargetOptions):
    """
    Command-line options of the load generator: the target's (C{--host},
    C{--port}, C{--connect}) and the load's.
    """

    program = "python -m sockplay.bench"
    longdesc = (
        "Load an echo-reply server and check every reply byte. Exits 0 if every "
        "request got the right reply, 1 otherwise (with a hint when the failures point "
        "at a setting that does not match the server's), 2 on a usage error."
    )
    optFlags = [
        ["keep-open", "k", "Keep each connection open for many requests (for a server "
         "started with --keep-open). [default: one-shot]"],
        ["one-shot", None, "Every request on a new connection, read until the server closes "
         "(for a server without --keep-open): the default, accepted for old command lines."],
        ["json", None, "Print the summary as one JSON object."],
        ["tally", None, "Group the replies by the backend that sent them: any prefix in front "
         "of the message is right (the message is still checked byte for byte), and is the "
         "backend's identity; the summary adds each one's count, share and p50/p99 latency, "
         "and with --keep-open whether each connection's replies came from one backend. "
         "--prefix is then not used."],
        ["quiet", "q", "No progress line."],
    ]
    optParameters = [
        ["framing", "f", "raw", "raw, line, int32 or eof: must match the server's.",
         framingOption],
        ["prefix", None, DEFAULT_PREFIX, "The reply prefix the server uses."],
        ["message", "m", None, f"The message to send. [default: {DEFAULT_MESSAGE}]"],
        ["message-size", None, None, "Send a message of this many bytes (printable ASCII) "
         f"instead of --message (at most {MAX_MESSAGE_SIZE}).",
         cli.number("--message-size", int, 0, MAX_MESSAGE_SIZE)],
        ["connections", None, DEFAULT_CONNECTIONS,
         "Exchanges at once (--keep-open: connections).", cli.number("--connections", int, 1)],
        ["duration", "d", None, f"Seconds to send requests for. [default: {DEFAULT_DURATION:g}]",
         _seconds("--duration")],
        ["requests", "n", None, "Send this many requests in all, instead of a duration.",
         cli.number("--requests", int, 1)],
        ["pipeline", None, 1, "Requests in flight per connection (with --keep-open).",
         cli.number("--pipeline", int, 1, MAX_PIPELINE)],
        ["rate", None, None, "Open loop: requests per second in all, latency counted from "
         "when each was due. [default: closed loop]",
         cli.number("--rate", float, MIN_RATE)],
        ["processes", None, 1, "Spread the load over this many processes.",
         cli.number("--processes", int, 1)],
        ["hold", None, None, "Make one exchange on each connection, then hold them all open, "
         "idle, this many seconds (to measure what idle connections cost).",
         _seconds("--hold")],
        ["deadline", None, None, "Hard bound on the whole run, in seconds. [default: the "
         f"duration + {DEADLINE_MARGIN:g}; {REQUESTS_DEADLINE:g} with --requests; the hold "
         f"+ {REQUESTS_DEADLINE:g} with --hold]",
         _seconds("--deadline")],
        ["timeout", None, DEFAULT_TIMEOUT, "Seconds the server may keep an exchange waiting "
         "(for the next byte of a reply; one-shot: also for the close after it) before it fails "
         "as a timeout; if no exchange is answered in time, the run stops.",
         _seconds("--timeout")],
        ["max-errors", None, DEFAULT_MAX_ERRORS, "Stop after this many errors.",
         cli.number("--max-errors", int, 1)],
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
        if self["keep-open"] and self["one-shot"]:
            raise usage.UsageError("--keep-open and --one-shot cannot be used together")
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
        if len(message) * self["pipeline"] > MAX_MESSAGE_SIZE:
            raise usage.UsageError(
                f"--pipeline {self['pipeline']} of {len(message)}-byte messages puts more than "
                f"{MAX_MESSAGE_SIZE} bytes in flight per connection: use a smaller --pipeline "
                "or message"
            )
        if framing == "line" and (b"\n" in message or message.endswith(b"\r")):
            raise usage.UsageError(
                "in line framing the message cannot contain LF or end with CR"
            )
        if self["keep-open"] or self["hold"] is not None:
            try:
                checkKeepOpen(framing)
            except ValueError as e:
                option = "--keep-open" if self["keep-open"] else "--hold"
                raise usage.UsageError(str(e).replace("--keep-open", option, 1)) from None
        elif self["pipeline"] != 1:
            raise usage.UsageError(
                "--pipeline needs --keep-open: a one-shot exchange sends one request"
            )
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
        C{"one-shot"} (the default), C{"keep-open"} or C{"hold"}.
        """
        if self["hold"] is not None:
            return "hold"
        return "keep-open" if self["keep-open"] else "one-shot"


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
                timeout=config["timeout"],
                tally=bool(config["tally"]),
            )
        )
    return plans


def ensureDescriptors(needed: int) -> None:
    """
    Raise this process's soft limit on open files to C{needed} if it is
    lower (the hard limit permitting); children inherit it.

    @raise BenchError: if the hard limit is lower.
    """
    soft, hard = cli.raiseFileLimit(needed)
    if soft != cli.UNLIMITED and soft < needed:
        raise BenchError(
            f"{needed} file descriptors per load process are needed and the limit is "
            f"{hard} (ulimit -Hn): use fewer --connections or more --processes"
        )


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
    progress = (
        None if config["quiet"]
        else Progress(stderr, duration=config["duration"], requests=config["requests"])
    )
    results = runPlans(plans, progress)
    if progress is not None:
        progress.finish()
    hint = (
        diagnose(results, plans[0], config["message"], config["prefix"], config.target())
        if results.failed
        else None
    )
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
        },
        hint,
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
        if hint is not None:
            stderr.write(f"Hint: {hint}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), run the load and exit: 0 if
    every reply was right, 1 otherwise, 2 on a usage error.
    """
    config = Options()  # type: ignore[no-untyped-call]
    cli.parseOrExit(config, argv)
    try:
        status = run(config, sys.stdout, sys.stderr)
    except BenchError as e:
        cli.exitWithError(str(e))
    sys.exit(status)


if __name__ == "__main__":
    main()
