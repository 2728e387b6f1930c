"""
Real-socket integration tests: the installed C{twistd} plugin, C{python -m
sockplay.server} and C{python -m sockplay.client} as separate processes, over
loopback TCP on ephemeral ports.

Every process is started with C{sys.executable}, from a scratch directory so
that the installed package (and its twistd dropin) is what runs. Nothing
sleeps: servers are awaited on their log lines and sockets on their data,
each with a bound.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import (
    CLIENT,
    DEADLINE,
    EPHEMERAL,
    HELLO,
    HELLO_LINE,
    HELLO_REPLY,
    LOOPBACK,
    PREFIX,
    SERVER,
    TWIST,
    TWISTD,
    BlockingServer,
    ServerPool,
    ServerProcess,
    assertOneErrorLine,
    connect,
    muteHandler,
    readExactly,
    readToEOF,
    run,
    serverCommands,
    silentHandler,
    tutorialClient,
    tutorialHandler,
)

from sockplay.certs import writeCertificates
from sockplay.cli import counted


@pytest.fixture(scope="module")
def sharedServers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """
    Servers shared by the tests of this module: they hold no state between
    connections, and starting each costs a Python start-up.
    """
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    try:
        yield pool
    finally:
        pool.close()

@pytest.fixture(scope="module")
def rawServer(sharedServers: ServerPool) -> ServerProcess:
    """
    C{twistd -n sockplay} with its defaults: raw framing, one reply, close.
    """
    return sharedServers.start(TWISTD)

@pytest.fixture(scope="module")
def lineServer(sharedServers: ServerPool) -> ServerProcess:
    """
    C{twistd -n sockplay --framing line --keep-open}.
    """
    return sharedServers.start(TWISTD, "--framing", "line", "--keep-open")

@pytest.fixture(scope="module")
def int32Server(sharedServers: ServerPool) -> ServerProcess:
    """
    C{twistd -n sockplay --framing int32 --keep-open}.
    """
    return sharedServers.start(TWISTD, "--framing", "int32", "--keep-open")

@pytest.fixture(scope="module")
def eofServer(sharedServers: ServerPool) -> ServerProcess:
    """
    C{twistd -n sockplay --framing eof}.
    """
    return sharedServers.start(TWISTD, "--framing", "eof")

@pytest.fixture(scope="module")
def limitedLineServer(sharedServers: ServerPool) -> ServerProcess:
    """
    C{twistd -n sockplay --max-message 10 --framing line --keep-open}.
    """
    return sharedServers.start(
        TWISTD, "--max-message", "10", "--framing", "line", "--keep-open"
    )

@pytest.fixture
def framedServers(
    lineServer: ServerProcess, int32Server: ServerProcess, eofServer: ServerProcess
) -> dict[str, ServerProcess]:
    """
    The shared servers by framing.
    """
    return {"line": lineServer, "int32": int32Server, "eof": eofServer}


def test_pluginListedByTwist(tmp_path: Path) -> None:
    """
    C{python -m twisted --help} lists the sockplay plugin, so the dropin is
    installed where Twisted looks for it.
    """
    result = run([sys.executable, "-m", "twisted", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+sockplay\s", result.stdout, re.MULTILINE), result.stdout


def test_pluginHelpShowsFraming(tmp_path: Path) -> None:
    """
    C{python -m twisted sockplay --help} shows the plugin's own options.
    """
    result = run([sys.executable, "-m", "twisted", "sockplay", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--framing=" in result.stdout


def test_twistdAnswersTutorialClient(rawServer: ServerProcess) -> None:
    """
    C{twistd -n sockplay} with its defaults answers the tutorial client's
    message with the prefixed message, then closes.
    """
    assert tutorialClient(rawServer.port) == (HELLO_REPLY, b"")


def test_twistdServesAfterClosingAClient(rawServer: ServerProcess) -> None:
    """
    After answering and closing one client, the one-shot server answers the
    next one the same way.
    """
    first = tutorialClient(rawServer.port)
    second = tutorialClient(rawServer.port)
    assert (first, second) == ((HELLO_REPLY, b""), (HELLO_REPLY, b""))


def test_twistAnswersTutorialClient(servers: ServerPool) -> None:
    """
    The plugin also runs under C{python -m twisted} (the C{twist} runner).
    """
    server = servers.start(TWIST)
    assert tutorialClient(server.port) == (HELLO_REPLY, b"")


def test_clientAgainstTwistd(rawServer: ServerProcess, tmp_path: Path) -> None:
    """
    The package client prints the tutorial's line for the server's reply and
    exits 0.
    """
    result = run([*CLIENT, "--port", str(rawServer.port)], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_clientAgainstTutorialServer(tmp_path: Path) -> None:
    """
    The package client works against the tutorial's blocking server, which
    reads once, replies and closes.
    """
    server = BlockingServer(tutorialHandler)
    result = run([*CLIENT, "--port", str(server.port)], tmp_path)
    server.join()
    assert server.received == HELLO
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_lineFramingKeepOpen(lineServer: ServerProcess) -> None:
    """
    With C{--framing line --keep-open}, two lines in one send get two
    replies, each ending with its line's own delimiter, and the connection
    stays open until the client closes.
    """
    expected = b"Message received: a\r\nMessage received: b\n"
    with connect(lineServer.port) as sock:
        sock.sendall(b"a\r\nb\n")
        replies = readExactly(sock, len(expected))
        sock.shutdown(socket.SHUT_WR)
        rest = readToEOF(sock)
    assert (replies, rest) == (expected, b"")


def test_int32FramingKeepOpen(int32Server: ServerProcess) -> None:
    """
    With C{--framing int32 --keep-open}, each length-prefixed request gets a
    length-prefixed reply.
    """
    request = struct.pack(">I", 5) + b"hello" + struct.pack(">I", 3) + b"\x00\n\xff"
    first = PREFIX + b"hello"
    second = PREFIX + b"\x00\n\xff"
    expected = struct.pack(">I", len(first)) + first + struct.pack(">I", len(second)) + second
    with connect(int32Server.port) as sock:
        sock.sendall(request)
        replies = readExactly(sock, len(expected))
        sock.shutdown(socket.SHUT_WR)
        rest = readToEOF(sock)
    assert (replies, rest) == (expected, b"")


def test_eofFraming(eofServer: ServerProcess) -> None:
    """
    With C{--framing eof}, everything up to the client's half-close is one
    message, newlines included, and the reply is followed by a close.
    """
    with connect(eofServer.port) as sock:
        sock.sendall(b"first part\n")
        sock.sendall(b"second part")
        sock.shutdown(socket.SHUT_WR)
        reply = readToEOF(sock)
    assert reply == b"Message received: first part\nsecond part"


def test_rawFramingBinary(rawServer: ServerProcess) -> None:
    """
    Raw framing passes bytes that are not UTF-8 through unchanged.
    """
    with connect(rawServer.port) as sock:
        sock.sendall(b"\x00\xff\xfe\x80")
        reply = readToEOF(sock)
    assert reply == b"Message received: \x00\xff\xfe\x80"


@pytest.mark.parametrize("framing", ["line", "int32", "eof"])
def test_clientFraming(
    framing: str, framedServers: dict[str, ServerProcess], tmp_path: Path
) -> None:
    """
    The package client, given the server's framing, frames its message and
    reads the framed reply.
    """
    port = framedServers[framing].port
    result = run([*CLIENT, "--port", str(port), "--framing", framing], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_oneShotReplySurvivesUnreadInput(rawServer: ServerProcess) -> None:
    """
    A one-shot server that gets far more than one message still delivers its
    whole reply to the first read's message, then a clean end of input: it
    half-closes and discards the rest instead of resetting the connection.
    """
    data = bytes(range(256)) * 800  # 200 KiB, no two neighbouring reads alike.
    with connect(rawServer.port) as sock:
        sock.sendall(data)
        reply = readToEOF(sock)
    assert reply.startswith(PREFIX)
    echoed = reply[len(PREFIX) :]
    assert 0 < len(echoed) <= 65536
    assert echoed == data[: len(echoed)]


def test_overlongLineGetsError(limitedLineServer: ServerProcess) -> None:
    """
    A line longer than C{--max-message} gets a framed error line naming the
    limit, then the server closes.
    """
    with connect(limitedLineServer.port) as sock:
        sock.sendall(b"x" * 20 + b"\n")
        reply = readToEOF(sock)
    assert reply == b"Error: message too long (limit 10 bytes)\n"


def test_overlongLineSparesOtherConnections(limitedLineServer: ServerProcess) -> None:
    """
    An over-long line ends only its own connection: one opened before it
    goes on being answered.
    """
    with connect(limitedLineServer.port) as other:
        with connect(limitedLineServer.port) as offender:
            offender.sendall(b"x" * 20 + b"\n")
            assert readToEOF(offender).startswith(b"Error: ")
        other.sendall(b"ok\n")
        reply = readExactly(other, len(b"Message received: ok\n"))
    assert reply == b"Message received: ok\n"


def test_clientConnectionRefused(tmp_path: Path) -> None:
    """
    A refused connection is one error line and exit status 1.
    """
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    result = run([*CLIENT, "--port", str(port)], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: connection refused by {LOOPBACK}:{port}\n",
    )


def test_clientClosedWithoutReply(tmp_path: Path) -> None:
    """
    A server that reads the message and closes without a reply is reported
    as such, with exit status 1.
    """
    server = BlockingServer(silentHandler)
    result = run([*CLIENT, "--port", str(server.port)], tmp_path)
    server.join()
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "Error: connection closed without a reply "
        f"(is {LOOPBACK}:{server.port} a TLS listener? try --tls)\n",
    )


def drainingHandler(connection: socket.socket, server: BlockingServer) -> None:
    """
    Read until the client half-closes, then close without a reply.
    """
    server.received = readToEOF(connection)


def test_clientEOFFramingClosedWithoutReply(tmp_path: Path) -> None:
    """
    In eof framing, after the client has half-closed, a server that closes
    without a reply is reported once, as such, without a traceback.
    """
    server = BlockingServer(drainingHandler)
    result = run([*CLIENT, "--port", str(server.port), "--framing", "eof"], tmp_path)
    server.join()
    assert server.received == HELLO
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "Error: connection closed without a reply "
        f"(is {LOOPBACK}:{server.port} a TLS listener? try --tls)\n",
    )


def test_clientTimeout(tmp_path: Path) -> None:
    """
    A server that never answers makes the client give up after C{--timeout}
    with one error line and exit status 1.
    """
    server = BlockingServer(muteHandler)
    result = run([*CLIENT, "--port", str(server.port), "--timeout", "0.5"], tmp_path)
    server.join()
    assert server.received == HELLO
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: no reply from {LOOPBACK}:{server.port} within 0.5 s: is the server's "
        "framing line, not raw? try --framing line (it must match the server's)\n",
    )


def test_clientBadEndpoint(tmp_path: Path) -> None:
    """
    A C{--connect} that is not an endpoint string is one error line and exit
    status 2, a usage error.
    """
    result = run([*CLIENT, "--connect", "foo:bar"], tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assertOneErrorLine(result.stderr, "Error: cannot parse --connect 'foo:bar'")


def test_clientUsageError(tmp_path: Path) -> None:
    """
    A malformed option is a usage error: exit status 2, no traceback.
    """
    result = run([*CLIENT, "--port", "notanumber"], tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr


@serverCommands
def test_portInUse(command: list[str], rawServer: ServerProcess, tmp_path: Path) -> None:
    """
    A server that cannot listen because the port is taken exits non-zero
    with one C{Error: cannot listen on ...} line and no traceback.
    """
    listen = f"tcp:{rawServer.port}:interface={LOOPBACK}"
    result = run([*command, "--listen", listen], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if f"Error: cannot listen on {listen}" in line]
    assert len(errors) == 1, output


@serverCommands
def test_badListenEndpoint(command: list[str], tmp_path: Path) -> None:
    """
    A C{--listen} that is not an endpoint string is refused at startup,
    naming it, without a traceback.
    """
    result = run([*command, "--listen", "bogus:1"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert "bad --listen 'bogus:1'" in output


def test_serverModuleAnswersTutorialClient(servers: ServerPool) -> None:
    """
    C{python -m sockplay.server} serves the tutorial client like twistd.
    """
    server = servers.start(SERVER)
    assert tutorialClient(server.port) == (HELLO_REPLY, b"")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serverModuleStopsOnSignal(signum: signal.Signals, servers: ServerPool) -> None:
    """
    C{python -m sockplay.server} stops cleanly, with exit status 0, on
    SIGINT or SIGTERM.
    """
    server = servers.start(SERVER)
    server.process.send_signal(signum)
    assert server.process.wait(timeout=DEADLINE) == 0, server.transcript()


@serverCommands
def test_keepOpenWithEOFFramingRejected(command: list[str], tmp_path: Path) -> None:
    """
    C{--keep-open} with C{--framing eof} is refused at startup: the message
    would never end.
    """
    result = run([*command, "--keep-open", "--framing", "eof", "--listen", EPHEMERAL], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "--keep-open cannot be used with --framing eof" in output



# Issue 9: the first ten minutes.


@serverCommands
def test_portFlagListensOnLoopback(command: list[str], tmp_path: Path) -> None:
    """
    C{-p N} listens on TCP port N of 127.0.0.1 (here 0: a free port), and
    only there; replies keep the default prefix (C{-p} is no longer
    C{--prefix}).
    """
    server = ServerProcess([*command, "-p", "0"], tmp_path)
    try:
        port = server.waitUntilReady()
        assert tutorialClient(port) == (HELLO_REPLY, b"")
        listening = [line for line in server.output if "Listening on " in line]
        assert len(listening) == 1, server.transcript()
        assert f"Listening on tcp:127.0.0.1:{port} (tcp:0:interface=127.0.0.1)" in listening[0]
    finally:
        server.stop()


TWIST_HINT = "twist sockplay"
TWISTD_HINT = "twistd sockplay"
SERVER_HINT = "python -m sockplay.server"


@pytest.mark.parametrize(
    "command, hint",
    [(TWISTD, TWISTD_HINT), (SERVER, SERVER_HINT), (TWIST, TWIST_HINT)],
    ids=["twistd", "server", "twist"],
)
@pytest.mark.parametrize(
    "argv, error",
    [
        (["--workers", "x"], "--workers must be a whole number from 1 to 256, not 'x'"),
        (["-m", "10"], "option -m not recognized"),
        (["--port", "65536"], "--port must be a whole number from 0 to 65535, not '65536'"),
    ],
    ids=["coerce", "old-short-flag", "port"],
)
def test_usageErrorIsOneLineAndAHint(
    command: list[str], hint: str, argv: list[str], error: str, tmp_path: Path
) -> None:
    """
    A usage error reads the same under every runner: one C{Error:} line in
    sockplay's words, then where help is, on standard error, exit status 2;
    not twistd's fifty lines of help, nor "Parameter type enforcement
    failed".
    """
    result = run([*command, *argv], tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == [f"Error: {error}", f"Try '{hint} --help'."]


@serverCommands
def test_eofFramingOnTLSRefused(command: list[str], tmp_path: Path) -> None:
    """
    C{--framing eof} on an C{ssl:} listener is refused at startup, as a
    usage error: no TLS client could end its message.
    """
    files = writeCertificates(tmp_path / "certs")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={files.serverKey}:certKey={files.server}"
    result = run([*command, "--framing", "eof", "--listen", listen], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines()[0] == (
        f"Error: --framing eof cannot be used with the TLS listener {listen!r}: a TLS client "
        "cannot half-close to end its message; use --framing line or int32"
    )


def test_twistdHelpAndVersion(tmp_path: Path) -> None:
    """
    C{twistd sockplay --help} has one usage line, naming twistd and the
    plugin; C{--version} names sockplay under both entry points.
    """
    result = run([*TWISTD, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Usage: twistd [options] sockplay [options]"
    assert result.stdout.count("Usage:") == 1
    assert "-p, --port=" in result.stdout
    for command in (TWISTD, SERVER):
        version = run([*command, "--version"], tmp_path)
        assert version.returncode == 0, version.stderr
        assert version.stdout.startswith("sockplay "), version.stdout


@serverCommands
def test_oneLinePerListener(command: list[str], tmp_path: Path) -> None:
    """
    Each listener is logged once, by sockplay, with its real kind; Twisted's
    own "<Factory> starting on <port>" and "Starting factory <...>" lines
    are gone.
    """
    server = ServerProcess(
        [*command, "--listen", f"haproxy:tcp:0:interface={LOOPBACK}", "--listen", EPHEMERAL],
        tmp_path,
    )
    try:
        server.waitUntilReady()
        server.process.send_signal(signal.SIGTERM)
        assert server.waitForExit() == 0
    finally:
        server.stop()
    output = server.transcript()
    assert "starting on" not in output
    assert "Starting factory" not in output
    listening = [line for line in server.output if "Listening on " in line]
    assert len(listening) == 2, output
    assert "Listening on haproxy:tcp:127.0.0.1:" in listening[0]
    assert "Listening on tcp:127.0.0.1:" in listening[1]


# The linger after the server's last reply: a drain that ends before it did
# not wait for the client.
LINGER = 5.0


@serverCommands
def test_secondSignalStopsAtOnce(command: list[str], tmp_path: Path) -> None:
    """
    Ctrl-C with a client connected starts the drain, and the log says for
    how long and how to stop now; a second Ctrl-C aborts the connection at
    once and the server exits 0, with no traceback; the connection's log
    line and the summary agree that it was aborted.
    """
    server = ServerProcess(
        [*command, "--framing", "line", "--keep-open", "--drain-timeout", "30",
         "--listen", EPHEMERAL],
        tmp_path,
    )
    try:
        with connect(server.waitUntilReady()) as sock:
            sock.sendall(b"hello\n")
            assert readExactly(sock, len(PREFIX) + 6) == PREFIX + b"hello\n"
            server.process.send_signal(signal.SIGINT)
            draining = server.waitForLine(lambda line: "Shutting down" in line, "draining")
            started = time.monotonic()
            server.process.send_signal(signal.SIGINT)
            status = server.waitForExit()
            elapsed = time.monotonic() - started
    finally:
        server.stop()
    output = server.transcript()
    assert draining.rstrip().endswith(
        "Shutting down: no longer accepting; draining 1 connection, waiting up to 30 s; "
        "press Ctrl-C again to stop now"
    )
    assert status == 0, output
    assert elapsed < LINGER, output
    assert "Traceback" not in output and "ReactorNotRunning" not in output
    assert "Received SIGINT again: aborting the connections left" in output
    [closed] = [line for line in server.output if "Connection closed: " in line]
    assert ", aborted, 1 message, " in closed
    assert "Shutdown complete: 0 connections drained, 1 aborted" in output


@serverCommands
def test_ctrlCWithSilentClientIsQuick(command: list[str], tmp_path: Path) -> None:
    """
    Ctrl-C with a client connected that has said nothing stops the server
    at once, with nothing to wait for; log and summary agree it drained.
    """
    server = ServerProcess([*command, "--listen", EPHEMERAL], tmp_path)
    try:
        port = server.waitUntilReady()
        with connect(port):
            # Accepted in order: once a later client has its reply, the
            # silent one is open on the server too.
            assert tutorialClient(port) == (HELLO_REPLY, b"")
            started = time.monotonic()
            server.process.send_signal(signal.SIGINT)
            status = server.waitForExit()
            elapsed = time.monotonic() - started
    finally:
        server.stop()
    output = server.transcript()
    assert status == 0, output
    assert elapsed < LINGER, output
    closed = [line for line in server.output if "Connection closed: " in line]
    assert len([line for line in closed if ", shutdown, 0 messages, " in line]) == 1, output
    # The tutorial client's connection may still be open at the drain, or not.
    draining = re.search(r"draining (\d+) connections?, waiting", output)
    assert draining is not None, output
    drained = counted(int(draining.group(1)), "connection")
    assert f"Shutdown complete: {drained} drained, 0 aborted" in output
