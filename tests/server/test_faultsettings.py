"""
Tests for L{sockplay.server.faultsettings}: the faults as one value, their
bounds, one message's draw, and the changes C{PUT /faults} and a scenario's
stages make.
"""

from __future__ import annotations

import math
from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockplay.server.faultsettings import FAULT_KEYS, MAX_SECONDS, OPTION_OF, Faults, FaultsError


def test_keysInOrder() -> None:
    """
    The JSON keys are the fields, in the order C{GET /faults} gives them,
    and the command line has an option for each.
    """
    assert FAULT_KEYS == (
        "delay", "jitter", "dropRate", "resetRate", "truncateRate", "stallRate", "cutAfter",
        "throttle",
    )
    assert list(Faults().toJSON()) == list(FAULT_KEYS)
    assert set(OPTION_OF) == set(FAULT_KEYS)


def test_noFaultsIsInactive() -> None:
    """
    All zero is no fault at all; any one setting makes the faults active.
    """
    assert not Faults().active
    assert not Faults().drawn
    for key in FAULT_KEYS:
        faults = Faults().changed({key: 1})
        assert faults.active, key
        assert faults.drawn == key.endswith("Rate"), key


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"delay": -0.1}, "delay must be a number of seconds from 0 to 3600"),
        ({"jitter": MAX_SECONDS + 1}, "jitter must be a number of seconds from 0 to 3600"),
        ({"cutAfter": "5"}, "cutAfter must be a number of seconds from 0 to 3600"),
        ({"delay": True}, "delay must be a number of seconds from 0 to 3600"),
        ({"delay": 10**400}, "delay must be a number of seconds from 0 to 3600"),
        ({"delay": None}, "delay must be a number of seconds from 0 to 3600"),
        ({"dropRate": 1.5}, "dropRate must be a probability from 0 to 1"),
        ({"stallRate": -0.5}, "stallRate must be a probability from 0 to 1"),
        ({"resetRate": [0.5]}, "resetRate must be a probability from 0 to 1"),
        ({"throttle": 1.5}, "throttle must be a whole number of bytes a second, 0 or more"),
        ({"throttle": -1}, "throttle must be a whole number of bytes a second, 0 or more"),
        ({"throttle": False}, "throttle must be a whole number of bytes a second, 0 or more"),
        (
            {"dropRate": 0.5, "truncateRate": 0.3, "stallRate": 0.3},
            "dropRate, resetRate, truncateRate and stallRate add up to more than 1",
        ),
        (
            {"nope": 1},
            "'nope' is not a fault setting (known: delay, jitter, dropRate, resetRate, "
            "truncateRate, stallRate, cutAfter, throttle)",
        ),
        ([1, 2], 'the faults must be a JSON object, such as {"delay": 0.5}'),
        ("delay", 'the faults must be a JSON object, such as {"delay": 0.5}'),
    ],
)
def test_badChangesRefused(changes: Any, message: str) -> None:
    """
    A change out of range, of the wrong type or to an unknown key is
    refused with a reason that names the key, and changes nothing.
    """
    before = Faults(delay=0.5)
    with pytest.raises(FaultsError) as caught:
        before.changed(changes)
    assert str(caught.value) == message
    assert before == Faults(delay=0.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonFiniteRefused(value: float) -> None:
    """
    NaN and infinity are not numbers of seconds nor probabilities.
    """
    for key in ("delay", "dropRate"):
        with pytest.raises(FaultsError):
            Faults().changed({key: value})


def test_describeInAnInterfacesWords() -> None:
    """
    The command line names the keys as its options.
    """
    with pytest.raises(FaultsError) as caught:
        Faults(dropRate=0.6, resetRate=0.6)
    assert caught.value.describe(OPTION_OF) == (
        "--drop-rate, --reset-rate, --truncate-rate and --stall-rate add up to more than 1"
    )
    assert caught.value.keys == ("dropRate", "resetRate", "truncateRate", "stallRate")
    with pytest.raises(FaultsError) as caught:
        Faults(cutAfter=-1)
    assert caught.value.describe(OPTION_OF).startswith("--cut-after must be")


def test_changedOnlyTheKeysNamed() -> None:
    """
    A change names some keys; the others keep their value. JSON's whole
    numbers are as good as fractions, and a whole fraction is a throttle.
    """
    faults = Faults(delay=0.5, dropRate=0.25).changed({"resetRate": 0, "throttle": 1000.0})
    assert faults == Faults(delay=0.5, dropRate=0.25, throttle=1000)
    assert isinstance(faults.throttle, int)
    assert isinstance(faults.resetRate, float)
    assert Faults(delay=1).changed({}) == Faults(delay=1)


def test_describeForTheLog() -> None:
    """
    The log names the settings that are not 0, or says none.
    """
    assert Faults().describe() == "none"
    assert Faults(delay=0.3, dropRate=0.2, throttle=2000).describe() == (
        "delay 0.3, dropRate 0.2, throttle 2000"
    )


@pytest.mark.parametrize(
    "key, kind",
    [("dropRate", "drop"), ("resetRate", "reset"), ("truncateRate", "truncate"),
     ("stallRate", "stall")],
)
def test_drawCertain(key: str, kind: str) -> None:
    """
    A rate of 1 draws its fault for every message.
    """
    faults = Faults().changed({key: 1})
    random = Random(1)
    assert {faults.draw(random) for _ in range(50)} == {kind}


def test_drawNothingDrawsNoRandomNumber() -> None:
    """
    Without a rate, nothing is drawn: a seeded test's draws are not shifted
    by a delay.
    """
    random = Random(7)
    state = random.getstate()
    assert Faults(delay=1.0).draw(random) is None
    assert random.getstate() == state


def test_drawShares() -> None:
    """
    Each kind is drawn about as often as its rate says, from one draw per
    message: never two faults for one message.
    """
    faults = Faults(dropRate=0.1, resetRate=0.2, truncateRate=0.3, stallRate=0.1)
    random = Random(3)
    draws = [faults.draw(random) for _ in range(20000)]
    shares = {kind: draws.count(kind) / len(draws) for kind in ("drop", "reset", "truncate",
                                                                 "stall", None)}
    expected = {"drop": 0.1, "reset": 0.2, "truncate": 0.3, "stall": 0.1, None: 0.3}
    for kind, share in expected.items():
        assert math.isclose(shares[kind], share, abs_tol=0.02), (kind, shares)


@given(delay=st.floats(0, 10), jitter=st.floats(0, 10), seed=st.integers(0, 2**32))
def test_replyDelayWithinJitter(delay: float, jitter: float, seed: int) -> None:
    """
    A reply waits the delay plus at most the jitter.
    """
    wait = Faults(delay=delay, jitter=jitter).replyDelay(Random(seed))
    assert delay <= wait <= delay + jitter


def test_jitterVaries() -> None:
    """
    The jitter is drawn per reply, spread over its range.
    """
    faults = Faults(delay=1.0, jitter=0.5)
    random = Random(5)
    waits = [faults.replyDelay(random) for _ in range(1000)]
    assert min(waits) < 1.05 and max(waits) > 1.45
    assert Faults(delay=1.0).replyDelay(random) == 1.0
