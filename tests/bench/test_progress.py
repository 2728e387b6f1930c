"""
Tests for L{sockplay.bench.progress}: the live progress line.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from support.bench import FakeClock

from sockplay.bench.progress import Progress


def test_progressRedrawnOnATerminal() -> None:
    """
    On a terminal the progress line is redrawn in place, once a second.
    """
    clock = FakeClock(0.0)
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, tty=True)
    clock.now = 0.5
    progress.update(1000, 0)
    assert stream.getvalue() == ""
    clock.now = 1.0
    progress.update(2000, 1)
    line = stream.getvalue()
    assert line.startswith("\r") and "\n" not in line
    assert "2,000 ok" in line and "2,000/s" in line and "1 error" in line
    progress.finish()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progressLinesInALog() -> None:
    """
    Elsewhere (a pipe, a log) it is a plain line every few seconds.
    """
    clock = FakeClock(0.0)
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, tty=False)
    for second in range(1, 11):
        clock.now = second
        progress.update(second * 100, 0)
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) == 2
    assert all(line.endswith("\n") and "\r" not in line for line in lines)


@pytest.mark.parametrize(
    "planned, now, ok, errors, line",
    [
        ({"duration": 30.0}, 12.0, 1200, 2,
         "  12.0/30 s         1,200 ok         100/s  2 errors\n"),
        ({"requests": 10_000}, 5.0, 4000, 1,
         "   5.0 s         4,000/10,000 ok         800/s  1 error\n"),
    ],
    ids=["duration", "requests"],
)
def test_progressShowsHowFarTheRunIs(
    planned: dict[str, Any], now: float, ok: int, errors: int, line: str
) -> None:
    """
    A timed run shows the seconds elapsed out of its duration; a counted
    run, the verified replies out of the requests it sends.
    """
    clock = FakeClock(0.0)
    stream = io.StringIO()
    progress = Progress(stream, clock=clock, tty=False, **planned)
    clock.now = now
    progress.update(ok, errors)
    assert stream.getvalue() == line
