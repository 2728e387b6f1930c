"""
Changing a real server's faults while it runs: C{PUT /faults} on its
metrics site and on its playground, and C{--scenario} files, against real
server processes on ephemeral loopback ports, timed by a real client.

Every wait is bounded: sockets have timeouts, and polls have deadlines.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from support.servers import (
    HELLO,
    HELLO_REPLY,
    SERVER,
    TWISTD,
    ServerPool,
    ServerProcess,
    assertUsageError,
    connect,
    run,
    serverCommands,
    tutorialClient,
)

_SITE = re.compile(r"Serving (?:metrics|the playground) on tcp:127\.0\.0\.1:(\d+) ")
SITE = "tcp:0:interface=127.0.0.1"

# A delay that a loopback round trip on a loaded machine does not reach by
# itself.
DELAY = 0.3
# How long the scenario test polls for its stage (seconds), and how often.
STAGE_DEADLINE = 10.0
POLL = 0.05


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    with ServerPool(tmp_path) as pool:
        yield pool


def sitePort(server: ServerProcess) -> int:
    """
    The port of the server's metrics site or playground, from its log.
    """
    for line in server.output:
        if match := _SITE.search(line):
            return int(match.group(1))
    pytest.fail(f"the server did not say where its site is:\n{server.transcript()}")


def faults(port: int, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    """
    Ask C{/faults}: the status and the JSON answer.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, "/faults", body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def roundTrip(port: int) -> float:
    """
    The tutorial's exchange, timed: the seconds until the whole reply is in.
    """
    started = time.monotonic()
    reply, after = tutorialClient(port)
    elapsed = time.monotonic() - started
    assert (reply, after) == (HELLO_REPLY, b"")
    return elapsed


@pytest.mark.parametrize("site", ["--metrics", "--web"])
def test_putDelayThenBack(servers: ServerPool, site: str) -> None:
    """
    A C{PUT /faults} that sets C{delay} to 0.3 makes the next reply take at
    least 0.3 s; a second C{PUT} back to 0 restores prompt replies. Each
    change is logged with who made it, and C{GET} shows it at once.
    """
    server = servers.start(TWISTD, site, SITE)
    site_ = sitePort(server)
    assert roundTrip(server.port) < DELAY
    status, answer = faults(site_, "PUT", b'{"delay": 0.3}')
    assert (status, answer["delay"]) == (200, DELAY)
    assert faults(site_) == (200, answer)
    server.waitForLine(
        lambda line: "faults now: delay 0.3 (PUT /faults from 127.0.0.1)" in line, "the change"
    )
    assert roundTrip(server.port) >= DELAY
    status, answer = faults(site_, "PUT", b'{"delay": 0}')
    assert (status, answer["delay"]) == (200, 0)
    server.waitForLine(
        lambda line: "faults now: none (PUT /faults from 127.0.0.1)" in line, "the change back"
    )
    assert roundTrip(server.port) < DELAY


def test_keepOpenConnectionGetsTheChange(servers: ServerPool) -> None:
    """
    A connection already open when the faults change gets them from its
    next message: faults are read per message, not per connection.
    """
    server = servers.start(TWISTD, "--metrics", SITE, "--framing", "line", "--keep-open")
    with connect(server.port) as sock:
        sock.sendall(HELLO + b"\n")
        assert sock.recv(1024) == HELLO_REPLY + b"\n"
        assert faults(sitePort(server), "PUT", b'{"delay": 0.3}')[0] == 200
        started = time.monotonic()
        sock.sendall(HELLO + b"\n")
        assert sock.recv(1024) == HELLO_REPLY + b"\n"
        assert time.monotonic() - started >= DELAY


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"delay=0.3", "the body is not JSON"),
        (b'{"delay": -1}', "delay must be a number of seconds from 0 to 3600"),
        (b'{"latency": 1}', "'latency' is not a fault setting"),
        (b'{"dropRate": 0.7, "resetRate": 0.7}', "add up to more than 1"),
    ],
)
def test_badPutChangesNothing(servers: ServerPool, body: bytes, reason: str) -> None:
    """
    A malformed C{PUT} body gets a 400 with its reason on one line, the
    faults stay as they were, and the server keeps serving.
    """
    server = servers.start(SERVER, "--metrics", SITE, "--delay", "0")
    site = sitePort(server)
    before = faults(site)
    status, answer = faults(site, "PUT", body)
    assert status == 400
    assert reason in answer["error"]
    assert faults(site) == before
    assert roundTrip(server.port) < DELAY
    assert "faults now" not in server.transcript()


def test_foreignOriginRefused(servers: ServerPool) -> None:
    """
    A browser page of another origin cannot change the faults.
    """
    server = servers.start(TWISTD, "--metrics", SITE)
    connection = http.client.HTTPConnection("127.0.0.1", sitePort(server), timeout=5)
    connection.request("PUT", "/faults", body=b'{"delay": 1}',
                       headers={"Origin": "http://evil.example"})
    response = connection.getresponse()
    assert response.status == 403
    connection.close()
    assert roundTrip(server.port) < DELAY


def writeScenario(tmp_path: Path, document: dict[str, Any]) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(document))
    return str(path)


@serverCommands
def test_scenarioStageAtOneSecond(servers: ServerPool, tmp_path: Path, command: list[str]) -> None:
    """
    A scenario with a stage at 1 s changes the replies at about 1 s after
    startup, and the log shows the stage.
    """
    scenario = writeScenario(
        tmp_path, {"stages": [{"at": 0, "delay": 0}, {"at": 1, "delay": 0.5}], "repeat": False}
    )
    server = servers.start(command, "--scenario", scenario)
    started = time.monotonic()
    assert roundTrip(server.port) < 0.5
    deadline = started + STAGE_DEADLINE
    while roundTrip(server.port) < 0.5:
        assert time.monotonic() < deadline, server.transcript()
        time.sleep(POLL)
    changedAfter = time.monotonic() - started
    # The first slow reply began after the stage, and took 0.5 s.
    assert 1.0 <= changedAfter < 1.0 + 0.5 + 1.5, changedAfter
    server.waitForLine(
        lambda line: "faults now: delay 0.5 (scenario stage 2 of 2, at 1 s)" in line, "stage 2"
    )


def test_scenarioWithWorkers(servers: ServerPool, tmp_path: Path) -> None:
    """
    Every worker runs the scenario, on the parent's clock (a worker that
    starts after 1 s joins at stage 2 of cycle 1), and serves through it.
    """
    scenario = writeScenario(
        tmp_path, {"stages": [{"at": 0}, {"at": 1, "delay": 0.4}], "repeat": True, "period": 60}
    )
    server = servers.start(TWISTD, "--workers", "2", "--scenario", scenario)
    stage = re.compile(
        r"\[worker (\d)\] faults now: delay 0\.4 \(scenario stage 2 of 2, at 1 s, cycle 1\)"
    )
    # Lines logged before the server was ready are in its output already.
    workers = {match.group(1) for line in server.output if (match := stage.search(line))}
    while workers != {"1", "2"}:
        line = server.waitForLine(lambda line: stage.search(line) is not None, "stage 2")
        workers.add(stage.search(line).group(1))  # type: ignore[union-attr]
    assert roundTrip(server.port) < 5


@pytest.mark.parametrize(
    "command, program", [(SERVER, "python -m sockplay.server"), (TWISTD, "twistd sockplay")]
)
def test_badScenarioIsAUsageError(tmp_path: Path, command: list[str], program: str) -> None:
    """
    A malformed scenario file stops the server at startup with a usage
    error that names the stage and key.
    """
    scenario = writeScenario(
        tmp_path, {"stages": [{"at": 0, "delay": 0}, {"at": 10, "dropRate": 0.2, "cut": 1}]}
    )
    result = run([*command, "--scenario", scenario], tmp_path)
    assertUsageError(
        result,
        f"bad --scenario {scenario!r}: stage 2 (at 10 s): 'cut' is not a fault setting "
        "(known: delay, jitter, dropRate, resetRate, truncateRate, stallRate, cutAfter, "
        "throttle)",
        program,
    )
