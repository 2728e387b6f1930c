"""
Tests for changing the faults while the server runs
(L{sockplay.server.faultcontrol}): C{GET} and C{PUT /faults} through the
metrics site's real factory and HTTP channel on in-memory transports,
C{--scenario} files and their timed stages on a fake clock, and the
factory that puts each change in force.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.fakes import HalfCloseableTransport, serverSettings
from support.httpbytes import Response, request
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.protocols.policies import ProtocolWrapper

from sockplay.server.factory import EchoReplyFactory
from sockplay.server.faultcontrol import FaultsPage, Scenario, ScenarioError, ScenarioService
from sockplay.server.faults import FaultyEchoReplyProtocol
from sockplay.server.faultsettings import Faults
from sockplay.server.metrics import Metrics, makeMetricsSite
from sockplay.server.protocol import EchoReplyProtocol
from sockplay.server.settings import DEFAULT_PREFIX
from sockplay.server.tap import Options

HOST = IPv4Address("TCP", "127.0.0.1", 8080)
PEER = IPv4Address("TCP", "127.0.0.1", 50000)


@pytest.fixture
def logged() -> Any:
    """
    The log events published during the test.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def changes(events: list[LogEvent]) -> list[str]:
    """
    The fault changes logged, as the log's text says them.
    """
    return [
        f"{event['faults']} ({event['why']})"
        for event in events
        if event.get("log_format", "").startswith("faults now")
    ]


class MetricsSite:
    """
    The metrics site with C{/faults}, for one factory, on in-memory
    transports.
    """

    def __init__(self, factory: EchoReplyFactory) -> None:
        self.site = makeMetricsSite(
            Metrics(), Clock(), faults=FaultsPage(factory)  # type: ignore[arg-type]
        )

    def ask(self, method: bytes, path: bytes = b"/faults", *headers: bytes,
            body: bytes = b"", host: bytes = b"127.0.0.1:8080") -> Response:
        protocol = self.site.buildProtocol(PEER)
        assert isinstance(protocol, ProtocolWrapper)
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(request(method, path, *headers, host=host, body=body))
        return Response(transport.value())


def makeFactory(**faults: Any) -> EchoReplyFactory:
    return EchoReplyFactory(serverSettings("line", True, **faults), clock=Clock(), hostname="box")


def test_getShowsTheFaultsInForce() -> None:
    """
    C{GET /faults} returns every setting in force as a JSON object, not to
    be cached.
    """
    factory = makeFactory(delay=0.25)
    response = MetricsSite(factory).ask(b"GET")
    assert response.status == 200
    assert response.headers[b"content-type"] == b"application/json"
    assert response.headers[b"cache-control"] == b"no-store"
    assert response.json() == {**Faults().toJSON(), "delay": 0.25}


def test_putChangesOnlyTheKeysNamed(logged: list[LogEvent]) -> None:
    """
    C{PUT /faults} changes the keys it names, answers with the faults now in
    force, logs the change with who asked, and C{GET} shows it at once.
    """
    factory = makeFactory(delay=0.25)
    site = MetricsSite(factory)
    response = site.ask(b"PUT", body=b'{"dropRate": 0.5}')
    assert response.status == 200
    assert response.json() == {**Faults().toJSON(), "delay": 0.25, "dropRate": 0.5}
    assert factory.faults == Faults(delay=0.25, dropRate=0.5)
    assert site.ask(b"GET").json() == response.json()
    assert changes(logged) == ["delay 0.25, dropRate 0.5 (PUT /faults from 127.0.0.1)"]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", 'the body is not JSON: send an object, such as {"delay": 0.5}'),
        (b"\xff\xfe", 'the body is not JSON: send an object, such as {"delay": 0.5}'),
        (b"[1]", 'the faults must be a JSON object, such as {"delay": 0.5}'),
        (b'{"delay": 0.1, "color": "red"}', "'color' is not a fault setting (known: delay, "
         "jitter, dropRate, resetRate, truncateRate, stallRate, cutAfter, throttle)"),
        (b'{"delay": 0.1, "dropRate": 7}', "dropRate must be a probability from 0 to 1"),
        (b'{"throttle": "fast"}', "throttle must be a whole number of bytes a second, 0 or more"),
    ],
)
def test_badPutIs400AndChangesNothing(body: bytes, reason: str, logged: list[LogEvent]) -> None:
    """
    A body that is not JSON, not an object, names an unknown key or gives
    a value out of range is answered 400 with the reason on one line, and
    nothing changes, not even the keys of the body that were good.
    """
    factory = makeFactory(delay=0.25)
    response = MetricsSite(factory).ask(b"PUT", body=body)
    assert response.status == 400
    assert response.json() == {"error": reason}
    assert response.body.count(b"\n") == 1
    assert factory.faults == Faults(delay=0.25)
    assert changes(logged) == []


@pytest.mark.parametrize(
    "headers, host",
    [
        ((b"Origin: http://evil.example",), b"127.0.0.1:8080"),
        ((), b"rebound.example:8080"),
    ],
)
def test_foreignOriginIs403(headers: tuple[bytes, ...], host: bytes) -> None:
    """
    A request from another origin, or by a name that is not the site's
    address (DNS rebinding), is refused, for reading and changing alike.
    """
    factory = makeFactory()
    site = MetricsSite(factory)
    for method in (b"GET", b"PUT"):
        response = site.ask(method, b"/faults", *headers, host=host, body=b'{"delay": 1}')
        assert response.status == 403
        assert "error" in response.json()
    assert factory.faults == Faults()


def test_otherMethodIs405() -> None:
    """
    C{/faults} is read with C{GET} and changed with C{PUT}; C{PUT} on
    C{/metrics} is refused as any method it does not answer.
    """
    site = MetricsSite(makeFactory())
    response = site.ask(b"DELETE")
    assert response.status == 405
    assert response.headers[b"allow"] == b"GET, HEAD, PUT"
    response = site.ask(b"PUT", b"/metrics", body=b"{}")
    assert response.status == 405
    assert response.headers[b"allow"] == b"GET, HEAD"


def test_largeBodyIs413Unread() -> None:
    """
    A body over the site's small limit is refused before it is read.
    """
    factory = makeFactory()
    response = MetricsSite(factory).ask(b"PUT", body=b" " * 5000 + b"{}")
    assert response.status == 413
    assert factory.faults == Faults()


def test_subpathIs404() -> None:
    """
    Nothing lives under C{/faults}.
    """
    assert MetricsSite(makeFactory()).ask(b"GET", b"/faults/delay").status == 404


def test_siteWithoutFaultsStaysReadOnly() -> None:
    """
    Without C{/faults}, the metrics site still refuses C{PUT} before it
    reads anything.
    """
    site = makeMetricsSite(Metrics(), Clock())  # type: ignore[arg-type]
    protocol = site.buildProtocol(PEER)
    assert protocol is not None
    transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(request(b"PUT", b"/faults", body=b"{}"))
    assert Response(transport.value()).status == 405


# The factory


def connect(factory: EchoReplyFactory) -> tuple[EchoReplyProtocol, HalfCloseableTransport]:
    transport = HalfCloseableTransport()
    transport.peerAddr = PEER
    protocol = factory.buildProtocol(PEER)
    protocol.makeConnection(transport)
    return protocol, transport


def test_changeAppliesToTheNextMessage() -> None:
    """
    A connection that opened with no fault gets a delay put in force while
    it is open, from its next message on; putting none back restores
    prompt replies.
    """
    factory = makeFactory()
    factory.allowFaultChanges()
    protocol, transport = connect(factory)
    assert isinstance(protocol, FaultyEchoReplyProtocol)
    protocol.dataReceived(b"one\n")
    assert transport.value() == DEFAULT_PREFIX + b"one\n"
    transport.clear()
    factory.setFaults(Faults(delay=0.3), "test")
    protocol.dataReceived(b"two\n")
    assert transport.value() == b""
    clock = factory.clock
    assert isinstance(clock, Clock)
    clock.advance(0.29)
    assert transport.value() == b""
    clock.advance(0.01)
    assert transport.value() == DEFAULT_PREFIX + b"two\n"
    transport.clear()
    factory.setFaults(Faults(), "test")
    protocol.dataReceived(b"three\n")
    assert transport.value() == DEFAULT_PREFIX + b"three\n"


def test_plainUntilFaultsMayChange() -> None:
    """
    A server whose faults cannot change builds the plain connection; once
    they may, or once some are put in force, the fault-injecting one.
    """
    factory = makeFactory()
    assert type(connect(factory)[0]) is EchoReplyProtocol
    factory.setFaults(Faults(dropRate=0.1), "test")
    assert type(connect(factory)[0]) is FaultyEchoReplyProtocol
    factory = makeFactory()
    factory.allowFaultChanges()
    assert type(connect(factory)[0]) is FaultyEchoReplyProtocol


def test_observersHearChanges() -> None:
    """
    Every change is passed to the fault observers.
    """
    factory = makeFactory()
    heard: list[Faults] = []
    factory.faultObservers.append(heard.append)
    factory.setFaults(Faults(delay=1), "a")
    factory.setFaults(Faults(), "b")
    assert heard == [Faults(delay=1), Faults()]


# Scenarios


@pytest.mark.parametrize(
    "document, reason",
    [
        ([], 'it must be a JSON object, such as {"stages": [...]}'),
        ({"stages": [{"at": 0}], "loop": True},
         "unknown key 'loop' (known: stages, repeat, period)"),
        ({}, '"stages" must be a list of at least one stage'),
        ({"stages": []}, '"stages" must be a list of at least one stage'),
        ({"stages": [{"at": 0}], "repeat": "yes"}, '"repeat" must be true or false'),
        ({"stages": [5]}, 'stage 1 must be an object, such as {"at": 10, "delay": 0.5}'),
        ({"stages": [{"delay": 1}]}, 'stage 1: "at" must be a number of seconds, 0 or more'),
        ({"stages": [{"at": 0}, {"at": -1}]},
         'stage 2: "at" must be a number of seconds, 0 or more'),
        ({"stages": [{"at": 0}, {"at": "10"}]},
         'stage 2: "at" must be a number of seconds, 0 or more'),
        ({"stages": [{"at": 5}, {"at": 5}]},
         "stage 2 (at 5 s) does not come after stage 1 (at 5 s): list the stages in time order"),
        ({"stages": [{"at": 0, "delay": 0}, {"at": 10, "dropRate": 1.2}]},
         "stage 2 (at 10 s): dropRate must be a probability from 0 to 1"),
        ({"stages": [{"at": 0, "dropRate": 0.6}, {"at": 10, "resetRate": 0.6}]},
         "stage 2 (at 10 s): dropRate, resetRate, truncateRate and stallRate add up to more "
         "than 1"),
        ({"stages": [{"at": 0, "colour": 1}]},
         "stage 1 (at 0 s): 'colour' is not a fault setting (known: delay, jitter, dropRate, "
         "resetRate, truncateRate, stallRate, cutAfter, throttle)"),
        ({"stages": [{"at": 0}, {"at": 10}], "repeat": True},
         '"repeat": true needs "period", the seconds from one start of the scenario to the '
         "next: after the last stage (at 10 s), and at least 0.1"),
        ({"stages": [{"at": 0}, {"at": 10}], "repeat": True, "period": 10},
         '"repeat": true needs "period", the seconds from one start of the scenario to the '
         "next: after the last stage (at 10 s), and at least 0.1"),
        ({"stages": [{"at": 0}], "repeat": True, "period": 0.01},
         '"repeat": true needs "period", the seconds from one start of the scenario to the '
         "next: after the last stage (at 0 s), and at least 0.1"),
        ({"stages": [{"at": 0}], "period": 5},
         '"period" is only for a scenario with "repeat": true'),
    ],
)
def test_badScenario(document: Any, reason: str) -> None:
    """
    A scenario that cannot run is refused with a reason that names the
    stage and key.
    """
    with pytest.raises(ScenarioError) as caught:
        Scenario.fromJSON(document, Faults())
    assert str(caught.value) == reason


def test_stagesAccumulate() -> None:
    """
    Each stage's faults are the command line's with the keys of that stage
    and every stage before it applied.
    """
    scenario = Scenario.fromJSON(
        {"stages": [{"at": 0, "delay": 0}, {"at": 10, "dropRate": 0.2},
                    {"at": 20, "cutAfter": 1}], "repeat": False},
        Faults(delay=0.5, throttle=100),
    )
    assert [stage.at for stage in scenario.stages] == [0, 10, 20]
    assert [stage.faults for stage in scenario.stages] == [
        Faults(throttle=100),
        Faults(dropRate=0.2, throttle=100),
        Faults(dropRate=0.2, cutAfter=1, throttle=100),
    ]
    assert scenario.period is None
    assert Scenario.fromJSON(scenario.toJSON(), Faults()) == scenario


def test_loadFile(tmp_path: Path) -> None:
    """
    A scenario is read from its file; a missing file and one that is not
    JSON are refused with the reason.
    """
    path = tmp_path / "scenario.json"
    path.write_text('{"stages": [{"at": 1, "delay": 0.3}], "repeat": true, "period": 2}')
    scenario = Scenario.load(str(path), Faults())
    assert scenario.stages[0].faults == Faults(delay=0.3)
    assert scenario.period == 2.0
    with pytest.raises(ScenarioError, match="cannot read it: No such file or directory"):
        Scenario.load(str(tmp_path / "missing.json"), Faults())
    path.write_text("stages: []")
    with pytest.raises(ScenarioError, match="it is not JSON: Expecting value"):
        Scenario.load(str(path), Faults())


def run(document: dict[str, Any], startedAt: float | None = None,
        now: float = 100.0) -> tuple[EchoReplyFactory, Clock, ScenarioService]:
    factory = makeFactory()
    clock = factory.clock
    assert isinstance(clock, Clock)
    clock.advance(now)
    service = ScenarioService(Scenario.fromJSON(document, Faults()), factory, clock, startedAt)
    service.startService()
    return factory, clock, service


def test_stagesAtTheirTimes(logged: list[LogEvent]) -> None:
    """
    Each stage puts its faults in force at its second after the start, and
    is logged with its number; after the last stage of a scenario that does
    not repeat, nothing is pending.
    """
    factory, clock, _ = run({"stages": [{"at": 0, "delay": 0}, {"at": 1, "delay": 0.3}]})
    assert factory.faults == Faults()
    clock.advance(0.99)
    assert factory.faults == Faults()
    clock.advance(0.01)
    assert factory.faults == Faults(delay=0.3)
    assert changes(logged) == [
        "none (scenario stage 1 of 2, at 0 s)",
        "delay 0.3 (scenario stage 2 of 2, at 1 s)",
    ]
    assert clock.getDelayedCalls() == []


def test_repeatEveryPeriod(logged: list[LogEvent]) -> None:
    """
    A repeating scenario starts again every period, and the log says which
    cycle.
    """
    _, clock, _ = run(
        {"stages": [{"at": 0, "delay": 0}, {"at": 1, "delay": 0.3}], "repeat": True, "period": 3}
    )
    for _ in range(7):
        clock.advance(1)
    assert changes(logged) == [
        "none (scenario stage 1 of 2, at 0 s, cycle 1)",
        "delay 0.3 (scenario stage 2 of 2, at 1 s, cycle 1)",
        "none (scenario stage 1 of 2, at 0 s, cycle 2)",
        "delay 0.3 (scenario stage 2 of 2, at 1 s, cycle 2)",
        "none (scenario stage 1 of 2, at 0 s, cycle 3)",
        "delay 0.3 (scenario stage 2 of 2, at 1 s, cycle 3)",
    ]
    assert len(clock.getDelayedCalls()) == 1


def test_firstStageLater() -> None:
    """
    Before a first stage that is not at 0, the command line's faults hold.
    """
    factory, clock, _ = run({"stages": [{"at": 2, "delay": 1}]})
    assert factory.faults == Faults()
    clock.advance(2)
    assert factory.faults == Faults(delay=1)


def test_stopCancels() -> None:
    """
    Stopping the service leaves no timer, and no stage starts after.
    """
    factory, clock, service = run({"stages": [{"at": 0}, {"at": 1, "delay": 1}]})
    service.stopService()
    assert clock.getDelayedCalls() == []
    clock.advance(5)
    assert factory.faults == Faults()


def test_lateJoinerPutsOnlyTheStageDue(logged: list[LogEvent]) -> None:
    """
    A worker that starts (or restarts) after the scenario began joins it at
    the stage due, in the current cycle, and logs only that stage.
    """
    document = {
        "stages": [{"at": 0}, {"at": 1, "delay": 0.1}, {"at": 2, "delay": 0.2}],
        "repeat": True,
        "period": 5,
    }
    factory, clock, _ = run(document, startedAt=100.0 - 11.5, now=100.0)
    # 11.5 s after the start: cycle 3, 1.5 s into it.
    assert factory.faults == Faults(delay=0.1)
    assert changes(logged) == ["delay 0.1 (scenario stage 2 of 3, at 1 s, cycle 3)"]
    clock.advance(0.5)
    assert factory.faults == Faults(delay=0.2)


# The command line


def test_scenarioOption(tmp_path: Path) -> None:
    """
    C{--scenario} reads its file at startup, on top of the command line's
    faults.
    """
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"stages": [{"at": 0}, {"at": 1, "dropRate": 0.5}]}))
    config = Options()
    config.parseOptions(["--delay", "0.1", "--scenario", str(path)])
    assert config.scenario is not None
    assert config.scenario.stages[1].faults == Faults(delay=0.1, dropRate=0.5)


def test_badScenarioIsAUsageError(tmp_path: Path) -> None:
    """
    A bad scenario file is a usage error that names the file, the stage and
    the key.
    """
    from twisted.python.usage import UsageError

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"stages": [{"at": 0}, {"at": 1, "stallRate": 2}]}))
    with pytest.raises(UsageError) as caught:
        Options().parseOptions(["--scenario", str(path)])
    assert str(caught.value) == (
        f"bad --scenario {str(path)!r}: stage 2 (at 1 s): stallRate must be a probability "
        "from 0 to 1"
    )


def test_ratesOverOneIsAUsageError() -> None:
    """
    Rates on the command line that add up to more than 1 are named as the
    options.
    """
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match=r"--drop-rate, --reset-rate, .* add up to more than 1"):
        Options().parseOptions(["--drop-rate", "0.6", "--reset-rate", "0.6"])
