"""
What the client's unit tests share: the tutorial's message and reply, and
the outcome of a Deferred that has fired.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_T = TypeVar("_T")

HELLO = b"Hello Server !"
REPLY = b"Message received: Hello Server !"


def fired(d: Deferred[_T]) -> _T | Failure:
    """
    What C{d} fired with, which it must have already.
    """
    out: list[_T | Failure] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]
