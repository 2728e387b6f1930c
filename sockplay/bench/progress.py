"""
The live progress line that the load generator writes on standard error
while a run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

__all__ = ["Progress"]

# The progress line: redrawn this often (seconds) on a terminal, written as
# a new line this often otherwise (a log should not fill up with them).
TTY_PROGRESS = 1.0
LOG_PROGRESS = 5.0


class Progress:
    """
    The live progress line on stderr: on a terminal, redrawn in place about
    once a second; otherwise a plain line every few seconds. It shows how
    far the run is: the seconds elapsed out of the duration, or the
    verified replies out of the requests.
    """

    def __init__(
        self,
        stream: IO[str],
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
        duration: float | None = None,
        requests: int | None = None,
    ) -> None:
        """
        @param tty: whether C{stream} is a terminal (default: ask it).
        @param duration: the seconds the run sends requests for, if it is
            timed.
        @param requests: the requests it sends, if it is counted.
        """
        self._duration = duration
        self._requests = requests
        self._stream = stream
        self._clock = clock
        self._tty = stream.isatty() if tty is None else tty
        self._interval = TTY_PROGRESS if self._tty else LOG_PROGRESS
        self._start = clock()
        self._last = self._start
        self._lastOk = 0
        self._drawn = False

    def update(self, ok: int, errors: int) -> None:
        """
        Show the totals so far, if it is time to.
        """
        now = self._clock()
        if now - self._last < self._interval:
            return
        rate = (ok - self._lastOk) / (now - self._last)
        self._last, self._lastOk = now, ok
        elapsed = f"{now - self._start:6.1f}"
        if self._duration is not None:
            elapsed += f"/{self._duration:g}"
        done = f"{ok:>12,}"
        if self._requests is not None:
            done += f"/{self._requests:,}"
        line = (
            f"{elapsed} s  {done} ok  {rate:>10,.0f}/s  "
            f"{errors:,} error{'' if errors == 1 else 's'}"
        )
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def holding(self, count: int, seconds: float) -> None:
        """
        Say, on a line that stays, that hold mode holds C{count} connections
        open for C{seconds}.
        """
        self.note(f"holding {count} connections open for {seconds:g} s")

    def note(self, text: str) -> None:
        """
        Show a line that stays.
        """
        self.finish()
        self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """
        Clear the progress line (on a terminal) before the summary.
        """
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
