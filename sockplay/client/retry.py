"""
Trying again after a failure, with an exponential backoff and full jitter:
the policy behind the client's C{--retries}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from random import Random
from typing import NamedTuple, TypeVar

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

__all__ = ["Backoff", "RetriesExhausted", "Retry", "retry"]

_T = TypeVar("_T")


def _noJitter() -> float:
    return 0.0


class Backoff:
    """
    How long to wait before each retry: the delay before the first is
    C{initial} seconds, and it doubles for each next one up to C{maximum};
    the wait is drawn at random from 0 to that delay ("full jitter"), so
    that clients that failed together do not all come back together.
    """

    def __init__(self, initial: float, maximum: float, random: Random) -> None:
        """
        @param initial: the delay before the first retry, in seconds.
        @param maximum: the cap on the delay, in seconds.
        @param random: where the jitter comes from (seeded, in tests).
        """
        # Twisted's policy (ClientService's) adds its jitter on top of the
        # delay; ours draws the whole wait below it, so it gets none.
        self._policy = backoffPolicy(initial, maximum, factor=2.0, jitter=_noJitter)
        self._random = random

    def delay(self, retry: int) -> float:
        """
        The longest wait before retry number C{retry} (from 1).
        """
        return self._policy(retry - 1)

    def wait(self, retry: int) -> float:
        """
        The wait before retry number C{retry} (from 1): random, from 0 to
        L{delay}.
        """
        return self._random.uniform(0.0, self.delay(retry))


class Retry(NamedTuple):
    """
    An attempt failed and another one is coming.

    @ivar attempt: the number of the attempt coming (2 for the first
        retry).
    @ivar attempts: the most attempts there will be (the retries plus one).
    @ivar failure: why the previous attempt failed.
    @ivar wait: seconds until the coming attempt.
    """

    attempt: int
    attempts: int
    failure: Failure
    wait: float


class RetriesExhausted(Exception):
    """
    Every attempt failed in a way that could be retried, and there are no
    retries left.

    @ivar failure: why the last attempt failed.
    @ivar attempts: how many attempts were made.
    """

    def __init__(self, failure: Failure, attempts: int) -> None:
        super().__init__(failure, attempts)
        self.failure = failure
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.failure.getErrorMessage()} (after {self.attempts} attempts)"


async def retry(
    clock: IReactorTime,
    attempt: Callable[[], Awaitable[_T]],
    retries: int,
    backoff: Backoff,
    isRetryable: Callable[[Failure], bool],
    notify: Callable[[Retry], object],
) -> _T:
    """
    Run C{attempt} until it succeeds, at most C{retries} + 1 times, waiting
    on C{clock} between attempts as C{backoff} says.

    @param isRetryable: whether a failure is worth another attempt; one
        that is not ends the retries at once.
    @param notify: called before each wait.
    @return: what the successful attempt returned.
    @raise RetriesExhausted: if the last of several attempts failed in a
        way that could be retried. With no retries, and for a failure that
        is not retryable, the attempt's own exception is raised as it is.
    """
    attempts = retries + 1
    number = 1
    while True:
        try:
            return await attempt()
        except Exception:
            failure = Failure()
            if attempts == 1 or not isRetryable(failure):
                raise
            if number == attempts:
                raise RetriesExhausted(failure, attempts) from failure.value
        wait = backoff.wait(number)
        number += 1
        notify(Retry(number, attempts, failure, wait))
        await deferLater(clock, wait)
