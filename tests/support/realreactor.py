"""
Driving the real, global reactor from a test, for the few tests that need
real sockets in this process: it is iterated by hand, never run, so each
test stays in control and bounded in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")

# Seconds a test may wait for the reactor to do one thing.
DEADLINE = 10.0


def globalReactor() -> Any:
    """
    The global reactor, imported only when a test asks for it.
    """
    from twisted.internet import reactor

    return reactor


def spinUntil(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """
    Iterate the global reactor until C{condition()} holds; fail the test,
    naming C{what} it was waiting for, after C{timeout} seconds.
    """
    reactor = globalReactor()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        reactor.iterate(0.01)


def resultOf(d: Deferred[T] | None, what: str) -> T | None:
    """
    Iterate the global reactor until C{d} fires; return its result or raise
    its failure. C{None} (a synchronous stop) is returned as it is.
    """
    if d is None:
        return None
    results: list[object] = []
    d.addBoth(results.append)
    spinUntil(lambda: bool(results), what)
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return cast(T, result)
