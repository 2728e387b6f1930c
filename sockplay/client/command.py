"""
C{python -m sockplay.client}: send one message, print the server's reply.

With the defaults it is the socket tutorial's client: it connects to
127.0.0.1:12345, sends C{Hello Server !} and prints
C{Response from the server: Message received: Hello Server !}.

The reply is read the way the framing defines it, so the same client works
against a sockplay server of any framing and against the tutorial's blocking
server (one C{recv(1024)}, a reply, a close).

With C{--tls} it speaks TLS and verifies the server's certificate. With
C{--count} it is a probe: it sends several messages, prints each reply with
its round-trip time, and ends with ping-style statistics, also when SIGINT
or SIGTERM stops it; with C{--metrics} too, it serves them to Prometheus
(C{--count 0}: a probe exporter). With C{--retries} it tries again, on a new connection,
after a failure that may pass (a refused or reset connection, no reply, a
timeout).

Its exit status tells a script what happened (L{sockplay.client.verdict}):
0 an echo of the message, 1 no reply, 2 a usage error, 3 an error reply,
4 a reply that is not an echo.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from random import Random
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.python.failure import Failure

from sockplay.cli import exitWithError, parseOrExit
from sockplay.client.failures import describeFailure, exitStatus
from sockplay.client.options import Options
from sockplay.client.output import (
    formatBanner,
    formatProbe,
    formatReply,
    formatRetry,
    formatSummary,
    probeReport,
)
from sockplay.client.requests import ProbeResult, probe, request
from sockplay.client.retry import Retry
from sockplay.client.summary import ProbeSummary
from sockplay.client.verdict import FAILED, problem
from sockplay.tally import formatTally

__all__ = ["main"]


def _reportFailure(config: Options) -> NoReturn:
    """
    Report the exception being handled in one line if it is an expected
    failure, and exit with its status (with its traceback, and 1, if it is
    a bug).
    """
    failure = Failure()
    message = describeFailure(failure, config)
    if message is None:
        failure.printTraceback(file=sys.stderr)
        raise SystemExit(FAILED) from None
    exitWithError(message, exitStatus(failure))


class _Stoppable:
    """
    The command's work, cancelled when the reactor is asked to stop (its
    SIGINT and SIGTERM handlers ask), so that the command can still print
    what it has; the reactor's shutdown waits until it has.
    """

    def __init__(self, reactor: IReactorCore) -> None:
        self._work: Deferred[Any] | None = None
        self.finished: Deferred[None] = Deferred()
        reactor.addSystemEventTrigger("before", "shutdown", self._stop)

    def watch(self, work: Deferred[Any]) -> None:
        """
        Cancel C{work} if the reactor is asked to stop before it is done.
        """
        self._work = work

    def _stop(self) -> Deferred[None]:
        if self._work is not None:
            self._work.cancel()
        return self.finished


async def _probeMain(
    reactor: IReactorCore, config: Options, random: Random | None, stoppable: _Stoppable
) -> None:
    """
    The command with C{--count}: a line per probe as it ends (unless
    C{--json}), then the statistics (and with C{--tally}, which backend
    answered), also when stopped by a signal; exit 1 if any probe was lost,
    but for a probe exporter (C{--count 0 --metrics}), which exits 0 when
    stopped.
    With C{--metrics}, the probes are also served as Prometheus metrics
    while they run.

    Only C{--json} keeps every probe, to print them at the end; otherwise
    the statistics are kept as running sums (L{ProbeSummary}), so that
    C{--count 0} runs in bounded memory.
    """
    tallied = config["message"] if config["tally"] else None
    summary = ProbeSummary(tallied, bool(config["keep-open"]))
    results: list[ProbeResult] = []
    observers: list[Callable[[ProbeResult], object]] = [summary.add]
    if config["json"]:
        observers.append(results.append)
    else:
        observers.append(lambda result: print(formatProbe(result), flush=True))
    port = None
    if config["metrics"] is not None:
        # Imported only when asked for, as the server's metrics are:
        # twisted.web and prometheus_client take a while to import.
        from sockplay.client.exporter import ProbeMetrics, listenForMetrics, metricsURL

        metrics = ProbeMetrics(tallied)
        try:
            port = await listenForMetrics(reactor, config["metrics"], metrics)
        except Exception:
            _reportFailure(config)
        print(
            f"Serving metrics on {metricsURL(port)} ({config['metrics']})",
            file=sys.stderr,
            flush=True,
        )
        observers.append(metrics.observe)

    def report(result: ProbeResult) -> None:
        for observe in observers:
            observe(result)

    def notify(seq: int, retry: Retry) -> None:
        print(formatRetry(retry, config, seq), file=sys.stderr, flush=True)

    try:
        probing = Deferred.fromCoroutine(
            probe(reactor, config, report, random=random, notify=notify)
        )
        stoppable.watch(probing)
        try:
            await probing
        except Exception:
            _reportFailure(config)
    finally:
        stopped = port.stopListening() if port is not None else None
        if stopped is not None:
            await stopped
    if config["json"]:
        print(json.dumps(probeReport(results, summary, config.target())), flush=True)
    else:
        for line in formatSummary(summary, config.target()):
            print(line, flush=True)
        tally = summary.tallyReport()
        for line in formatTally(tally) if tally is not None else ():
            print(line, flush=True)
    # A probe exporter (--count 0 --metrics) runs until it is stopped, as a
    # service: its losses are in its metrics, and a stop is no failure.
    exporter = config["metrics"] is not None and config["count"] == 0
    if summary.received < summary.sent and not exporter:
        raise SystemExit(FAILED)


async def _main(reactor: IReactorCore, config: Options, random: Random | None = None) -> None:
    """
    The command: one exchange (with C{--count}, the probes), its output and
    its exit status.

    @param random: the source of the backoff's jitter; seeded from the
        system by default.
    """
    stoppable = _Stoppable(reactor)
    try:
        await _run(reactor, config, random, stoppable)
    finally:
        stoppable.finished.callback(None)


async def _run(
    reactor: IReactorCore, config: Options, random: Random | None, stoppable: _Stoppable
) -> None:
    """
    What L{_main} does, its work watched by C{stoppable}.
    """
    if config["insecure"]:
        print(
            "Warning: --insecure: the server's TLS certificate is not verified; "
            "anyone in the path can pose as the server",
            file=sys.stderr,
            flush=True,
        )
    if config["count"] is not None:
        await _probeMain(reactor, config, random, stoppable)
        return

    def notify(retry: Retry) -> None:
        print(formatRetry(retry, config), file=sys.stderr, flush=True)

    asking = Deferred.fromCoroutine(request(reactor, config, random=random, notify=notify))
    stoppable.watch(asking)
    try:
        reply = await asking
    except Exception:
        _reportFailure(config)
    for banner in reply.banners:
        print(formatBanner(banner), flush=True)
    print(formatReply(reply.payload), flush=True)
    wrong = problem(reply.payload, config["message"], config["framing"], config.target())
    if wrong is not None:
        status, message = wrong
        exitWithError(message, status)


def main(argv: Sequence[str] | None = None, _reactor: Any = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), run one exchange (with
    C{--count}, the probes) and exit: 0 with an echo of the message (with
    C{--count}, every probe echoed), 1 on a failure (any probe lost), 2 on a
    usage error, 3 for an error reply, 4 for a reply that is not an echo.
    """
    config = Options()
    parseOrExit(config, argv)
    react(_main, (config,), _reactor=_reactor)


if __name__ == "__main__":
    main()
