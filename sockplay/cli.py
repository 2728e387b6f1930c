"""
Coerce functions for numeric command-line options, shared by the server,
the client and the bench tool. Their errors name the option, so that a
usage error says which value was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["number", "port"]

_Number = TypeVar("_Number", int, float)


def number(
    option: str,
    kind: type[_Number],
    minimum: _Number,
    maximum: _Number | None = None,
    positive: bool = False,
) -> Callable[[str], _Number]:
    """
    A coerce function for C{option}: a finite number of C{kind}, at least
    C{minimum} (above it, if C{positive}), at most C{maximum}.
    """
    what = "whole number" if kind is int else "number"
    if positive:
        bounds = "" if minimum == 0 else f" above {minimum}"
        what = "positive " + what if minimum == 0 else what
    elif maximum is not None:
        bounds = f" from {minimum} to {maximum}"
    else:
        bounds = f" of at least {minimum}"

    def coerce(value: str) -> _Number:
        try:
            parsed = kind(value)
        except ValueError:
            parsed = None
        if (
            parsed is None
            or not math.isfinite(parsed)
            or (parsed <= minimum if positive else parsed < minimum)
            or (maximum is not None and parsed > maximum)
        ):
            raise ValueError(f"{option} must be a {what}{bounds}, not {value!r}")
        return parsed

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def port(value: str) -> int:
    """
    A TCP port number to connect to: 1 to 65535.
    """
    return number("--port", int, 1, 65535)(value)
