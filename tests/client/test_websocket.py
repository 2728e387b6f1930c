"""
The client's WebSocket target: reading a C{ws://} or C{wss://}
C{--connect} URL (no I/O), the options that go with it, and
L{WebSocketConnection}'s one-line failures, driven in memory.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure

from sockplay.client.connect import WebSocketTarget, parseWebSocketURL
from sockplay.client.failures import ClientError, ClosedAfterReply, NoReply
from sockplay.client.options import Options
from sockplay.client.websocket import WebSocketConnection


def options(*argv: str) -> Options:
    config = Options()
    config.parseOptions(list(argv))
    return config


@pytest.mark.parametrize(
    "url, target",
    [
        ("ws://127.0.0.1:8080/", WebSocketTarget("ws://127.0.0.1:8080/", False, "127.0.0.1", 8080)),
        ("ws://localhost/echo?x=1",
         WebSocketTarget("ws://localhost/echo?x=1", False, "localhost", 80)),
        ("wss://example.test", WebSocketTarget("wss://example.test", True, "example.test", 443)),
        ("WSS://[::1]:9/", WebSocketTarget("WSS://[::1]:9/", True, "::1", 9)),
    ],
)
def test_parseWebSocketURL(url: str, target: WebSocketTarget) -> None:
    """
    Scheme, host and port are read, with the scheme's default port.
    """
    assert parseWebSocketURL(url) == target


def test_otherStringsAreNotURLs() -> None:
    assert parseWebSocketURL("tcp:host=a:port=1") is None
    assert parseWebSocketURL("http://a/") is None


@pytest.mark.parametrize(
    "url, why",
    [
        ("ws://a:99999/", "Port out of range 0-65535"),
        ("ws://:80/", "the host '' is not a host name or an IP address (it is empty)"),
        ("ws://user:pw@a/", "a WebSocket URL has no user name or password"),
        ("ws://a/#top", "a WebSocket URL has no #fragment"),
        ("ws://a:0/", "port 0 is not from 1 to 65535"),
    ],
)
def test_badURLIsUsageError(url: str, why: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        options("--connect", url)
    assert str(raised.value) == (
        f"cannot parse --connect {url!r}: {why}; "
        "a WebSocket URL looks like ws://127.0.0.1:8080/ or wss://host:443/path"
    )


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--connect", "ws://a/", "--tls"],
         "--tls cannot be used with a ws:// URL: connect to wss://... for WebSocket over TLS"),
        (["--connect", "ws://a/", "--framing", "line"],
         "--framing cannot be used with a ws:// or wss:// --connect: each WebSocket message "
         "is one message"),
        (["--connect", "ws://a/", "--ca", "ca.pem"],
         "--ca needs --tls (or a --connect ssl: string)"),
    ],
)
def test_refusedCombinations(argv: list[str], error: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        options(*argv)
    assert str(raised.value) == error


def test_wssIsTLS() -> None:
    """
    A C{wss://} URL is TLS, verified by the URL's host unless told
    otherwise, and takes the TLS options.
    """
    config = options("--connect", "wss://localhost:8443/", "--ca", "ca.pem")
    assert config.usesTLS() and config.serverName() == "localhost"
    assert not options("--connect", "ws://localhost/").usesTLS()


def opened(target: str = "ws://h/") -> tuple[WebSocketConnection, StringTransport]:
    """
    A connection whose WebSocket is open, on an in-memory transport.
    """
    connection = WebSocketConnection(target)
    transport = StringTransport()
    connection.transport = transport  # type: ignore[assignment]
    sent: list[object] = []

    class FakeWebSocket:
        def sendTextMessage(self, text: str) -> None:
            sent.append(text)

        def sendBytesMessage(self, data: bytes) -> None:
            sent.append(data)

    connection.negotiationStarted(FakeWebSocket())  # type: ignore[arg-type]
    connection.negotiationFinished()
    connection.sent = sent  # type: ignore[attr-defined]
    return connection, transport


def test_textOrBinaryByTheMessage() -> None:
    """
    A UTF-8 message goes as text, any other as binary; a text reply comes
    back as its UTF-8 bytes.
    """
    connection, _ = opened()
    first = connection.ask("héllo".encode())
    connection.textMessageReceived("Message received: héllo")
    assert first.result == "Message received: héllo".encode()
    second = connection.ask(b"\xff")
    connection.bytesMessageReceived(b"Message received: \xff")
    assert second.result == b"Message received: \xff"
    assert connection.sent == ["héllo", b"\xff"]  # type: ignore[attr-defined]


def lostWith(frame: bytes, answered: bool = False) -> Failure:
    """
    The failure of a pending exchange whose connection ends after C{frame}
    (the server's close frame) arrived.
    """
    connection, _ = opened()
    if answered:
        connection.ask(b"a")
        connection.textMessageReceived("Message received: a")
    pending = connection.ask(b"b")
    connection.scanner.feed(frame)
    connection.connectionLost(Failure(ConnectionDone()))
    failures: list[Failure] = []
    pending.addErrback(failures.append)
    return failures[0]


def test_close1009SaysTooLong() -> None:
    failure = lostWith(b"\x88\x0a\x03\xf1too long")
    assert failure.check(ClientError)
    assert str(failure.value) == (
        "the message is too long for ws://h/: it closed the WebSocket (code 1009: too long)"
    )


def test_closeWithoutReply() -> None:
    failure = lostWith(b"\x88\x02\x03\xe9")
    assert failure.check(NoReply)
    assert str(failure.value) == "ws://h/ closed the WebSocket without a reply (code 1001)"


def test_closeAfterReplies() -> None:
    failure = lostWith(b"\x88\x02\x03\xe8", answered=True)
    assert failure.check(ClosedAfterReply)


def test_lostBeforeTheUpgradeIsNotWebSocket() -> None:
    """
    A connection lost before the upgrade completes (the server answered
    something that is not HTTP) says the server is not a WebSocket one.
    """
    connection = WebSocketConnection("ws://h/")
    failures: list[Failure] = []
    connection.opened.addErrback(failures.append)
    connection.connectionLost(Failure(ConnectionLost()))
    assert failures[0].check(ClientError)
    assert "did not answer as a WebSocket server" in str(failures[0].value)
