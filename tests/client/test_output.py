"""
Tests for L{sockplay.client.output}: the printed reply, the line per probe,
the statistics, the C{--json} report and the line per retry.
"""

from __future__ import annotations

import pytest
from support.client import REPLY
from twisted.internet import error
from twisted.python.failure import Failure

from sockplay.client.options import Options
from sockplay.client.output import (
    formatProbe,
    formatReply,
    formatRetry,
    formatSummary,
    probeReport,
)
from sockplay.client.requests import ProbeResult
from sockplay.client.retry import Retry
from sockplay.client.summary import ProbeSummary


def test_formatReplyEscapesInvalidUTF8() -> None:
    """
    The printed reply is UTF-8; bytes that are not valid UTF-8 are shown as
    backslash escapes rather than dropped.
    """
    assert formatReply("héllo".encode()) == "Response from the server: héllo"
    assert formatReply(b"a\xffb") == "Response from the server: a\\xffb"



RESULTS = [
    ProbeResult(1, 0.0003, REPLY),
    ProbeResult(2, error="connection refused by 127.0.0.1:12345"),
    ProbeResult(3, 0.0005, b"caf\xe9"),
]


def test_formatProbe() -> None:
    """
    A probe is one line: its sequence number, then its round-trip time in
    milliseconds and the reply (invalid UTF-8 escaped), or why it was lost.
    """
    assert [formatProbe(r) for r in RESULTS] == [
        "seq=1 rtt=0.300 ms reply=Message received: Hello Server !",
        "seq=2 error=connection refused by 127.0.0.1:12345",
        "seq=3 rtt=0.500 ms reply=caf\\xe9",
    ]


def test_formatSummary() -> None:
    """
    The statistics are ping's: sent, received, loss, and the minimum,
    average, maximum and mean deviation of the round-trip times.
    """
    assert formatSummary(ProbeSummary.of(RESULTS), "127.0.0.1:12345") == [
        "--- 127.0.0.1:12345 probe statistics ---",
        "3 sent, 2 received, 33.3333% loss, rtt min/avg/max/mdev = 0.300/0.400/0.500/0.100 ms",
    ]


def test_formatSummaryNothingReceived() -> None:
    """
    With no reply at all there are no round-trip times to summarize.
    """
    assert formatSummary(ProbeSummary.of(RESULTS[1:2]), "x")[1] == "1 sent, 0 received, 100% loss"


def test_probeReport() -> None:
    """
    C{--json} holds every probe and the statistics, times in milliseconds.
    """
    assert probeReport(RESULTS, ProbeSummary.of(RESULTS), "127.0.0.1:12345") == {
        "target": "127.0.0.1:12345",
        "probes": [
            {"seq": 1, "rtt_ms": 0.3, "reply": "Message received: Hello Server !"},
            {"seq": 2, "error": "connection refused by 127.0.0.1:12345"},
            {"seq": 3, "rtt_ms": 0.5, "reply": "caf\\xe9"},
        ],
        "sent": 3,
        "received": 2,
        "loss_percent": pytest.approx(100 / 3),
        "rtt_ms": {"min": 0.3, "avg": 0.4, "max": 0.5, "mdev": 0.1},
    }
    assert probeReport([], ProbeSummary(), "x")["rtt_ms"] is None



def test_formatRetry() -> None:
    """
    A retry is one line: which attempt comes, of how many, why the last one
    failed (as the error line would say it), and the wait; with C{--count},
    which probe.
    """
    config = Options()
    config.parseOptions(["--retries", "3"])
    retry = Retry(2, 4, Failure(error.ConnectionRefusedError()), 0.1374)
    assert formatRetry(retry, config) == (
        "Retrying (attempt 2 of 4) after connection refused by 127.0.0.1:12345: "
        "waiting 0.137 s"
    )
    assert formatRetry(retry, config, seq=3).startswith("Retrying seq=3 (attempt 2 of 4) ")
