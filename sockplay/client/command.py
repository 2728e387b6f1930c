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
its round-trip time, and ends with ping-style statistics. With C{--retries}
it tries again, on a new connection, after a failure that may pass (a
refused or reset connection, no reply, a timeout).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from random import Random
from typing import Any, NoReturn

from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.python.failure import Failure

from sockplay.cli import exitWithError, parseOrExit
from sockplay.client.failures import describeFailure
from sockplay.client.options import Options
from sockplay.client.output import (
    formatProbe,
    formatReply,
    formatRetry,
    formatSummary,
    probeReport,
)
from sockplay.client.requests import ProbeResult, probe, request
from sockplay.client.retry import Retry

__all__ = ["main"]


def _reportFailure(config: Options) -> NoReturn:
    """
    Report the exception being handled in one line if it is an expected
    failure (with its traceback if it is a bug), and exit 1.
    """
    failure = Failure()
    message = describeFailure(failure, config)
    if message is None:
        failure.printTraceback(file=sys.stderr)
        raise SystemExit(1) from None
    exitWithError(message)


async def _probeMain(reactor: IReactorCore, config: Options, random: Random | None) -> None:
    """
    The command with C{--count}: a line per probe as it ends (unless
    C{--json}), then the statistics; exit 1 if any probe was lost.
    """

    def report(result: ProbeResult) -> None:
        if not config["json"]:
            print(formatProbe(result), flush=True)

    def notify(seq: int, retry: Retry) -> None:
        print(formatRetry(retry, config, seq), file=sys.stderr, flush=True)

    try:
        results = await probe(reactor, config, report, random=random, notify=notify)
    except Exception:
        _reportFailure(config)
    if config["json"]:
        print(json.dumps(probeReport(results, config.target())), flush=True)
    else:
        for line in formatSummary(results, config.target()):
            print(line, flush=True)
    if any(result.error is not None for result in results):
        raise SystemExit(1)


async def _main(reactor: IReactorCore, config: Options, random: Random | None = None) -> None:
    """
    The command: one exchange (with C{--count}, the probes), its output and
    its exit status.

    @param random: the source of the backoff's jitter; seeded from the
        system by default.
    """
    if config["insecure"]:
        print(
            "Warning: --insecure: the server's TLS certificate is not verified; "
            "anyone in the path can pose as the server",
            file=sys.stderr,
            flush=True,
        )
    if config["count"] is not None:
        await _probeMain(reactor, config, random)
        return

    def notify(retry: Retry) -> None:
        print(formatRetry(retry, config), file=sys.stderr, flush=True)

    try:
        reply = await request(reactor, config, random=random, notify=notify)
    except Exception:
        _reportFailure(config)
    print(formatReply(reply), flush=True)


def main(argv: Sequence[str] | None = None, _reactor: Any = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), run one exchange (with
    C{--count}, the probes) and exit: 0 with the reply (every reply), 1 on a
    failure (any probe lost), 2 on a usage error.
    """
    config = Options()  # type: ignore[no-untyped-call]
    parseOrExit(config, argv)
    react(_main, (config,), _reactor=_reactor)


if __name__ == "__main__":
    main()
