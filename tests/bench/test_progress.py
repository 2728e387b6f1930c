"""
Tests for L{sockplay.bench.progress}: the live progress line.
"""

from __future__ import annotations

import io

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
    assert "2,000 ok" in line and "2,000/s" in line and "1 errors" in line
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
