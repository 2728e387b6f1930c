"""
Readiness polling for the load generator's loop: C{select.epoll} where
there is one, and the same calls on L{selectors} elsewhere.
"""

from __future__ import annotations

import select
import selectors
from typing import Any

__all__ = ["BROKEN", "READ", "WRITE", "makePoller"]

# epoll's event bits, also used for the selectors fallback.
READ = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
WRITE = select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4
BROKEN = (select.EPOLLERR | select.EPOLLHUP) if hasattr(select, "EPOLLERR") else 0


class _SelectorPoller:
    """
    The part of C{select.epoll} that the loop uses, on L{selectors}, for
    platforms without epoll.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    @staticmethod
    def _events(mask: int) -> int:
        return (selectors.EVENT_READ if mask & READ else 0) | (
            selectors.EVENT_WRITE if mask & WRITE else 0
        )

    def register(self, fd: int, mask: int) -> None:
        self._selector.register(fd, self._events(mask))

    def modify(self, fd: int, mask: int) -> None:
        self._selector.modify(fd, self._events(mask))

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return [
            (
                key.fd,
                (READ if events & selectors.EVENT_READ else 0)
                | (WRITE if events & selectors.EVENT_WRITE else 0),
            )
            for key, events in self._selector.select(timeout)
        ]

    def close(self) -> None:
        self._selector.close()


def makePoller() -> tuple[Any, bool]:
    """
    The best poller the platform has.

    @return: the poller, and whether closing a socket takes it out of the
        poller by itself (as it does out of an epoll set), so that the loop
        need not unregister it.
    """
    if hasattr(select, "epoll"):
        return select.epoll(), True
    return _SelectorPoller(), False
