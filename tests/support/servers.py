"""
Real sockplay servers for tests: started as child processes on ephemeral
loopback ports, awaited on their log lines, and stopped at the end of the
test; and the blocking socket helpers that talk to them.

Nothing sleeps: servers are awaited on their log lines and sockets on their
data, each with a bound.
"""

from __future__ import annotations

import queue
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest

__all__ = [
    "DEADLINE",
    "EPHEMERAL",
    "HELLO",
    "HELLO_REPLY",
    "JSON_TWISTD",
    "LOOPBACK",
    "PREFIX",
    "SOCKET_TIMEOUT",
    "TWISTD",
    "ServerPool",
    "ServerProcess",
    "cleanServer",
    "connect",
    "readExactly",
    "readToEOF",
    "readWithin",
    "resetConnection",
    "tutorialClient",
]

# Seconds allowed for a server to say it is listening, or a command to end.
DEADLINE = 20.0

# Seconds any one socket operation may block.
SOCKET_TIMEOUT = 10.0

LOOPBACK = "127.0.0.1"
EPHEMERAL = f"tcp:0:interface={LOOPBACK}"
PREFIX = b"Message received: "
HELLO = b"Hello Server !"
HELLO_REPLY = b"Message received: Hello Server !"

# twistd -n --pidfile= sockplay. twistd has no __main__ module (and
# "python -m twisted" is twist, which takes neither -n nor --pidfile), so run
# what its console script runs.
_TWISTD_RUN = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
               "--pidfile="]
TWISTD = [*_TWISTD_RUN, "sockplay"]
# The same, logging one JSON object per line.
JSON_TWISTD = [*_TWISTD_RUN, "--logger", "sockplay.logs.jsonObserver", "sockplay"]

# The listener's kind comes first: tcp:, ssl:, haproxy:tcp:...
_LISTENING = re.compile(r"Listening on (?:haproxy:)?(?:tcp|ssl):127\.0\.0\.1:(\d+) \(")
_READY = "Server is running, waiting for connections..."


class ServerProcess:
    """
    A sockplay server running as a child process, its output read line by
    line on a thread so that the pipe never fills.

    @ivar process: the child.
    @ivar port: the TCP port it listens on, once L{waitUntilReady} returns.
    @ivar output: every line it has written so far (stdout and stderr), as
        far as L{waitUntilReady}, L{waitForLine} or L{waitForExit} have read.
    """

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.port = 0
        self.output: list[str] = []
        self._ended = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def _nextLine(self, deadline: float, what: str = "that it is ready") -> str:
        remaining = deadline - time.monotonic()
        line = None
        if not self._ended:
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                pytest.fail(f"server did not say {what} in time:\n{self.transcript()}")
        if line is None:
            self._ended = True
            self.process.wait(timeout=SOCKET_TIMEOUT)
            pytest.fail(
                f"server exited ({self.process.returncode}) before saying {what}:\n"
                f"{self.transcript()}"
            )
        self.output.append(line)
        return line

    def waitUntilReady(self) -> int:
        """
        Wait, at most L{DEADLINE} seconds, for the port line and then the
        ready line.

        @return: the listening port.
        """
        deadline = time.monotonic() + DEADLINE
        while not self.port:
            match = _LISTENING.search(self._nextLine(deadline))
            if match:
                self.port = int(match.group(1))
        while _READY not in self._nextLine(deadline):
            pass
        return self.port

    def waitForLine(
        self, matches: Callable[[str], bool], what: str, timeout: float = DEADLINE
    ) -> str:
        """
        Read the server's output until a line C{matches}, failing the test
        (naming C{what} was awaited) after C{timeout} seconds.

        @return: that line. Lines read before it are in L{output}.
        """
        deadline = time.monotonic() + timeout
        while not matches(line := self._nextLine(deadline, what)):
            pass
        return line

    def waitForExit(self, timeout: float = DEADLINE) -> int:
        """
        Wait, at most C{timeout} seconds, for the server to exit, and read
        the rest of its output into L{output}.

        @return: its exit status.
        """
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running after {timeout} s:\n{self.transcript()}")
        self._reader.join(timeout=SOCKET_TIMEOUT)
        while not self._ended:
            line = self._lines.get(timeout=SOCKET_TIMEOUT)
            if line is None:
                self._ended = True
            else:
                self.output.append(line)
        return status

    def transcript(self) -> str:
        """
        What the server has written, for failure messages.
        """
        return "".join(self.output)

    def stop(self) -> None:
        """
        Terminate the server if it still runs, killing it if it lingers.
        """
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=SOCKET_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=SOCKET_TIMEOUT)
        finally:
            self._reader.join(timeout=SOCKET_TIMEOUT)
            if self.process.stdout is not None:
                self.process.stdout.close()


class ServerPool:
    """
    Starts servers and stops every one of them in L{close} (or on leaving a
    C{with} block).
    """

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self._servers: list[ServerProcess] = []

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, command: list[str], *args: str) -> ServerProcess:
        """
        Start C{command} with C{args} on an ephemeral loopback port and wait
        until it is ready.
        """
        server = ServerProcess([*command, *args, "--listen", EPHEMERAL], self.cwd)
        self._servers.append(server)
        server.waitUntilReady()
        return server

    def close(self) -> None:
        """
        Stop every server started here.
        """
        while self._servers:
            self._servers.pop().stop()


def connect(port: int) -> socket.socket:
    """
    A blocking loopback connection to C{port}, with a timeout.
    """
    return socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT)


def resetConnection(sock: socket.socket) -> None:
    """
    Close C{sock} with a RST instead of a FIN: linger on, timeout 0.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def readWithin(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """
    Everything C{sock} receives until its peer closes or resets it, and
    how long that took; fails the test if it is still open after
    C{seconds}.
    """
    start = time.monotonic()
    sock.settimeout(seconds)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, ssl.SSLEOFError):
        pass
    except TimeoutError:
        pytest.fail(f"the server did not close the connection within {seconds} s")
    return b"".join(chunks), time.monotonic() - start


@contextmanager
def cleanServer(command: list[str], cwd: Path) -> Iterator[ServerProcess]:
    """
    Start C{command} and wait until it is ready; at the end, it must still
    be running, exit with status 0 on SIGTERM, and have logged no
    traceback. It is stopped whatever happens.
    """
    server = ServerProcess(command, cwd)
    try:
        server.waitUntilReady()
        yield server
        assert server.process.poll() is None, server.transcript()
        server.process.terminate()
        assert server.waitForExit() == 0, server.transcript()
    finally:
        server.stop()
    log = server.transcript()
    assert "Traceback" not in log and "Unhandled" not in log, log


def readToEOF(sock: socket.socket) -> bytes:
    """
    Everything the peer sends until it closes its side.
    """
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def readExactly(sock: socket.socket, size: int) -> bytes:
    """
    Read C{size} bytes, or fewer if the peer closes first.
    """
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tutorialClient(port: int) -> tuple[bytes, bytes]:
    """
    The socket tutorial's client: connect, one C{send}, one C{recv(1024)}.

    @return: what that C{recv} got, and what the next one got (C{b""} at
        end of input).
    """
    with connect(port) as sock:
        sock.send(HELLO)
        reply = sock.recv(1024)
        after = sock.recv(1024)
    return reply, after


HELLO_LINE = b"Response from the server: Message received: Hello Server !\n"

# python -m twisted sockplay: the twist runner, always in the foreground; it
# logs JSON unless told otherwise when its output is not a terminal.
TWIST = [sys.executable, "-m", "twisted", "--log-format=text", "sockplay"]
SERVER = [sys.executable, "-m", "sockplay.server"]
CLIENT = [sys.executable, "-m", "sockplay.client"]

# The two ways to run the server, for tests that hold for both.
serverCommands = pytest.mark.parametrize("command", [TWISTD, SERVER], ids=["twistd", "server"])

def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    Run C{command} to completion, within L{DEADLINE}, capturing its output.
    """
    return subprocess.run(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def assertOneErrorLine(text: str, start: str = "Error: ") -> None:
    """
    C{text} is exactly one line, starting with C{start}, and no traceback.
    """
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith(start), text


def assertUsageError(
    result: subprocess.CompletedProcess[str], error: str, program: str
) -> None:
    """
    C{result}, a command run to its end, was refused as a usage error:
    exit status 2, nothing on standard output, and on standard error the
    C{Error: <error>} line and where help is, no traceback.

    @param program: how the command is run, as its help hint names it
        (C{python -m sockplay.client}, C{twistd sockplay}).
    """
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == [f"Error: {error}", f"Try '{program} --help'."]


class BlockingServer:
    """
    A tutorial-style blocking server on a thread: bound to an ephemeral
    loopback port, it accepts one connection and hands it to C{handler}.

    @ivar port: the port it listens on.
    @ivar received: what C{handler} stored as the request.
    """

    def __init__(self, handler: Callable[[socket.socket, BlockingServer], None]) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.settimeout(SOCKET_TIMEOUT)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(1)
        self.port: int = self._listener.getsockname()[1]
        self.received = b""
        self._handler = handler
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
            with connection:
                connection.settimeout(SOCKET_TIMEOUT)
                self._handler(connection, self)
        except BaseException as e:
            self._errors.append(e)
        finally:
            self._listener.close()

    def join(self) -> None:
        """
        Wait for the connection to be handled; re-raise what the handler
        raised.
        """
        self._thread.join(timeout=DEADLINE)
        assert not self._thread.is_alive(), "blocking server still running"
        if self._errors:
            raise self._errors[0]


def tutorialHandler(connection: socket.socket, server: BlockingServer) -> None:
    """
    The socket tutorial's server: one C{recv(1024)}, a reply, close.
    """
    server.received = connection.recv(1024)
    connection.send(PREFIX + server.received)


def silentHandler(connection: socket.socket, server: BlockingServer) -> None:
    """
    Read the request, then close without a reply.
    """
    server.received = connection.recv(1024)


def muteHandler(connection: socket.socket, server: BlockingServer) -> None:
    """
    Read everything and never answer, until the client goes away.
    """
    try:
        while chunk := connection.recv(1024):
            server.received += chunk
    except ConnectionResetError:
        # The client aborts when it gives up waiting.
        pass

