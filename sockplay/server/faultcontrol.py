"""
Changing the faults while the server runs: C{GET} and C{PUT /faults}
(L{FaultsPage}) on the metrics site or the playground, and C{--scenario}
(L{Scenario}, L{ScenarioService}), timed stages read from a JSON file.

Both put a new L{Faults} in force with the factory's
L{setFaults<sockplay.server.factory.EchoReplyFactory.setFaults>}, which
logs the change; connections read the faults in force for each message,
so a change applies to the messages read after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from sockplay.server.address import hostOf
from sockplay.server.faultsettings import Faults, FaultsError
from sockplay.website import allowedOrigin

__all__ = ["FaultsPage", "Scenario", "ScenarioError", "ScenarioService", "Stage"]

# The shortest period of a repeating scenario: a stage a tenth of a second
# is shorter than any test needs, and keeps the timers from spinning.
MIN_PERIOD = 0.1


class Owner(Protocol):
    """
    The factory, as fault control sees it: the faults in force, and how to
    change them (L{sockplay.server.factory.EchoReplyFactory}).
    """

    @property
    def faults(self) -> Faults:
        """
        The faults in force.
        """

    def setFaults(self, faults: Faults, why: str) -> None:
        """
        Put C{faults} in force, and log it with C{why}.
        """


class FaultsPage(Resource):
    """
    C{/faults}: C{GET} returns the faults in force as a JSON object;
    C{PUT} with a JSON object changes the keys it names, and returns the
    faults now in force. A body that is not a JSON object, an unknown key
    or a value out of range is answered 400 with the reason in one line
    (C{{"error": "..."}}), and changes nothing.

    Requests must come from the site's own origin (L{allowedOrigin}), as
    the playground's do, so that a web page cannot change a server's
    faults through a visitor's browser.
    """

    isLeaf = True

    def __init__(self, owner: Owner) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._owner = owner

    def render(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return _json(request, 404, {"error": "no such page"})
        return self.answer(request)

    def answer(self, request: Request) -> bytes:
        """
        Answer a request for C{/faults}, wherever the site routed it from.
        """
        request.setHeader(b"cache-control", b"no-store")
        why = allowedOrigin(request)
        if why is not None:
            return _json(request, 403, {"error": why})
        if request.method in (b"GET", b"HEAD"):
            return _json(request, 200, self._owner.faults.toJSON())
        if request.method != b"PUT":
            request.setHeader(b"allow", b"GET, HEAD, PUT")
            return _json(request, 405, {"error": "read with GET, change with PUT"})
        assert request.content is not None
        try:
            changes = json.loads(request.content.read())
        except (ValueError, UnicodeDecodeError):
            return _json(request, 400, {"error": "the body is not JSON: send an object, "
                                        "such as {\"delay\": 0.5}"})
        try:
            faults = self._owner.faults.changed(changes)
        except FaultsError as e:
            return _json(request, 400, {"error": str(e)})
        peer = hostOf(request.getClientAddress())
        self._owner.setFaults(faults, f"PUT /faults from {peer}")
        return _json(request, 200, faults.toJSON())


def _json(request: Request, status: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode("utf-8") + b"\n"


class ScenarioError(ValueError):
    """
    A scenario file is refused: the message names the stage and key.
    """


@dataclass(frozen=True)
class Stage:
    """
    One stage of a scenario.

    @ivar at: seconds after the start of the scenario (or of its cycle)
        when it begins.
    @ivar faults: the faults in force from then on.
    """

    at: float
    faults: Faults


@dataclass(frozen=True)
class Scenario:
    """
    Timed stages of faults (C{--scenario FILE}).

    A stage's faults are the command line's, with the keys of that stage
    and of every stage before it in the cycle applied: so each cycle of a
    repeating scenario is the same, whatever a C{PUT /faults} did in
    between (a C{PUT} lasts until the next stage).

    @ivar stages: in time order.
    @ivar period: with C{repeat}, the scenario starts again this many
        seconds after each start; C{None} for once.
    """

    stages: tuple[Stage, ...]
    period: float | None

    @classmethod
    def fromJSON(cls, document: object, base: Faults) -> Scenario:
        """
        Read a scenario: C{{"stages": [{"at": 0, "delay": 0.5}, ...],
        "repeat": false}}, with C{"period"} (seconds) when C{"repeat"} is
        true. Each stage's keys other than C{at} are those of
        C{PUT /faults}.

        @param base: the faults before the first stage (the command line's).
        @raise ScenarioError: naming the stage and key at fault.
        """
        if not isinstance(document, dict):
            raise ScenarioError('it must be a JSON object, such as {"stages": [...]}')
        unknown = sorted(set(document) - {"stages", "repeat", "period"})
        if unknown:
            raise ScenarioError(
                f"unknown key {unknown[0]!r} (known: stages, repeat, period)"
            )
        stagesJSON = document.get("stages")
        if not isinstance(stagesJSON, list) or not stagesJSON:
            raise ScenarioError('"stages" must be a list of at least one stage')
        repeat = document.get("repeat", False)
        if not isinstance(repeat, bool):
            raise ScenarioError('"repeat" must be true or false')
        stages: list[Stage] = []
        faults = base
        for number, stage in enumerate(stagesJSON, 1):
            if not isinstance(stage, dict):
                raise ScenarioError(f"stage {number} must be an object, such as "
                                    '{"at": 10, "delay": 0.5}')
            at = stage.get("at")
            where = f"stage {number}"
            if not _seconds(at):
                raise ScenarioError(f'{where}: "at" must be a number of seconds, 0 or more')
            where = f"stage {number} (at {at:g} s)"
            if stages and at <= stages[-1].at:
                raise ScenarioError(
                    f"{where} does not come after stage {number - 1} "
                    f"(at {stages[-1].at:g} s): list the stages in time order"
                )
            changes = {key: value for key, value in stage.items() if key != "at"}
            try:
                faults = faults.changed(changes)
            except FaultsError as e:
                raise ScenarioError(f"{where}: {e}") from None
            stages.append(Stage(float(at), faults))
        period = document.get("period")
        if repeat:
            if not _seconds(period) or period <= stages[-1].at or period < MIN_PERIOD:
                raise ScenarioError(
                    '"repeat": true needs "period", the seconds from one start of the '
                    f"scenario to the next: after the last stage (at {stages[-1].at:g} s), "
                    f"and at least {MIN_PERIOD:g}"
                )
            return cls(tuple(stages), float(period))
        if period is not None:
            raise ScenarioError('"period" is only for a scenario with "repeat": true')
        return cls(tuple(stages), None)

    @classmethod
    def load(cls, path: str, base: Faults) -> Scenario:
        """
        Read the scenario in the file at C{path} (L{fromJSON}).

        @raise ScenarioError: the file cannot be read, is not JSON, or is
            not a scenario.
        """
        try:
            with open(path, "rb") as file:
                text = file.read(1 << 20)
        except OSError as e:
            raise ScenarioError(f"cannot read it: {e.strerror}") from None
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise ScenarioError(f"it is not JSON: {e}") from None
        return cls.fromJSON(document, base)

    def toJSON(self) -> dict[str, Any]:
        """
        The scenario with each stage's faults in full: how a worker process
        gets it.
        """
        return {
            "stages": [{"at": stage.at, **stage.faults.toJSON()} for stage in self.stages],
            "repeat": self.period is not None,
            **({"period": self.period} if self.period is not None else {}),
        }


def _seconds(value: object) -> TypeGuard[float]:
    """
    Whether C{value} is a finite number of seconds, 0 or more (a JSON
    C{true} is not).
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:
        # An integer too large for a float.
        return False


class ScenarioService(Service):
    """
    Runs a L{Scenario} from when the server starts: each stage puts its
    faults in force at its time (logged, with the stage's number), and a
    repeating scenario starts again every period. One timer is pending at
    a time; stopping the service cancels it.
    """

    def __init__(
        self,
        scenario: Scenario,
        owner: Owner,
        clock: IReactorTime,
        startedAt: float | None = None,
    ) -> None:
        """
        @param startedAt: when the scenario started, by C{clock}; by
            default, when this service starts. A C{--workers} worker gets
            its parent's start, so that every worker is at the same stage.
        """
        self.scenario = scenario
        self._owner = owner
        self._clock = clock
        self._startedAt = startedAt
        self._timer: IDelayedCall | None = None
        self._origin = 0.0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        start = self._startedAt
        if start is None:
            start = self._clock.seconds()
        self._origin = start
        period = self.scenario.period
        if period is not None:
            # Join a repeating scenario in its current cycle.
            start += max(0, (self._clock.seconds() - start) // period) * period
        self._next(0, start)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _next(self, index: int, start: float) -> None:
        """
        Put in force the stage due by now, from C{index}, in a cycle that
        started at C{start}; then wait for the next one. Of several stages
        already due (a worker that joins late), only the last is put in
        force.
        """
        stages = self.scenario.stages
        period = self.scenario.period
        due: tuple[int, float] | None = None
        while True:
            if index == len(stages):
                if period is None:
                    break
                index, start = 0, start + period
            delay = start + stages[index].at - self._clock.seconds()
            if delay > 0:
                self._timer = self._clock.callLater(delay, self._fire, index, start)
                break
            due = (index, start)
            index += 1
        if due is not None:
            self._begin(*due)

    def _fire(self, index: int, start: float) -> None:
        self._timer = None
        self._next(index, start)

    def _begin(self, index: int, start: float) -> None:
        """
        Put stage C{index} in force, of the cycle that started at C{start}.
        """
        stage = self.scenario.stages[index]
        period = self.scenario.period
        cycle = ""
        if period is not None:
            cycle = f", cycle {round((start - self._origin) / period) + 1}"
        self._owner.setFaults(
            stage.faults,
            f"scenario stage {index + 1} of {len(self.scenario.stages)}, "
            f"at {stage.at:g} s{cycle}",
        )
