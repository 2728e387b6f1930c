"""
Tests for L{sockplay.client.summary}: the statistics of a run of probes,
kept as running sums instead of the probes themselves.
"""

from __future__ import annotations

import statistics
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st
from support.client import HELLO, REPLY

from sockplay.client.requests import ProbeResult
from sockplay.client.summary import ProbeSummary

LOST = ProbeResult(2, error="connection refused by x", outcome="refused")


def test_emptySummary() -> None:
    """
    Nothing sent: no loss, and no round-trip times.
    """
    summary = ProbeSummary()
    assert (summary.sent, summary.received, summary.lossPercent, summary.rtt) == (0, 0, 0.0, None)
    assert summary.tallyReport() is None


def test_lostProbesCountAsSentOnly() -> None:
    """
    A lost probe is sent and not received, and adds no round-trip time.
    """
    summary = ProbeSummary.of([ProbeResult(1, 0.002, REPLY), LOST])
    assert (summary.sent, summary.received, summary.lossPercent) == (2, 1, 50.0)
    assert summary.rtt == (0.002, 0.002, 0.002, 0.0)


@given(
    st.lists(
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=1, max_size=200
    )
)
def test_runningStatisticsAreTheStatisticsOfEveryTime(times: list[float]) -> None:
    """
    The running minimum, average, maximum and standard deviation are those
    of every round-trip time, as if they had all been kept.
    """
    summary = ProbeSummary.of(ProbeResult(n, t, REPLY) for n, t in enumerate(times, 1))
    assert summary.rtt is not None
    low, average, high, mdev = summary.rtt
    assert (low, high) == (min(times), max(times))
    assert abs(average - statistics.fmean(times)) <= 1e-9
    assert abs(mdev - statistics.pstdev(times)) <= 1e-6


def test_tallyCountsEveryEcho() -> None:
    """
    With the message to tally by, every echo counts under its identity.
    """
    results = [ProbeResult(n, 0.001, b"a " + HELLO) for n in range(1, 4)] + [LOST]
    report = ProbeSummary.of(results, HELLO).tallyReport()
    assert report is not None
    assert (report["replies"], report["backends"][0]["identity"]) == (3, "a ")


def test_memoryDoesNotGrowWithTheProbes() -> None:
    """
    Adding 40,000 probes (half echoes, tallied; half lost) to a summary
    takes a few bytes at most: nothing per probe is kept, so that
    C{--count 0} can run for weeks. (Keeping the results would take
    megabytes.)
    """
    summary = ProbeSummary(HELLO)
    summary.add(ProbeResult(1, 0.001, b"web1 " + HELLO))
    echo = ProbeResult(2, 0.001, b"web1 " + HELLO)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            summary.add(echo)
            summary.add(LOST)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert summary.sent == 40_001
    assert grown < 4096
