"""
Tests for L{sockplay.bench.stats}: results, their exact merge across
processes, and the summaries.
"""

from __future__ import annotations

import json
import random
from collections import Counter

from sockplay.bench.check import ERROR_KINDS
from sockplay.bench.stats import Results, formatSummary


def resultsWith(latencies: list[int]) -> Results:
    """
    Results of as many verified replies as C{latencies} (microseconds).
    """
    results = Results()
    results.ok = results.requests = len(latencies)
    results.addLatencies(dict(Counter(latencies)))
    return results


def test_errorsCountedByKind() -> None:
    """
    Errors are counted per kind, and any error makes the run a failure.
    """
    results = resultsWith([100])
    assert not results.failed
    results.addError("mismatch", "first")
    results.addError("mismatch", "second")
    results.addError("connect")
    assert {kind: n for kind, n in results.errors.items() if n} == {"mismatch": 2, "connect": 1}
    assert (results.errorCount, results.firstMismatch, results.failed) == (3, "first", True)


def test_mergedHistogramsExact() -> None:
    """
    Results merged from several processes, each encoded and decoded as it
    travels, hold exactly the histogram of all their latencies together.
    """
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(7, 1.5)) + 1 for _ in range(6000)]
    merged = Results(processes=0)
    for part in (latencies[0::3], latencies[1::3], latencies[2::3]):
        wire = json.loads(json.dumps(resultsWith(part).toWire()))
        merged.merge(Results.fromWire(wire))
    whole = resultsWith(latencies)
    counts = range(whole.histogram.counts_len)
    assert [merged.histogram.get_count_at_index(i) for i in counts] == [
        whole.histogram.get_count_at_index(i) for i in counts
    ]
    assert (merged.ok, merged.processes) == (6000, 3)
    assert merged.latencies() == whole.latencies()
    assert (merged.minimum, merged.maximum) == (min(latencies), max(latencies))


def test_symptomsTravelAndMerge() -> None:
    """
    The symptoms of failures and the first wrong reply, which the
    diagnosis reads, cross the process boundary and merge: counts add up,
    and the first wrong reply stays the first.
    """
    first, second = Results(), Results()
    first.addError("early-close", "closed", None, "closed-after-reply")
    second.addError("early-close", "closed", None, "closed-after-reply")
    second.addError("mismatch", "byte 0", b"\x15\x03\x03", None)
    merged = Results(processes=0)
    for part in (first, second):
        merged.merge(Results.fromWire(json.loads(json.dumps(part.toWire()))))
    assert merged.symptoms["closed-after-reply"] == 2
    assert (merged.firstMismatch, merged.firstReceived) == ("byte 0", b"\x15\x03\x03")


def test_mergeAddsCountsAndKeepsLongestElapsed() -> None:
    """
    Merging adds counts, errors and CPU time; the run lasted as long as its
    longest process.
    """
    first, second = resultsWith([10, 20]), resultsWith([30])
    first.elapsed, second.elapsed = 2.0, 3.0
    first.cpuSeconds, second.cpuSeconds = 1.0, 0.5
    second.addError("reset")
    second.unanswered = 4
    first.merge(second)
    assert (first.ok, first.errors["reset"], first.unanswered) == (3, 1, 4)
    assert (first.elapsed, first.cpuSeconds, first.processes) == (3.0, 1.5, 2)


RUN = {
    "target": "127.0.0.1:12345",
    "framing": "line",
    "mode": "keep-open",
    "connections": 50,
    "pipeline": 1,
    "processes": 1,
    "rate": None,
    "messageSize": 14,
}


def test_summaryShape() -> None:
    """
    The JSON summary has the run's shape, the counts, every error kind,
    the rate, the latency percentiles in milliseconds (as the client's
    C{--json}: C{latency_ms}), and the hint.
    """
    results = resultsWith([100, 200, 300, 400])
    results.elapsed = 2.0
    results.cpuSeconds = 0.5
    summary = json.loads(json.dumps(results.summary(RUN)))
    assert list(summary) == [
        *RUN,
        "elapsed", "requests", "ok", "errors", "errorCount", "unanswered",
        "repliesPerSecond", "latency_ms", "cpu", "firstMismatch", "stopped", "hint",
    ]
    assert summary["errors"] == dict.fromkeys(ERROR_KINDS, 0)
    assert (summary["requests"], summary["ok"], summary["repliesPerSecond"]) == (4, 4, 2.0)
    assert summary["latency_ms"] == {
        "min": 0.1, "p50": 0.2, "p90": 0.4, "p99": 0.4, "p99.9": 0.4, "max": 0.4, "mean": 0.25,
    }
    assert summary["cpu"] == {"seconds": 0.5, "percentOfOneCore": 25.0, "processes": 1}


def test_summaryWithoutReplies() -> None:
    """
    A run without a single reply has no latencies and a rate of 0.
    """
    results = Results()
    results.addError("connect")
    results.elapsed = 1.0
    summary = results.summary(RUN)
    assert (summary["latency_ms"], summary["repliesPerSecond"]) == (None, 0.0)


def test_textSummaryShowsErrors() -> None:
    """
    The text summary lists the errors by kind and the first mismatch.
    """
    results = resultsWith([1500])
    results.elapsed = 1.0
    results.addError("mismatch", "byte 0 of a reply: ...")
    results.addError("early-close")
    lines = formatSummary(results.summary(RUN)).splitlines()
    assert "  errors      early-close 1, mismatch 1" in lines
    assert "  mismatch    byte 0 of a reply: ..." in lines
    assert lines[4].startswith("  latency ms  min 1.500  p50 1.500")
