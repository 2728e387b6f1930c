"""
The statistics of a run of probes (C{--count}), kept as each probe ends:
how many were sent and received, the round-trip times' minimum, average,
maximum and standard deviation, and with C{--tally}, which backend
answered. No I/O.

It keeps counts and running sums, never the probes themselves, so that
C{--count 0} (an exporter that runs for weeks) needs the same memory after
a million probes as after one; the tally it keeps is bounded as
L{sockplay.tally} bounds it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sockplay.client.requests import ProbeResult
from sockplay.stickiness import ConnectionWatch
from sockplay.tally import Tally, identityOf

__all__ = ["ProbeSummary"]


class ProbeSummary:
    """
    A run of probes, summed up as they end (L{add}).

    @ivar sent: the probes that ended, lost or not.
    @ivar received: those answered with an echo of the message.
    @ivar tally: with C{--tally}, the echoes counted per backend identity;
        C{None} without.
    """

    def __init__(self, message: bytes | None = None, keepOpen: bool = False) -> None:
        """
        @param message: the message the probes send, to tally the replies
            by what comes before it; C{None} for no tally.
        @param keepOpen: whether the probes share a connection: then the
            tally checks that each connection's replies came from one
            backend.
        """
        self.sent = 0
        self.received = 0
        self.tally = None if message is None else Tally()
        self._message = message
        self._keepOpen = keepOpen
        self._minimum = math.inf
        self._maximum = -math.inf
        # The sum of the round-trip times, and Welford's running sum of
        # squared differences from the mean, for the standard deviation
        # without keeping the times.
        self._total = 0.0
        self._mean = 0.0
        self._squares = 0.0
        self._watch: ConnectionWatch | None = None
        self._connection: int | None = None

    @classmethod
    def of(
        cls, results: Iterable[ProbeResult], message: bytes | None = None, keepOpen: bool = False
    ) -> ProbeSummary:
        """
        The summary of C{results}, added in order.
        """
        summary = cls(message, keepOpen)
        for result in results:
            summary.add(result)
        return summary

    def add(self, result: ProbeResult) -> None:
        """
        Count one probe that has ended: a lost one (C{error} set) counts as
        sent only; an answered one adds its round-trip time and, with a
        tally, counts under its identity.
        """
        self.sent += 1
        if result.error is not None or result.rtt is None or result.reply is None:
            return
        rtt = result.rtt
        self.received += 1
        self._minimum = min(self._minimum, rtt)
        self._maximum = max(self._maximum, rtt)
        self._total += rtt
        delta = rtt - self._mean
        self._mean += delta / self.received
        self._squares += delta * (rtt - self._mean)
        if self.tally is not None and self._message is not None:
            self._count(result, rtt, self.tally, self._message)

    def _count(self, result: ProbeResult, rtt: float, tally: Tally, message: bytes) -> None:
        """
        Tally an echo under its identity; with C{--keep-open}, watch its
        connection's stickiness (a new connection is watched on its own).
        """
        identity = identityOf(result.reply or b"", message)
        if identity is None:
            return
        tally.record(identity, round(rtt * 1_000_000))
        if self._keepOpen:
            if self._watch is None or result.connection != self._connection:
                self._watch, self._connection = tally.stickiness.watch(), result.connection
            self._watch.saw(identity, result.seq)

    @property
    def lossPercent(self) -> float:
        """
        The share of the probes sent that were lost, in percent (0 if none
        was sent).
        """
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0

    @property
    def rtt(self) -> tuple[float, float, float, float] | None:
        """
        The minimum, average, maximum and (population) standard deviation
        of the round-trip times, in seconds; C{None} if nothing was
        received.
        """
        if not self.received:
            return None
        mdev = math.sqrt(max(self._squares, 0.0) / self.received)
        return (self._minimum, self._total / self.received, self._maximum, mdev)

    def tallyReport(self) -> dict[str, Any] | None:
        """
        The tally as L{Tally.report} gives it (with stickiness if the
        probes kept their connection open); C{None} without a tally.
        """
        if self.tally is None:
            return None
        return self.tally.report(stickiness=True if self._keepOpen else None)
