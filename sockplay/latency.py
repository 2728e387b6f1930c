"""
The latency histogram the load generator and the tally record into: round
trip times in microseconds, in an HDR histogram whose settings are written
once, so that every histogram sockplay merges or sends between processes
is alike. Imports nothing of sockplay's own.
"""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = [
    "HIGHEST_MICROSECONDS",
    "LOWEST_MICROSECONDS",
    "SIGNIFICANT_DIGITS",
    "newHistogram",
]

# Latencies are recorded in microseconds, from 1 us up to an hour (far past
# any deadline), to 3 significant digits: exact below 2048 us, within 0.1%
# above.
LOWEST_MICROSECONDS = 1
HIGHEST_MICROSECONDS = 3_600_000_000
SIGNIFICANT_DIGITS = 3


def newHistogram() -> Any:
    """
    An empty latency histogram (microseconds).
    """
    return HdrHistogram(LOWEST_MICROSECONDS, HIGHEST_MICROSECONDS, SIGNIFICANT_DIGITS)
