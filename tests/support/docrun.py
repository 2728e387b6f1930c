"""
Run one documented example inside a network namespace of its own.

L{support.docs} launches this file as C{unshare --net --pid --mount --fork
--kill-child python docrun.py}, with the example's steps as JSON on standard
input; it prints the outcome of each step as JSON on standard output. In
its own network namespace an example may use the literal ports of the docs
(12345, 9100...) without meeting anything else on the machine, or another
example running at the same time; in its own PID namespace every process it
starts dies with it, whatever happens; its C{/run} is its own (an empty
tmpfs), so that the stats socket of the shipped C{haproxy.cfg}
(C{/run/haproxy/}) is the example's own too.

A step is one of:
  - C{{"run": COMMAND}}: run C{sh -c COMMAND} to its end (bounded), its
    standard output and error read as one stream, as a terminal shows them;
    with C{"mustSucceed": true}, the example ends if it fails;
  - C{{"server": COMMAND}}: start C{COMMAND} in the background and wait until
    it is ready (see L{_waitUntilReady});
  - C{{"stop": true}}: stop every server started so far, with SIGTERM.
Every server still running at the end is stopped the same way.

Only the standard library: this runs before anything is known about the
environment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

# What sockplay's server prints once every listener is up
# (sockplay.server.lifecycle.READY_MESSAGE; not imported, so that this file
# needs nothing but the standard library).
READY_MESSAGE = "Server is running, waiting for connections..."

# Seconds a command may run, a server may take to get ready, and a stopped
# server may take to exit (its drain is 10 s by default).
RUN_BOUND = 60.0
READY_BOUND = 20.0
STOP_BOUND = 15.0

# A command that starts a sockplay server itself (not through a wrapper such
# as systemd-socket-activate): it says when it is ready.
_SOCKPLAY_SERVER = re.compile(
    r"^(?:\S+=\S*\s+)*(?:\S*/)?(?:twistd\s.*\bsockplay\b|python3?\s+-m\s+sockplay\.server\b)"
)

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def _listeningSockets() -> set[str]:
    """
    The local addresses of every listening TCP socket in this network
    namespace.
    """
    found = set()
    for name in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(name) as table:
                next(table)
                for row in table:
                    fields = row.split()
                    if fields[3] == _LISTEN:
                        found.add(fields[1])
        except FileNotFoundError:
            pass
    return found


class Server:
    """
    A command started in the background, its output in a file.
    """

    def __init__(self, command: str, cwd: str, logs: str, env: dict[str, str]) -> None:
        self.command = command
        self.log = tempfile.NamedTemporaryFile(dir=logs, delete=False)
        self.before = _listeningSockets()
        self.process = subprocess.Popen(
            ["sh", "-c", "exec " + command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        with open(self.log.name, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def waitUntilReady(self) -> str | None:
        """
        Wait until the server is ready: for a sockplay server, until it
        prints L{READY_MESSAGE}; for anything else (HAProxy,
        systemd-socket-activate), until a new TCP socket listens.

        @return: C{None}, or why it is not ready.
        """
        sockplay = _SOCKPLAY_SERVER.match(self.command) is not None
        deadline = time.monotonic() + READY_BOUND
        while time.monotonic() < deadline:
            if sockplay and READY_MESSAGE in self.output():
                return None
            if not sockplay and _listeningSockets() - self.before:
                return None
            if self.process.poll() is not None:
                return f"exited with status {self.process.returncode} before it was ready"
            time.sleep(0.02)
        return f"not ready within {READY_BOUND:g} s"

    def stop(self) -> dict[str, Any]:
        """
        Stop the server with SIGTERM (SIGKILL after L{STOP_BOUND} seconds).

        @return: its outcome: command, exit status, output, and whether it
            had to be killed.
        """
        killed = False
        if self.process.poll() is None:
            _signalGroup(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                killed = True
                _signalGroup(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signalGroup(self.process.pid, signal.SIGKILL)
        return {
            "server": self.command,
            "status": self.process.returncode,
            "killed": killed,
            "output": self.output(),
        }


def _signalGroup(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _run(command: str, previous: int, cwd: str, env: dict[str, str]) -> dict[str, Any]:
    """
    Run C{command} to its end. C{$?} is the previous command's status, so
    that an example can show C{echo $?}.
    """
    process = subprocess.Popen(
        ["sh", "-c", f"(exit {previous}); {command}"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timedOut = False
    try:
        output, _ = process.communicate(timeout=RUN_BOUND)
    except subprocess.TimeoutExpired:
        timedOut = True
        _signalGroup(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    _signalGroup(process.pid, signal.SIGKILL)
    return {
        "run": command,
        "status": process.returncode,
        "timedOut": timedOut,
        "output": output.decode("utf-8", "replace"),
    }


def main() -> None:
    request = json.load(sys.stdin)
    for setUp in (["ip", "link", "set", "lo", "up"],
                  ["mount", "-t", "tmpfs", "-o", "mode=755", "sockplay-docs", "/run"],
                  ["mkdir", "/run/haproxy"]):
        done = subprocess.run(setUp, capture_output=True, text=True)
        if done.returncode:
            json.dump({"error": f"{' '.join(setUp)}: {done.stderr.strip()}"}, sys.stdout)
            return
    cwd, env = request["cwd"], request["env"]
    results: list[dict[str, Any]] = []
    servers: list[Server] = []
    previous = 0
    with tempfile.TemporaryDirectory() as logs:
        try:
            for step in request["steps"]:
                if "run" in step:
                    result = _run(step["run"], previous, cwd, env)
                    previous = result["status"]
                    results.append(result)
                    if step.get("mustSucceed") and (result["status"] or result["timedOut"]):
                        # What follows may rely on it (an install, a copy):
                        # the example ends here.
                        break
                elif "server" in step:
                    server = Server(step["server"], cwd, logs, env)
                    servers.append(server)
                    problem = server.waitUntilReady()
                    if problem:
                        results.append({"server": server.command, "notReady": problem,
                                        "output": server.output()})
                        break
                else:
                    results.extend(server.stop() for server in servers)
                    servers.clear()
        finally:
            results.extend(server.stop() for server in servers)
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
