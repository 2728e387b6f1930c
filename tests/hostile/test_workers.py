"""
Hostile parents and process limits for C{--workers}: the parent process is
killed (SIGKILL, so it cannot pass anything on) at several moments of its
start, its status pipe is closed under a worker, and the process limit
stops it from starting all its workers.

The promise checked: a worker never outlives its parent. Whenever the
parent dies, every worker it started is gone within a few seconds and no
port it served still answers; a worker whose pipe to the parent breaks
stops without a traceback; a worker that cannot be started ends the
server with one error line, and the workers already started are stopped.

Workers are found by a token in their environment (they inherit it from
the server), so that even one started a moment before the kill, whose
start was not yet logged, is found.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import (
    EPHEMERAL,
    LOOPBACK,
    SERVER,
    ServerProcess,
    run,
    serverCommands,
)

from sockplay.server import ServerSettings
from sockplay.server.worker import ENVIRONMENT_KEY, encodeSettings

# Seconds a worker may take to go once its parent is gone: a stopping
# worker drains first, and there are no connections to drain.
GONE_WITHIN = 5.0

# The environment variable that marks the processes of one test.
TOKEN_KEY = "SOCKPLAY_HOSTILE_TOKEN"

_LISTENING = re.compile(r"Listening on tcp:127\.0\.0\.1:(\d+) ")


def processesWith(token: str) -> set[int]:
    """
    The live processes (zombies are not) whose environment holds C{token}.
    """
    marker = f"{TOKEN_KEY}={token}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environment = f.read().split(b"\0")
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:  # gone, or not ours to read
            continue
        if marker in environment and state != "Z":
            found.add(int(entry.name))
    return found


def waitUntilGone(token: str, timeout: float) -> set[int]:
    """
    Poll, at most C{timeout} seconds, until no process holds C{token}.

    @return: those still alive at the end (none, if all went in time).
    """
    deadline = time.monotonic() + timeout
    while (alive := processesWith(token)) and time.monotonic() < deadline:
        select.select([], [], [], 0.02)
    return alive


def answers(port: int) -> bool:
    """
    Whether anything still accepts connections on loopback C{port}.
    """
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2):
            return True
    except OSError:
        return False


def stillAnswersAfter(port: int, timeout: float) -> bool:
    """
    Poll, at most C{timeout} seconds, until nothing accepts connections on
    loopback C{port}: a process that is exiting drops out of C{/proc}'s
    view of live processes (its memory is gone) a moment before its
    sockets close.

    @return: whether the port still answered at the end.
    """
    deadline = time.monotonic() + timeout
    while (answering := answers(port)) and time.monotonic() < deadline:
        select.select([], [], [], 0.02)
    return answering


@pytest.fixture
def token() -> Iterator[str]:
    """
    A token for the processes of one test; whatever still holds it at the
    end is killed, so that a failing test leaves nothing running.
    """
    value = uuid.uuid4().hex
    try:
        yield value
    finally:
        for pid in processesWith(value):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def startMarked(token: str, command: list[str], cwd: Path, *args: str) -> ServerProcess:
    """
    Start C{command} with C{args} and C{token} in its environment (which
    its workers inherit), without waiting for it to be ready.
    """
    return ServerProcess(["env", f"{TOKEN_KEY}={token}", *command, *args], cwd)


# When the parent is killed, after it said it started its first worker:
# at once (the worker is still starting Python), 0.1 s on (it imports the
# server: where 5 of 5 kills used to leave orphans), on the first worker's
# first line (it has started its reactor), and once the server is ready.
MOMENTS = {
    "first-worker-started": lambda server: None,
    "0.1s-later": lambda server: time.sleep(0.1),
    "worker-logging": lambda server: server.waitForLine(
        lambda line: "[worker 1]" in line, "the first worker's first line"
    ),
    "ready": lambda server: server.waitForLine(
        lambda line: "Server is running" in line, "that it is ready"
    ),
}


@pytest.mark.parametrize("attempt", [1, 2])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killedParentLeavesNoWorker(
    moment: str, attempt: int, token: str, tmp_path: Path
) -> None:
    """
    A parent killed at any moment of its start, or once serving, takes its
    workers with it: within L{GONE_WITHIN} seconds no worker is left, and
    the port no longer answers.
    """
    server = startMarked(
        token, SERVER, tmp_path, "--workers", "2", "--listen", EPHEMERAL
    )
    try:
        found = _LISTENING.search(
            server.waitForLine(lambda line: bool(_LISTENING.search(line)), "its port")
        )
        assert found is not None
        port = int(found.group(1))
        server.waitForLine(lambda line: "Worker 1 started" in line, "that it started a worker")
        MOMENTS[moment](server)
        server.process.kill()
        assert server.process.wait(timeout=GONE_WITHIN) == -signal.SIGKILL
        left = waitUntilGone(token, GONE_WITHIN)
        assert not left, f"workers {sorted(left)} outlived their parent"
        assert not stillAnswersAfter(port, GONE_WITHIN), "a port of the dead server still answers"
    finally:
        for pid in processesWith(token):
            os.kill(pid, signal.SIGKILL)
        server.stop()
    assert "Traceback" not in server.transcript()


def test_brokenStatusPipeStopsQuietly(token: str, tmp_path: Path) -> None:
    """
    A worker whose pipe to its parent is broken when it reports ready (the
    parent died with the read end) stops, with one line and no
    C{BrokenPipeError} traceback.
    """
    readEnd, writeEnd = os.pipe()
    os.close(readEnd)
    spec = {
        "index": 1,
        "settings": encodeSettings(ServerSettings()),
        "drainTimeout": 1.0,
        "sockets": [],
        "statusFD": writeEnd,
    }
    environment = {**os.environ, ENVIRONMENT_KEY: json.dumps(spec), TOKEN_KEY: token}
    # This test is the worker's parent, as the pool would be.
    command = [sys.executable, "-m", "sockplay._worker", str(os.getpid())]
    try:
        result = subprocess.run(
            command, cwd=tmp_path, env=environment, pass_fds=[writeEnd], capture_output=True,
            text=True, timeout=GONE_WITHIN * 4, check=False,
        )
    finally:
        os.close(writeEnd)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "The parent process is gone; stopping" in output
    assert "Traceback" not in output and "BrokenPipeError" not in output


def _unusedUid() -> int:
    """
    A user id that no process runs as, so that its process count is ours
    (picked at random, so that two test runs on one machine do not share it).
    """
    used = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                used.add(entry.stat().st_uid)
            except OSError:
                pass
    return random.choice([uid for uid in range(61000, 65000) if uid not in used])


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("prlimit") is None,
    reason="the process limit binds only a user other than root: needs root, setpriv, prlimit",
)
@serverCommands
def test_processLimitStopsStartedWorkers(command: list[str], token: str, tmp_path: Path) -> None:
    """
    Under a process limit that lets the server start only 3 of its 8
    workers, it ends with one error line that names the worker it could
    not start, exit status 1 and no traceback, and the workers it started
    are gone within L{GONE_WITHIN} seconds.

    The limit binds only users other than root (and processes without
    CAP_SYS_RESOURCE), so the server runs as an unused user id, with only
    the right to read any file (the interpreter may be under C{/root}).
    The count is per user: the parent, then 3 workers, make 4.
    """
    uid = str(_unusedUid())
    environment = ["env", "-u", "COVERAGE_PROCESS_START", f"{TOKEN_KEY}={token}"]
    limited = [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
        "prlimit", "--nproc=4",
    ]
    result = run(
        [*limited, *environment, *command, "--workers", "8", "--listen", EPHEMERAL], tmp_path
    )
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "Error:" in line]
    assert result.returncode == 1, output
    assert len(errors) == 1, output
    # Worker 4, unless the parent runs a thread of its own, which counts.
    failed = re.search(
        r"Error: cannot start worker (\d) of 8: too many processes \(the limit is ulimit -u\); "
        r"lower --workers or raise that limit$",
        errors[0],
    )
    assert failed is not None, output
    assert "Traceback" not in output
    started = re.findall(r"Worker \d started", result.stdout)
    assert len(started) == int(failed.group(1)) - 1 > 0, output
    left = waitUntilGone(token, GONE_WITHIN)
    assert not left, f"workers {sorted(left)} outlived their parent"
