"""
What the client prints: the reply, a line per probe, the probes'
statistics (L{ProbeSummary}; with C{--tally}, which backend answered them),
as text or as the C{--json} report, and a line per retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sockplay.client.failures import describeFailure
from sockplay.client.options import Options
from sockplay.client.requests import ProbeResult
from sockplay.client.retry import Retry
from sockplay.client.summary import ProbeSummary

__all__ = [
    "formatBanner",
    "formatProbe",
    "formatReply",
    "formatRetry",
    "formatSummary",
    "probeReport",
]


def _text(data: bytes) -> str:
    """
    C{data} as UTF-8, with any byte that is not valid UTF-8 shown as a
    backslash escape, so that nothing is silently lost.
    """
    return data.decode("utf-8", "backslashreplace")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def formatReply(reply: bytes) -> str:
    """
    The line the client prints: UTF-8, with any byte that is not valid UTF-8
    shown as a backslash escape, so that nothing is silently lost.
    """
    return "Response from the server: " + _text(reply)


def formatBanner(banner: bytes) -> str:
    """
    The line printed for a banner the server sent before its reply, as
    L{formatReply} prints the reply.
    """
    return "Banner from the server: " + _text(banner)


def formatRetry(retry: Retry, config: Options, seq: int | None = None) -> str:
    """
    The line printed on stderr before a retry: C{Retrying (attempt 2 of 4)
    after <why the last attempt failed>: waiting 0.137 s}; with C{--count},
    C{Retrying seq=3 (attempt 2 of 4) after ...}.
    """
    which = "" if seq is None else f" seq={seq}"
    why = describeFailure(retry.failure, config, hint=False) or retry.failure.getErrorMessage()
    return (
        f"Retrying{which} (attempt {retry.attempt} of {retry.attempts}) after {why}: "
        f"waiting {retry.wait:.3f} s"
    )


def formatProbe(result: ProbeResult) -> str:
    """
    The line printed for one probe: C{seq=1 rtt=0.412 ms reply=...} or
    C{seq=2 error=...}.
    """
    if result.error is not None or result.rtt is None or result.reply is None:
        return f"seq={result.seq} error={result.error}"
    return f"seq={result.seq} rtt={_ms(result.rtt)} ms reply={_text(result.reply)}"


def formatSummary(summary: ProbeSummary, target: str) -> list[str]:
    """
    The ping-style statistics printed after the probes: a header line, then
    C{N sent, M received, X% loss, rtt min/avg/max/mdev = a/b/c/d ms} (the
    times in milliseconds; no rtt part if nothing was received).
    """
    line = f"{summary.sent} sent, {summary.received} received, {summary.lossPercent:g}% loss"
    if summary.rtt is not None:
        line += ", rtt min/avg/max/mdev = " + "/".join(_ms(v) for v in summary.rtt) + " ms"
    return [f"--- {target} probe statistics ---", line]


def probeReport(
    results: Sequence[ProbeResult], summary: ProbeSummary, target: str
) -> dict[str, Any]:
    """
    What C{--json} prints: every probe (C{results}), and the statistics
    (and, with C{--tally}, the tally as C{tally}) of their C{summary}. Times are in milliseconds,
    rounded to the microsecond. A probe whose server selected a protocol in
    ALPN (C{--alpn}) carries it as C{alpn}.
    """
    probes: list[dict[str, Any]] = []
    for result in results:
        if result.error is None and result.rtt is not None and result.reply is not None:
            probe: dict[str, Any] = {
                "seq": result.seq,
                "rtt_ms": round(result.rtt * 1000, 3),
                "reply": _text(result.reply),
            }
            if result.alpn is not None:
                probe["alpn"] = _text(result.alpn)
            probes.append(probe)
        else:
            probes.append({"seq": result.seq, "error": result.error})
    rtt = None
    if summary.rtt is not None:
        names = ("min", "avg", "max", "mdev")
        rtt = {
            name: round(value * 1000, 3) for name, value in zip(names, summary.rtt, strict=True)
        }
    report = {
        "target": target,
        "probes": probes,
        "sent": summary.sent,
        "received": summary.received,
        "loss_percent": summary.lossPercent,
        "rtt_ms": rtt,
    }
    tally = summary.tallyReport()
    if tally is not None:
        report["tally"] = tally
    return report
