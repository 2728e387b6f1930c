"""
Fixtures shared by the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import ServerPool
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web import http as twistedHTTP


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """
    The formatted text of every log event emitted during the test.
    """
    events: list[str] = []

    def observer(event: LogEvent) -> None:
        events.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerPool]:
    """
    Real server processes for one test, all stopped at its end.
    """
    pool = ServerPool(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def noTempFiles(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """
    Make Twisted's request body storage fail the test if it ever creates a
    temporary file; the list records each attempt.
    """
    made: list[object] = []

    def temporaryFile(*args: object, **kwargs: object) -> None:
        made.append(args)
        raise AssertionError("a temporary file was created for a request body")

    monkeypatch.setattr(twistedHTTP.tempfile, "TemporaryFile", temporaryFile)
    return made
