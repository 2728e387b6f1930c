"""
The faults a server injects, as one value: L{Faults}.

A server starts with the faults its options name (C{--delay},
C{--drop-rate}...), and may change them while it runs (C{PUT /faults},
C{--scenario}): the factory holds the L{Faults} now in force, and a
connection reads it for each message, so that a change applies to the
messages read after it. The same keys name each fault on the command line
(C{--drop-rate}), in JSON (C{dropRate}) and in C{Faults}' fields.

No I/O here: only the values, their bounds, and one message's draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from random import Random

__all__ = ["FAULT_KEYS", "MAX_SECONDS", "OPTION_OF", "Faults", "FaultsError"]

# The longest delay, jitter or cut a fault may ask for: an hour is longer
# than any test waits, and keeps a typo (a delay of 3e9) from holding
# replies for ever.
MAX_SECONDS = 3600.0

# The four per-message faults, drawn together: one draw per message picks
# at most one of them.
_RATES = ("dropRate", "resetRate", "truncateRate", "stallRate")
_KINDS = ("drop", "reset", "truncate", "stall")
_SECONDS = ("delay", "jitter", "cutAfter")


class FaultsError(ValueError):
    """
    A fault setting is refused: what is wrong, and with which keys.

    @ivar keys: the JSON keys at fault (several when their sum is).
    @ivar reason: what is wrong, without the key's name.
    """

    def __init__(self, keys: tuple[str, ...], reason: str) -> None:
        super().__init__(f"{_names(keys, lambda key: key)} {reason}")
        self.keys = keys
        self.reason = reason

    def describe(self, nameOf: dict[str, str]) -> str:
        """
        The error in the words of one interface: C{nameOf} maps each JSON
        key to how that interface spells it (C{--drop-rate}).
        """
        return f"{_names(self.keys, lambda key: nameOf.get(key, key))} {self.reason}"


def _names(keys: tuple[str, ...], spell: Callable[[str], str]) -> str:
    """
    C{keys} as a list in words: C{a}, C{a and b}, C{a, b and c}.
    """
    words = [spell(key) for key in keys]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


@dataclass(frozen=True)
class Faults:
    """
    The faults in force: what a server does to each message and connection
    besides answering it. All zero (the default) is no fault at all.

    @ivar delay: seconds to wait before each reply (a timer, never blocking).
    @ivar jitter: at most this many seconds more, drawn uniformly per reply.
    @ivar dropRate: probability that a message is answered by closing the
        connection without a reply.
    @ivar resetRate: probability that a message is answered by resetting
        the connection (RST) without a reply.
    @ivar truncateRate: probability that a message gets only part of its
        reply, then the close.
    @ivar stallRate: probability that a message is read and never answered:
        the connection is held until the client gives up or the idle timeout
        ends it.
    @ivar cutAfter: abort every connection this many seconds after it
        opened; 0 for never.
    @ivar throttle: write replies no faster than this many bytes a second;
        0 for no limit.
    @ivar active: whether any fault is asked for (worked out once: a
        connection asks for each reply).
    @ivar drawn: whether any per-message fault may be drawn (a rate
        above 0).
    """

    delay: float = 0.0
    jitter: float = 0.0
    dropRate: float = 0.0
    resetRate: float = 0.0
    truncateRate: float = 0.0
    stallRate: float = 0.0
    cutAfter: float = 0.0
    throttle: int = 0
    active: bool = field(init=False, repr=False, compare=False)
    drawn: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in _SECONDS:
            value = getattr(self, key)
            if not _isNumber(value) or not 0 <= value <= MAX_SECONDS:
                raise FaultsError((key,), f"must be a number of seconds from 0 to {MAX_SECONDS:g}")
        for key in _RATES:
            value = getattr(self, key)
            if not _isNumber(value) or not 0 <= value <= 1:
                raise FaultsError((key,), "must be a probability from 0 to 1")
        throttle = self.throttle
        if not isinstance(throttle, int) or isinstance(throttle, bool) or throttle < 0:
            raise FaultsError(("throttle",), "must be a whole number of bytes a second, 0 or more")
        rates = sum(getattr(self, key) for key in _RATES)
        if rates > 1:
            raise FaultsError(_RATES, "add up to more than 1")
        # (Frozen: set as the dataclass itself sets fields.)
        object.__setattr__(self, "drawn", rates > 0)
        object.__setattr__(
            self, "active", rates > 0 or any(getattr(self, key) for key in (*_SECONDS, "throttle"))
        )

    def draw(self, random: Random) -> str | None:
        """
        Draw one message's fate: the kind of fault it gets (C{drop},
        C{reset}, C{truncate} or C{stall}), or C{None} for a reply. Nothing
        is drawn from C{random} when every rate is 0.
        """
        if not self.drawn:
            return None
        draw = random.random()
        for key, kind in zip(_RATES, _KINDS, strict=True):
            rate = getattr(self, key)
            if draw < rate:
                return kind
            draw -= rate
        return None

    def replyDelay(self, random: Random) -> float:
        """
        How long one reply waits: the delay, plus a uniform draw of the
        jitter (nothing is drawn without jitter).
        """
        if not self.jitter:
            return self.delay
        return self.delay + random.uniform(0.0, self.jitter)

    def toJSON(self) -> dict[str, float | int]:
        """
        Every setting, by its JSON key: what C{GET /faults} returns.
        """
        return {key: getattr(self, key) for key in FAULT_KEYS}

    def changed(self, changes: object) -> Faults:
        """
        These faults with C{changes} applied: a JSON object whose keys name
        the settings to change, as C{PUT /faults} and a scenario's stage
        give them. Keys it does not name keep their value.

        @raise FaultsError: C{changes} is not an object, names an unknown
            key, or gives a value out of range; nothing is changed.
        """
        if not isinstance(changes, dict):
            raise FaultsError(("the faults",), "must be a JSON object, such as {\"delay\": 0.5}")
        for key in changes:
            if key not in FAULT_KEYS:
                raise FaultsError(
                    (repr(key),), f"is not a fault setting (known: {', '.join(FAULT_KEYS)})"
                )
        values = dict(changes)
        for key in _SECONDS + _RATES:
            # JSON has one kind of number: 1 is as good as 1.0.
            if key in values and _isNumber(values[key]):
                values[key] = float(values[key])
        if isinstance(values.get("throttle"), float) and values["throttle"].is_integer():
            values["throttle"] = int(values["throttle"])
        return replace(self, **values)

    def describe(self) -> str:
        """
        The faults in force in a few words, for the log: the settings that
        are not 0, or C{none}.
        """
        words = [f"{key} {value:g}" for key, value in self.toJSON().items() if value]
        return ", ".join(words) if words else "none"


def _isNumber(value: object) -> bool:
    """
    Whether C{value} is a finite number (a JSON C{true} is not).
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        # An integer too large for a float.
        return False


# The JSON keys, in the order GET /faults gives them.
FAULT_KEYS = tuple(each.name for each in fields(Faults) if each.init)

# How the command line spells each key.
OPTION_OF = {
    "delay": "--delay",
    "jitter": "--jitter",
    "dropRate": "--drop-rate",
    "resetRate": "--reset-rate",
    "truncateRate": "--truncate-rate",
    "stallRate": "--stall-rate",
    "cutAfter": "--cut-after",
    "throttle": "--throttle",
}
