"""
C{--websocket} against a real server process, and the client's
C{--connect ws://} and C{wss://}: replies in kind (text, binary), a
message over C{--max-message} closed with 1009, a plain HTTP request
answered 426, C{--idle-timeout}, C{--max-connections} as a 503 before the
upgrade, the drain's 1001; after each refusal the server keeps serving.
"""

from __future__ import annotations

import http.client
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import trustme
from support.servers import (
    EPHEMERAL,
    HELLO_REPLY,
    LOOPBACK,
    PREFIX,
    TWISTD,
    ServerPool,
    ServerProcess,
    assertOneErrorLine,
    connect,
    readWithin,
    run,
)
from support.websocket import WebSocketPeer, webSocketPorts
from wsproto.events import BytesMessage, CloseConnection, TextMessage

CLIENT = [sys.executable, "-m", "sockplay.client"]
SERVER = [sys.executable, "-m", "sockplay.server"]


def startWebSocket(servers: ServerPool, *args: str, command: list[str] = TWISTD) -> tuple[
    ServerProcess, int
]:
    """
    A server with one C{--websocket} listener on an ephemeral port (and
    its TCP one), with C{args}.

    @return: the server and its WebSocket port.
    """
    server = servers.start(command, "--websocket", EPHEMERAL, *args)
    return server, webSocketPorts(server)["tcp"]


def clientSays(port: int, cwd: Path, *args: str) -> tuple[int, str, str]:
    """
    Run the client against C{ws://127.0.0.1:PORT/}.

    @return: its exit status, standard output and standard error.
    """
    result = run([*CLIENT, "--connect", f"ws://{LOOPBACK}:{port}/", *args], cwd)
    return result.returncode, result.stdout, result.stderr


def assertAnswers(port: int, cwd: Path) -> None:
    """
    The server still answers the Python client on its WebSocket listener.
    """
    assert clientSays(port, cwd) == (
        0, f"Response from the server: {HELLO_REPLY.decode()}\n", ""
    )


@pytest.mark.parametrize("command", [TWISTD, SERVER], ids=["twistd", "python-m"])
def test_pythonClientGetsTheReply(servers: ServerPool, tmp_path: Path, command: list[str]) -> None:
    """
    C{python -m sockplay.client --connect ws://127.0.0.1:PORT/} prints the
    tutorial's reply, under twistd and C{python -m sockplay.server}; the
    connection is logged as any, on the WebSocket listener.
    """
    server, port = startWebSocket(servers, command=command)
    assertAnswers(port, tmp_path)
    server.waitForLine(
        lambda line: f"on tcp:127.0.0.1:{port}, ok, 1 message, 14 bytes in, 32 bytes out"
        in line,
        "the WebSocket connection's log line",
    )


def test_textAndBinaryRepliesInKind(servers: ServerPool) -> None:
    """
    Every message on one WebSocket is answered, in order: a text message
    with a text reply, a binary one (not UTF-8) with a binary reply, on any
    path.
    """
    _, port = startWebSocket(servers, "--prefix", "{listener} got: ")
    with WebSocketPeer(port, "/any/path?x=1") as peer:
        assert peer.accepted
        peer.send(TextMessage("héllo"))
        peer.send(BytesMessage(b"\xff\x00\xfe"))
        peer.send(TextMessage("again"))
        text, binary, last = peer.next(), peer.next(), peer.next()
    prefix = f"tcp:127.0.0.1:{port} got: "
    assert isinstance(text, TextMessage) and text.data == prefix + "héllo"
    assert isinstance(binary, BytesMessage)
    assert binary.data == prefix.encode() + b"\xff\x00\xfe"
    assert isinstance(last, TextMessage) and last.data == prefix + "again"


def test_pythonClientSendsBinaryForNonUTF8(servers: ServerPool, tmp_path: Path) -> None:
    """
    A message that is not UTF-8 goes as a binary message, and its binary
    reply is printed as any reply.
    """
    _, port = startWebSocket(servers)
    status, out, err = clientSays(port, tmp_path, "--message", "\udcff\udcfe")
    assert (status, err) == (0, "")
    assert out == "Response from the server: Message received: \\xff\\xfe\n"


def test_tooLongClosedWith1009(servers: ServerPool, tmp_path: Path) -> None:
    """
    A message over C{--max-message} is answered with a close frame with
    code 1009, as soon as its frame header announces it (the rest is never
    sent here); it is logged as too-long, and the server answers the next
    client.
    """
    server, port = startWebSocket(servers, "--max-message", "100")
    with WebSocketPeer(port) as peer:
        peer.send(TextMessage("short"))
        assert isinstance(peer.next(), TextMessage)
        # A masked binary frame that announces 2**40 bytes, and no payload.
        peer.sendRaw(b"\x82\xff" + (2**40).to_bytes(8, "big") + b"\x00\x00\x00\x00")
        close = peer.next()
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1009, "message too long (limit 100 bytes)")
    server.waitForLine(
        lambda line: f"on tcp:127.0.0.1:{port}, too-long, 1 message" in line, "the too-long log"
    )
    assertAnswers(port, tmp_path)


def test_pythonClientSaysTooLong(servers: ServerPool, tmp_path: Path) -> None:
    """
    The client told 1009 says in one line that the message was too long for
    the server, and exits 1.
    """
    _, port = startWebSocket(servers, "--max-message", "10")
    status, out, err = clientSays(port, tmp_path, "--message", "x" * 11)
    assert (status, out) == (1, "")
    assertOneErrorLine(err)
    assert err == (
        f"Error: the message is too long for ws://127.0.0.1:{port}/: it closed the WebSocket "
        "(code 1009: message too long (limit 10 bytes))\n"
    )


def test_plainHTTPGets426(servers: ServerPool, tmp_path: Path) -> None:
    """
    A plain HTTP GET on a WebSocket listener is answered 426 with a line
    that says what the listener is; a POST with a body, 405 unread; and the
    server answers the next client.
    """
    _, port = startWebSocket(servers)
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data, _ = readWithin(sock, 5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nUpgrade: websocket" in head
    assert body == (
        b"this is a WebSocket echo endpoint: connect with a WebSocket client "
        b"(such as python -m sockplay.client --connect ws://HOST:PORT/)\n"
    )
    with connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
        data, _ = readWithin(sock, 5)
    assert data.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assertAnswers(port, tmp_path)


def test_clientToATCPListener(servers: ServerPool, tmp_path: Path) -> None:
    """
    The client pointed at a listener that is not WebSocket (the server's
    TCP one) says so in one line, and exits 1.
    """
    server, _ = startWebSocket(servers)
    status, out, err = clientSays(server.port, tmp_path)
    assert (status, out) == (1, "")
    assertOneErrorLine(err)
    assert "did not answer as a WebSocket server" in err


def test_idleTimeout(servers: ServerPool) -> None:
    """
    A WebSocket that sends nothing for C{--idle-timeout} is closed with
    code 1000 and the reason; the time counts from its last message.
    """
    server, port = startWebSocket(servers, "--idle-timeout", "0.5")
    with WebSocketPeer(port) as peer:
        peer.send(TextMessage("one"))
        assert isinstance(peer.next(), TextMessage)
        close = peer.next(5)
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1000, "idle timeout (0.5 s)")
    server.waitForLine(
        lambda line: f"on tcp:127.0.0.1:{port}, idle-timeout, 1 message" in line,
        "the idle-timeout log",
    )


def test_maxConnectionsRefusesWith503(servers: ServerPool, tmp_path: Path) -> None:
    """
    Over C{--max-connections} (counted with the TCP listeners' connections),
    the upgrade is refused with a 503 that says why; the client reports it
    in one line; once a connection closes, a new one is admitted.
    """
    server, port = startWebSocket(servers, "--max-connections", "1")
    with WebSocketPeer(port) as held:
        assert held.accepted
        with WebSocketPeer(port) as refused:
            assert refused.rejection is not None
            assert refused.rejection == (503, b"server busy\n")
        status, out, err = clientSays(port, tmp_path)
        assert (status, out) == (1, "")
        assert err == (
            f"Error: ws://127.0.0.1:{port}/ refused the WebSocket upgrade with HTTP 503 "
            "Service Unavailable: server busy\n"
        )
        # The TCP listener shares the budget.
        with connect(server.port) as sock:
            sock.sendall(b"Hello")
            data, _ = readWithin(sock, 5)
        assert data == b"Error: server busy\n"
    server.waitForLine(lambda line: ", ok, 0 messages" in line, "the held WebSocket's close")
    assertAnswers(port, tmp_path)


def test_drainClosesWith1001(servers: ServerPool) -> None:
    """
    On SIGTERM, an open WebSocket is still answered during the drain, then
    closed with code 1001 (going away) when C{--drain-timeout} ends; the
    server exits 0.
    """
    server, port = startWebSocket(servers, "--drain-timeout", "1")
    with WebSocketPeer(port) as peer:
        server.process.send_signal(signal.SIGTERM)
        server.waitForLine(lambda line: "Shutting down" in line, "the drain's start")
        peer.send(TextMessage("during the drain"))
        reply = peer.next()
        assert isinstance(reply, TextMessage)
        assert reply.data == PREFIX.decode() + "during the drain"
        close = peer.next(5)
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1001, "the server is shutting down")
    assert server.waitForExit() == 0


def test_wss(servers: ServerPool, tmp_path: Path) -> None:
    """
    C{--websocket ssl:...} serves WebSocket over TLS; the client connects
    with C{wss://}, trusting the CA with C{--ca}, and without it says in one
    line that the certificate cannot be verified.
    """
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    listen = f"ssl:0:interface={LOOPBACK}:privateKey={tmp_path / 'server.pem'}"
    server = servers.start(TWISTD, "--websocket", listen)
    port = webSocketPorts(server)["ssl"]
    url = f"wss://localhost:{port}/"
    result = run([*CLIENT, "--connect", url, "--ca", str(tmp_path / "ca.pem")], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"Response from the server: {HELLO_REPLY.decode()}\n", ""
    )
    result = run([*CLIENT, "--connect", url], tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(result.stderr)
    assert "cannot verify the TLS certificate" in result.stderr
    server.waitForLine(
        lambda line: f"on ssl:127.0.0.1:{port}, ok, 1 message" in line, "the wss connection"
    )


def test_probesOnOneWebSocket(servers: ServerPool, tmp_path: Path) -> None:
    """
    C{--count --keep-open} sends every probe on one WebSocket; without
    C{--keep-open}, each probe has one of its own.
    """
    server, port = startWebSocket(servers)
    status, out, _ = clientSays(port, tmp_path, "--count", "3", "--interval", "0", "--keep-open")
    assert status == 0 and "3 sent, 3 received, 0% loss" in out
    server.waitForLine(lambda line: ", ok, 3 messages" in line, "the one WebSocket")
    status, out, _ = clientSays(port, tmp_path, "--count", "2", "--interval", "0", "--json")
    assert status == 0 and '"received": 2' in out


def putFaults(port: int, body: bytes) -> int:
    """
    C{PUT /faults} on the metrics site at C{port}: the status.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("PUT", "/faults", body=body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_faultsChangedAtRuntimeApply(servers: ServerPool) -> None:
    """
    Faults put in force by C{PUT /faults} apply to the next WebSocket
    message, on a WebSocket already open: a 0.3 s delay holds its reply; a
    truncate sends half the reply's bytes as a binary message, then closes.
    """
    server, port = startWebSocket(servers, "--metrics", EPHEMERAL)
    metrics = int(
        next(
            match.group(1)
            for line in server.output
            if (match := re.search(r"Serving metrics on tcp:127\.0\.0\.1:(\d+) ", line))
        )
    )
    with WebSocketPeer(port) as peer:
        peer.send(TextMessage("fast"))
        assert isinstance(peer.next(), TextMessage)
        assert putFaults(metrics, b'{"delay": 0.3}') == 200
        started = time.monotonic()
        peer.send(TextMessage("slow"))
        reply = peer.next()
        assert time.monotonic() - started >= 0.3
        assert isinstance(reply, TextMessage) and reply.data == "Message received: slow"
        assert putFaults(metrics, b'{"delay": 0, "truncateRate": 1}') == 200
        peer.send(TextMessage("abcd"))
        half, close = peer.next(), peer.next()
    assert isinstance(half, BytesMessage) and half.data == b"Message received: abcd"[:11]
    assert isinstance(close, CloseConnection)
    server.waitForLine(
        lambda line: f"on tcp:127.0.0.1:{port}, truncated-reply, 3 messages" in line,
        "the truncated WebSocket",
    )
