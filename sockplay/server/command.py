"""
C{python -m sockplay.server}: the twistd service without twistd.

It takes the same options as C{twistd -n sockplay}, logs to standard output,
and runs until interrupted (SIGINT or SIGTERM), for people who come from
C{python3 server.py}.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from sockplay.cli import parseOrExit
from sockplay.server.reactor import chooseReactor
from sockplay.server.tap import Options, makeService

__all__ = ["main"]


def _serve(reactor: IReactorCore, config: Options) -> Deferred[None]:
    """
    Listen, then start the service once the reactor runs, and run until the
    reactor is stopped.

    C{react} calls this before it runs the reactor, which is when SIGINT and
    SIGTERM handlers are installed, so the service (which logs the ready
    line) starts only then: a signal sent on that line must stop the server
    cleanly. Listening happens at once, so that a listener that cannot start
    ends the process with its one-line message.
    """
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    service = makeService(config, reactor)
    service.privilegedStartService()
    # Fires only if the service cannot start: otherwise the server runs
    # until a signal stops the reactor.
    failed: Deferred[None] = Deferred()

    def start() -> None:
        try:
            service.startService()
        except SystemExit as e:
            # A part that cannot start (a worker process that cannot be
            # spawned) ends the program with its one line, as under twistd.
            # react knows SystemExit itself, not its subclasses (Failure.check
            # looks up the class's bases only for Exception's subclasses).
            failed.errback(SystemExit(e.code))

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    return failed


def main(argv: Sequence[str] | None = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}) and serve. Exits 2 on a usage
    error, 1 if a listener cannot start.
    """
    config = Options()
    parseOrExit(config, argv)
    react(_serve, (config,), chooseReactor(config["reactor"]))


if __name__ == "__main__":
    main()
