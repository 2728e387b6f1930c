"""
The first code a C{--workers} worker process runs: tie its life to its
parent's, then serve (L{sockplay.server.worker}).

A worker must never outlive the parent that shares its sockets out, or it
goes on serving as an orphan that nothing will stop. On Linux the kernel
sends a process a signal when its parent dies, once the process asks for
it (C{PR_SET_PDEATHSIG}); a parent that dies before the asking sends
nothing. So the worker asks first, before anything slow, and then checks
that the parent it was started by is still its parent: if not, the parent
died in that window and the worker exits at once.

This module lives outside C{sockplay.server} and imports only the standard
library: importing that package (Twisted, the protocol, the factory) takes
half a second, a window in which a killed parent used to leave orphans.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence

__all__ = ["dieWithParent", "main", "tieToParent"]

# prctl(2) option: the signal to get when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

# The parent's death is a stop request like any other: SIGTERM drains the
# worker's connections (or, before the worker handles signals, ends it).
DEATH_SIGNAL = signal.SIGTERM


def dieWithParent(signum: int = DEATH_SIGNAL) -> bool:
    """
    Ask Linux to send this process C{signum} when its parent dies.

    @return: whether the request was made (C{False} where the platform has
        no such request).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def tieToParent(
    parent: int,
    setDeathSignal: Callable[[], object] = dieWithParent,
    getppid: Callable[[], int] = os.getppid,
) -> bool:
    """
    Die with the parent from now on, and say whether it is still alive.

    The order matters: once the death signal is set, a parent that dies is
    reported by the signal; one that died before is seen here, as a process
    that has been handed to another parent (init, or a subreaper).

    @param parent: the pid of the process that started this one.
    @return: whether C{parent} is still this process's parent.
    """
    setDeathSignal()
    return getppid() == parent


def main(argv: Sequence[str] | None = None) -> None:
    """
    Entry point of a worker process: C{python -m sockplay._worker PARENT},
    as L{sockplay.server.workers.WorkerPoolService} runs it.

    @param argv: the arguments (default: C{sys.argv[1:]}): the parent's pid.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if len(arguments) != 1 or not arguments[0].isdigit():
        print(
            "Error: this is a sockplay worker, started by `twistd sockplay --workers N`",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if not tieToParent(int(arguments[0])):
        # The parent is gone: no one would ever stop this worker.
        raise SystemExit(0)
    # Only now the slow part (Twisted and the server), now that a parent
    # that dies takes this process with it.
    from sockplay.server.worker import main as serve

    serve()


if __name__ == "__main__":
    main()
