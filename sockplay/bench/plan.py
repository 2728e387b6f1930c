"""
The load one process generates: what the command line asks for, split over
the load processes, as plain data that crosses a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sockplay.bench.check import Exchange

__all__ = ["DEFAULT_TIMEOUT", "MODES", "Plan"]

# The kinds of load, as the summary names them: see L{sockplay.bench.loads}.
MODES = ("keep-open", "one-shot", "hold")

# Seconds the server may keep an exchange waiting (no byte of the reply
# owed, or, one-shot, no close after it) before it fails as a timeout: a
# reply that takes this long on a network a benchmark runs over means a
# stalled server or a mismatch of framing or mode, and waiting longer only
# delays saying so (wrk's default, too).
DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Plan:
    """
    The load one process generates.

    @ivar family: the address family (C{AF_INET}, C{AF_INET6}, C{AF_UNIX}).
    @ivar address: the server's socket address.
    @ivar exchange: the request and its expected reply.
    @ivar mode: one of L{MODES}.
    @ivar connections: connections (one-shot: exchanges at once).
    @ivar pipeline: requests in flight per keep-open connection.
    @ivar duration: seconds to send requests for, or C{None}.
    @ivar requests: requests to send, or C{None}.
    @ivar rate: requests per second (open loop), or C{None} (closed loop).
    @ivar deadline: seconds after which everything stops, answered or not.
    @ivar maxErrors: errors after which the run stops.
    @ivar hold: seconds to hold the connections idle (hold mode).
    @ivar timeout: seconds the server may keep an exchange waiting.
    @ivar tally: whether replies are grouped by the backend that sent them
        (C{--tally}): any identity in front of the message is then right.
    """

    family: int
    address: Any
    exchange: Exchange
    mode: str = "keep-open"
    connections: int = 1
    pipeline: int = 1
    duration: float | None = None
    requests: int | None = None
    rate: float | None = None
    deadline: float = 60.0
    maxErrors: int = 1000
    hold: float = 0.0
    timeout: float = DEFAULT_TIMEOUT
    tally: bool = False
