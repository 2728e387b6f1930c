"""
The load generator's accounting: requests, verified replies, errors by
kind, and latencies in an HDR histogram, with the exact merge of the
results of several processes and the summary (text or JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sockplay.bench.check import ERROR_KINDS, SYMPTOMS
from sockplay.latency import HIGHEST_MICROSECONDS, newHistogram
from sockplay.tally import Tally, formatTally

__all__ = [
    "HIGHEST_MICROSECONDS",
    "PERCENTILES",
    "Results",
    "formatSummary",
    "newHistogram",
]

# The percentiles a summary shows, with their names.
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


@dataclass
class Results:
    """
    What one load process (or several, merged) measured.

    @ivar requests: requests sent (in one-shot mode: exchanges started).
    @ivar ok: replies received and verified, byte for byte.
    @ivar unanswered: requests that were in flight behind a failed one on
        the same connection, and so never got a reply.
    @ivar errors: failures by kind (L{ERROR_KINDS}), each counted once.
    @ivar histogram: latency of every verified reply, in microseconds.
    @ivar minimum: the exact smallest latency, in microseconds (the
        histogram's is rounded to its resolution).
    @ivar maximum: the exact largest latency, in microseconds.
    @ivar elapsed: seconds from the start of the run to its end.
    @ivar cpuSeconds: CPU time the load process(es) used.
    @ivar processes: how many load processes these results come from.
    @ivar firstMismatch: how the first mismatching reply differed.
    @ivar stopped: why the run ended before its planned end (C{"deadline"},
        C{"max-errors"}, C{"timeout"}: no exchange was answered within the
        exchange timeout, C{"interrupted"}), or C{None}.
    @ivar symptoms: how many failures looked like each of L{SYMPTOMS}, for
        the diagnosis.
    @ivar firstReceived: the first wrong reply as received, from its first
        byte (a few hundred bytes at most), for the diagnosis.
    @ivar tally: with C{--tally}, the verified replies per backend identity
        and the stickiness of the connections; else C{None}.
    """

    requests: int = 0
    ok: int = 0
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    histogram: Any = field(default_factory=newHistogram)
    minimum: int | None = None
    maximum: int | None = None
    elapsed: float = 0.0
    cpuSeconds: float = 0.0
    processes: int = 1
    firstMismatch: str | None = None
    stopped: str | None = None
    symptoms: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SYMPTOMS, 0))
    firstReceived: bytes | None = None
    tally: Tally | None = None

    @property
    def errorCount(self) -> int:
        """
        All failures, of every kind.
        """
        return sum(self.errors.values())

    @property
    def failed(self) -> bool:
        """
        Whether anything went wrong: the run then exits 1.
        """
        return bool(self.errorCount or self.unanswered or self.stopped)

    def addError(
        self,
        kind: str,
        detail: str | None = None,
        received: bytes | None = None,
        symptom: str | None = None,
    ) -> None:
        """
        Count one failure of C{kind}; keep the first mismatch's C{detail}
        and C{received} reply, and count its C{symptom} (one of
        L{SYMPTOMS}), if it has one.
        """
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if kind == "mismatch" and self.firstMismatch is None:
            self.firstMismatch = detail
            self.firstReceived = received
        if symptom is not None:
            self.symptoms[symptom] = self.symptoms.get(symptom, 0) + 1

    def addLatencies(self, counts: dict[int, int]) -> None:
        """
        Record latencies, given as a count per value in microseconds.
        """
        if not counts:
            return
        record = self.histogram.record_value
        for value, count in counts.items():
            record(min(value, HIGHEST_MICROSECONDS), count)
        low, high = min(counts), max(counts)
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)

    def merge(self, other: Results) -> None:
        """
        Add C{other}'s results to these (the histograms merge exactly).
        """
        self.requests += other.requests
        self.ok += other.ok
        self.unanswered += other.unanswered
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.histogram.add(other.histogram)
        for value in (other.minimum, other.maximum):
            if value is not None:
                self.minimum = value if self.minimum is None else min(self.minimum, value)
                self.maximum = value if self.maximum is None else max(self.maximum, value)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.cpuSeconds += other.cpuSeconds
        self.processes += other.processes
        if self.firstMismatch is None:
            self.firstMismatch, self.firstReceived = other.firstMismatch, other.firstReceived
        self.stopped = self.stopped or other.stopped
        for symptom, count in other.symptoms.items():
            self.symptoms[symptom] = self.symptoms.get(symptom, 0) + count
        if other.tally is not None:
            if self.tally is None:
                self.tally = Tally()
            self.tally.merge(other.tally)

    def toWire(self) -> dict[str, Any]:
        """
        These results as plain data (JSON-safe), to pass between processes:
        the histogram in HdrHistogram's compressed base64 encoding.
        """
        return {
            "requests": self.requests,
            "ok": self.ok,
            "unanswered": self.unanswered,
            "errors": dict(self.errors),
            "histogram": self.histogram.encode().decode("ascii"),
            "minimum": self.minimum,
            "maximum": self.maximum,
            "elapsed": self.elapsed,
            "cpuSeconds": self.cpuSeconds,
            "processes": self.processes,
            "firstMismatch": self.firstMismatch,
            "stopped": self.stopped,
            "symptoms": dict(self.symptoms),
            "firstReceived": None if self.firstReceived is None else self.firstReceived.hex(),
            "tally": None if self.tally is None else self.tally.toWire(),
        }

    @classmethod
    def fromWire(cls, wire: dict[str, Any]) -> Results:
        """
        The inverse of L{toWire}.
        """
        histogram = newHistogram()
        if wire["ok"]:
            histogram.decode_and_add(wire["histogram"].encode("ascii"))
        values = {key: value for key, value in wire.items() if key != "histogram"}
        values["errors"] = {**dict.fromkeys(ERROR_KINDS, 0), **wire["errors"]}
        values["symptoms"] = {**dict.fromkeys(SYMPTOMS, 0), **wire["symptoms"]}
        if wire["firstReceived"] is not None:
            values["firstReceived"] = bytes.fromhex(wire["firstReceived"])
        if wire["tally"] is not None:
            values["tally"] = Tally.fromWire(wire["tally"])
        return cls(histogram=histogram, **values)

    def latencies(self) -> dict[str, int] | None:
        """
        Minimum, percentiles and maximum in microseconds, or C{None} if
        there was no reply.
        """
        if not self.ok or self.minimum is None or self.maximum is None:
            return None
        result = {"min": self.minimum}
        for name, percentile in PERCENTILES:
            # The histogram answers with the top of a value's bucket, which
            # at the far end can pass the exact maximum.
            result[name] = min(self.histogram.get_value_at_percentile(percentile), self.maximum)
        result["max"] = self.maximum
        result["mean"] = round(self.histogram.get_mean_value())
        return result

    def summary(self, run: dict[str, Any], hint: str | None = None) -> dict[str, Any]:
        """
        The summary of a run, as printed by C{--json}. Latencies are in
        milliseconds, rounded to the microsecond, as in the client's
        C{--json}.

        @param run: what was run (target, framing, mode, load shape), put
            first. With a tally, its C{mode} says whether stickiness was
            checked (keep-open connections only).
        @param hint: what the failure of the run points at, and which flag
            fixes it (L{sockplay.bench.diagnosis}), if anything.
        """
        elapsed = self.elapsed
        latencies = self.latencies()
        summary = {
            **run,
            "elapsed": round(elapsed, 6),
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "errorCount": self.errorCount,
            "unanswered": self.unanswered,
            "repliesPerSecond": round(self.ok / elapsed, 1) if elapsed > 0 else 0.0,
            "latency_ms": (
                None
                if latencies is None
                else {name: round(value / 1000, 3) for name, value in latencies.items()}
            ),
            "cpu": {
                "seconds": round(self.cpuSeconds, 3),
                "percentOfOneCore": round(100 * self.cpuSeconds / elapsed, 1) if elapsed else 0.0,
                "processes": self.processes,
            },
            "firstMismatch": self.firstMismatch,
            "stopped": self.stopped,
            "hint": hint,
        }
        if self.tally is not None:
            summary["tally"] = self.tally.report(stickiness=run.get("mode") == "keep-open")
        return summary


def formatSummary(summary: dict[str, Any]) -> str:
    """
    The human-readable summary of L{Results.summary}.
    """
    shape = summary["mode"]
    if summary["mode"] == "keep-open":
        shape += f", {summary['pipeline']} in flight"
    lines = [
        f"sockplay.bench: {summary['target']}, {summary['framing']} framing, {shape}, "
        f"{summary['connections']} connections, {summary['messageSize']}-byte messages"
        + (f", {summary['rate']:g} requests/s offered" if summary["rate"] else ""),
        f"  requests    {summary['requests']:,} sent, {summary['ok']:,} ok, "
        f"{summary['errorCount']:,} errors, {summary['unanswered']:,} unanswered",
        f"  elapsed     {summary['elapsed']:.3f} s",
        f"  replies/s   {summary['repliesPerSecond']:,.1f}",
    ]
    latency = summary["latency_ms"]
    if latency is not None:
        points = "  ".join(
            f"{name} {latency[name]:.3f}"
            for name in ("min", *(name for name, _ in PERCENTILES), "max")
        )
        lines.append(f"  latency ms  {points}")
    cpu = summary["cpu"]
    lines.append(
        f"  load CPU    {cpu['seconds']:.2f} s, {cpu['percentOfOneCore']:.0f}% of one core "
        f"({cpu['processes']} process{'es' if cpu['processes'] != 1 else ''})"
    )
    if summary["errorCount"]:
        kinds = ", ".join(
            f"{kind} {count:,}" for kind, count in summary["errors"].items() if count
        )
        lines.append(f"  errors      {kinds}")
    if summary["firstMismatch"]:
        lines.append(f"  mismatch    {summary['firstMismatch']}")
    if summary["stopped"]:
        lines.append(f"  stopped     early: {summary['stopped']}")
    if "tally" in summary:
        lines.extend(formatTally(summary["tally"]))
    return "\n".join(lines)
