"""
Tests for C{python -m sockplay.client} as a script sees it, against real
servers on loopback: its exit statuses (0 an echo, 1 no reply, 2 a usage
error, 3 an error reply, 4 not an echo), the banner shown apart from the
reply, and its help.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import (
    CLIENT,
    DEADLINE,
    HELLO_LINE,
    LOOPBACK,
    TWISTD,
    ServerPool,
    assertOneErrorLine,
    assertUsageError,
    connect,
    run,
)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ServerPool]:
    with ServerPool(tmp_path) as servers:
        yield servers


def test_echoExitsZero(pool: ServerPool, tmp_path: Path) -> None:
    """
    An echo of the message: the reply on stdout, nothing on stderr, 0.
    """
    server = pool.start(TWISTD)
    result = run([*CLIENT, "--port", str(server.port)], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_busyServerExitsThree(pool: ServerPool, tmp_path: Path) -> None:
    """
    A full server's C{Error: server busy} reply is exit status 3, with one
    error line, so that a health check fails on a full server.
    """
    server = pool.start(TWISTD, "--max-connections", "1", "--keep-open", "--framing", "line")
    with connect(server.port) as held:
        held.sendall(b"hold\n")
        assert held.recv(1024) == b"Message received: hold\n"
        result = run([*CLIENT, "--port", str(server.port), "--framing", "line"], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        "Response from the server: Error: server busy\n",
        f"Error: {LOOPBACK}:{server.port} answered with an error instead of an echo: "
        "server busy\n",
    )


@pytest.mark.parametrize("keepOpen", [[], ["--keep-open"]], ids=["one-shot", "keep-open"])
def test_bannerShownApart(keepOpen: list[str], pool: ServerPool, tmp_path: Path) -> None:
    """
    A server's C{--banner} is read and shown on its own line, before the
    reply, not as the reply; the exit status is that of the reply.
    """
    server = pool.start(TWISTD, "--banner", "Welcome", "--framing", "line", *keepOpen)
    result = run([*CLIENT, "--port", str(server.port), "--framing", "line"], tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "Banner from the server: Welcome\n" + HELLO_LINE.decode()


def test_cutRawEchoExitsFour(pool: ServerPool, tmp_path: Path) -> None:
    """
    A 70,000-byte message in raw framing comes back cut to the server's
    one read: exit status 4, and an error line that says so and names the
    framings to use instead.
    """
    server = pool.start(TWISTD)
    result = run([*CLIENT, "--port", str(server.port), "--message", "x" * 70000], tmp_path)
    assert result.returncode == 4
    assert result.stdout == "Response from the server: Message received: " + "x" * 65536 + "\n"
    assert result.stderr == (
        f"Error: {LOOPBACK}:{server.port} echoed only the first 65536 of the 70000 bytes "
        "sent: in raw framing the server takes one read as the message, so a long one is "
        "cut; use --framing line or --framing int32 (and the same on the server)\n"
    )


def test_longLineMessageIsEchoed(pool: ServerPool, tmp_path: Path) -> None:
    """
    The framing the error names carries the same message whole.
    """
    server = pool.start(TWISTD, "--framing", "line", "--max-message", "100000")
    result = run(
        [*CLIENT, "--port", str(server.port), "--framing", "line", "--message", "x" * 70000],
        tmp_path,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_plainClientAgainstTLSListener(tmp_path: Path) -> None:
    """
    A plain client that a TLS listener closes on without a reply is told
    that it may be one, and to try C{--tls}.
    """
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        # As a TLS server does with bytes that are not a handshake: close.
        result = _runAccepting(listener, [*CLIENT, "--port", str(port)], tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: connection closed without a reply "
        f"(is {LOOPBACK}:{port} a TLS listener? try --tls)\n"
    )


def _runAccepting(
    listener: socket.socket, command: list[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """
    Run C{command}, accept its one connection on C{listener}, read its
    message and close without a reply.
    """
    process = subprocess.Popen(
        command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        listener.settimeout(DEADLINE)
        connection, _ = listener.accept()
        connection.recv(1024)
        connection.close()
        out, err = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_rawClientAgainstLineServer(pool: ServerPool, tmp_path: Path) -> None:
    """
    A raw client against a line server gets no reply within C{--timeout}:
    the error says the framing is likely line, and how to use it.
    """
    server = pool.start(TWISTD, "--framing", "line")
    result = run([*CLIENT, "--port", str(server.port), "--timeout", "0.5"], tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: no reply from {LOOPBACK}:{server.port} within 0.5 s: is the server's framing "
        "line, not raw? try --framing line (it must match the server's)\n"
    )


def test_unescapedIPv6ExitsTwo(tmp_path: Path) -> None:
    """
    The IPv6 address written with bare colons is a usage error (exit 2)
    that says how to escape them, not a refused connection.
    """
    result = run([*CLIENT, "--connect", "tcp:host=::1:port=12345"], tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(
        "Error: cannot parse --connect 'tcp:host=::1:port=12345': the colons of an IPv6 "
        "address must be escaped with a backslash"
    )
    assert "Traceback" not in result.stderr


def test_unknownKindExitsTwo(tmp_path: Path) -> None:
    """
    A C{--connect} kind Twisted does not know is one error line, exit 2.
    """
    result = run([*CLIENT, "--connect", "foo:bar"], tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assertOneErrorLine(result.stderr, "Error: cannot parse --connect 'foo:bar': ")


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--connect", "tcp:host=127.0.0.1:port=99999"],
         "cannot parse --connect 'tcp:host=127.0.0.1:port=99999': port 99999 is not from 1 "
         "to 65535; an endpoint looks like tcp:host=...:port=..."),
        (["--connect", "tcp:host=a..b:port=1"],
         "cannot parse --connect 'tcp:host=a..b:port=1': the host 'a..b' is not a host name "
         "or an IP address (label empty or too long); an endpoint looks like "
         "tcp:host=...:port=..."),
        (["--host", ""], "--host must be a host name or an IP address, not ''"),
        (["--host", "a..b"], "--host must be a host name or an IP address, not 'a..b' "
         "(Empty Label)"),
        (["--tls", "--server-name", "a..b"], "the TLS server name 'a..b' is not a host name "
         "or an IP address (Empty Label); --server-name sets it"),
    ],
    ids=["connect-port", "connect-host", "empty-host", "bad-host", "server-name"],
)
def test_badTargetIsUsageError(argv: list[str], error: str, tmp_path: Path) -> None:
    """
    A target the client could not connect to (issue 10: a traceback for
    some, a hang for others) is one C{Error:} line and where help is, exit
    2, before any connection is tried.
    """
    assertUsageError(run([*CLIENT, *argv], tmp_path), error, "python -m sockplay.client")


def test_helpShowsDefaultsOneWay(tmp_path: Path) -> None:
    """
    The help writes every default as Twisted does, C{[default: X]}, also
    the ones written by hand.
    """
    result = run([*CLIENT, "--help"], tmp_path)
    assert result.returncode == 0
    assert "(default" not in result.stdout
    text = " ".join(result.stdout.split())
    for default in ("[default: 1]", "[default: 0]", "[default: 0.1]",
                    "[default: 5, or --backoff if more]",
                    "[default: the host of --connect, or --host]"):
        assert default in text
    assert result.stdout.startswith("Usage: python -m sockplay.client [options]\n")
