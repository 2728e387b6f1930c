"""
Tests for L{sockplay.cli}: numeric option values and their errors.
"""

from __future__ import annotations

import pytest

from sockplay.cli import number, port


@pytest.mark.parametrize(
    "coerce, value, expected",
    [
        (number("--n", int, 1), "3", 3),
        (number("--n", int, 0), "0", 0),
        (number("--t", float, 0.0), "0", 0.0),
        (number("--t", float, 0.0, positive=True), "0.5", 0.5),
        (number("--r", float, 0.0, 1.0), "1", 1.0),
        (port, "65535", 65535),
    ],
)
def test_accepted(coerce: object, value: str, expected: float) -> None:
    """
    Values within the bounds come back typed.
    """
    assert coerce(value) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    "coerce, value, message",
    [
        (number("--n", int, 1), "0", "--n must be a whole number of at least 1, not '0'"),
        (number("--n", int, 1), "x", "--n must be a whole number of at least 1, not 'x'"),
        (number("--t", float, 0.0), "nan", "--t must be a number of at least 0.0, not 'nan'"),
        (number("--t", float, 0.0), "inf", "--t must be a number of at least 0.0, not 'inf'"),
        (number("--t", float, 0.0, positive=True), "0", "--t must be a positive number, not '0'"),
        (number("--r", float, 0.0, 1.0), "1.5", "--r must be a number from 0.0 to 1.0, not '1.5'"),
        (port, "0", "--port must be a whole number from 1 to 65535, not '0'"),
        (port, "65536", "--port must be a whole number from 1 to 65535, not '65536'"),
    ],
)
def test_refused(coerce: object, value: str, message: str) -> None:
    """
    A value out of bounds, not a number, or not finite is refused with a
    message that names the option and the value.
    """
    with pytest.raises(ValueError) as info:
        coerce(value)  # type: ignore[operator]
    assert str(info.value) == message
