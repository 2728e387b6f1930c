"""
The WebSocket listener (L{sockplay.server.websocket}) in memory: a
wsproto client talks to the listener's protocol factory over a
L{StringTransport}, on a fake clock. What a WebSocket connection shares
with every connection (admission, the idle timeout, the log, the drain)
and what is its own (replies in kind, close codes, faults per message).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from sockplay.server.factory import EchoReplyFactory
from sockplay.server.faultsettings import Faults
from sockplay.server.settings import ConnectionRecord, ServerSettings
from sockplay.server.websocketsite import MAX_HANDSHAKES, WebSocketSiteFactory, webSocketSite

LISTENER = IPv4Address("TCP", "127.0.0.1", 8080)


@dataclass
class Server:
    """
    A server with one WebSocket listener, in memory.
    """

    factory: EchoReplyFactory
    site: WebSocketSiteFactory
    clock: MemoryReactorClock
    records: list[ConnectionRecord] = field(default_factory=list)


def makeServer(**settings: object) -> Server:
    clock = MemoryReactorClock()
    factory = EchoReplyFactory(ServerSettings(**settings), clock=clock, hostname="box")  # type: ignore[arg-type]
    server = Server(factory, webSocketSite(factory, clock), clock)
    factory.observers.append(server.records.append)
    return server


class Peer:
    """
    One client connection to the listener: a wsproto client over a
    L{StringTransport}.
    """

    def __init__(self, server: Server, port: int = 5000, upgrade: bool = True) -> None:
        peer = IPv4Address("TCP", "127.0.0.1", port)
        self.transport = StringTransport(hostAddress=LISTENER, peerAddress=peer)
        self.protocol = server.site.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._read = 0
        if upgrade:
            self.feed(self.ws.send(Request(host="localhost", target="/echo")))

    def feed(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def send(self, event: Event) -> None:
        self.feed(self.ws.send(event))

    def events(self) -> list[Event]:
        """
        What the server sent since the last look, as events.
        """
        data = self.transport.value()
        new, self._read = data[self._read :], len(data)
        self.ws.receive_data(new)
        return list(self.ws.events())

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """
        The TCP connection ends (as after a close handshake).
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionDone()))


def test_textAndBinaryAnsweredInKind() -> None:
    """
    Once upgraded, each message gets its reply with the rendered prefix,
    text for text and binary for binary, every message on the connection,
    in order.
    """
    server = makeServer(prefix=b"{hostname} {listener}: ")
    peer = Peer(server)
    assert [type(e) for e in peer.events()] == [AcceptConnection]
    peer.send(TextMessage("héllo"))
    peer.send(BytesMessage(b"\xff"))
    peer.send(TextMessage("bye"))
    assert peer.events() == [
        TextMessage("box tcp:127.0.0.1:8080: héllo"),
        BytesMessage(b"box tcp:127.0.0.1:8080: \xff"),
        TextMessage("box tcp:127.0.0.1:8080: bye"),
    ]
    assert len(server.factory.connections) == 1
    peer.lose()
    [record] = server.records
    assert (record.outcome, record.messages, record.bytesIn) == ("ok", 3, 10)
    assert record.listener == "tcp:127.0.0.1:8080"
    assert not server.factory.connections


def test_plainGetAnswered426() -> None:
    """
    A request that is not an upgrade is answered 426 with one line, and
    closed; it is no connection of the echo server's.
    """
    server = makeServer()
    peer = Peer(server, upgrade=False)
    peer.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = peer.transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 Upgrade Required")
    assert body.startswith(b"this is a WebSocket echo endpoint")
    assert peer.closed
    assert server.records == []


def test_malformedUpgradeAnswered400() -> None:
    """
    An upgrade request without a WebSocket key is refused by Twisted (400),
    and counted out again: logged as bad-handshake.
    """
    server = makeServer()
    peer = Peer(server, upgrade=False)
    peer.feed(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert peer.transport.value().startswith(b"HTTP/1.1 400 ")
    [record] = server.records
    assert record.outcome == "bad-handshake"
    assert not server.factory.connections


def test_overMaxConnectionsRefused503() -> None:
    """
    Over C{--max-connections}, the upgrade is answered 503 with the reason,
    before any WebSocket; the refusal is logged (busy).
    """
    server = makeServer(maxConnections=1)
    first = Peer(server)
    assert [type(e) for e in first.events()] == [AcceptConnection]
    second = Peer(server, port=5001)
    events = second.events()
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 503
    assert b"".join(e.data for e in events if isinstance(e, RejectData)) == b"server busy\n"
    assert second.closed
    assert [record.outcome for record in server.records] == ["busy"]


def test_handshakesBounded() -> None:
    """
    At most L{MAX_HANDSHAKES} connections may be still speaking HTTP at
    once; upgraded ones do not count.
    """
    server = makeServer()
    upgraded = [Peer(server, port=4000 + n) for n in range(3)]
    waiting = [Peer(server, port=5000 + n, upgrade=False) for n in range(MAX_HANDSHAKES)]
    over = Peer(server, port=6000, upgrade=False)
    assert over.transport.value().startswith(b"HTTP/1.1 503 ")
    assert not any(peer.transport.value() for peer in waiting)
    assert all(peer.events() for peer in upgraded)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_tooLongClosedWith1009BeforeItsPayload(chunk: int) -> None:
    """
    A frame header that makes the message longer than C{--max-message} is
    answered with close code 1009 at once, the payload never read; a
    message split over frames counts as one.
    """
    server = makeServer(maxMessage=10)
    peer = Peer(server)
    peer.events()
    peer.send(TextMessage("12345", message_finished=False))
    data = peer.ws.send(TextMessage("678901", message_finished=True))
    for start in range(0, len(data), chunk):
        peer.feed(data[start : start + chunk])
    [close] = peer.events()
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1009, "message too long (limit 10 bytes)")
    assert peer.closed
    peer.lose()
    assert [record.outcome for record in server.records] == ["too-long"]


def test_messagesBeforeTheTooLongOneAnswered() -> None:
    """
    Messages that arrive in the same read as the header of one too long
    are answered first, then the close 1009 follows.
    """
    server = makeServer(maxMessage=10)
    peer = Peer(server)
    peer.events()
    peer.feed(
        peer.ws.send(TextMessage("first"))
        + b"\x82\xff" + (2**40).to_bytes(8, "big") + b"mask"
    )
    reply, close = peer.events()
    assert reply == TextMessage("Message received: first")
    assert isinstance(close, CloseConnection) and close.code == 1009


def test_idleTimeoutClosesWithItsReason() -> None:
    """
    No message for C{--idle-timeout} seconds: closed with 1000 and the
    reason; a message restarts the count.
    """
    server = makeServer(idleTimeout=2.0)
    peer = Peer(server)
    peer.events()
    server.clock.advance(1.5)
    peer.send(TextMessage("x"))
    server.clock.advance(1.5)
    assert [type(e) for e in peer.events()] == [TextMessage]
    server.clock.advance(1.5)
    [close] = peer.events()
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1000, "idle timeout (2 s)")
    peer.lose()
    assert [record.outcome for record in server.records] == ["idle-timeout"]


def test_drainAnswersThenClosesWith1001() -> None:
    """
    During the drain a WebSocket is still answered; when the drain's time
    is up it is closed with 1001 (going away).
    """
    server = makeServer()
    peer = Peer(server)
    peer.events()
    done = server.factory.drain(5.0)
    peer.send(TextMessage("still"))
    assert peer.events() == [TextMessage("Message received: still")]
    server.clock.advance(5.0)
    [close] = peer.events()
    assert isinstance(close, CloseConnection) and close.code == 1001
    peer.lose()
    assert done.called
    assert [record.outcome for record in server.records] == ["shutdown"]


def faulty(faults: Faults, **settings: object) -> tuple[Server, Peer]:
    server = makeServer(**settings)
    server.factory.setFaults(faults, "test")
    peer = Peer(server)
    peer.events()
    return server, peer


def test_delayAndJitterHoldRepliesInOrder() -> None:
    """
    With a delay, each reply waits for it (a timer), never before an
    earlier reply.
    """
    server, peer = faulty(Faults(delay=1.0, jitter=0.5))
    server.factory.random.seed(1)
    peer.send(TextMessage("a"))
    peer.send(TextMessage("b"))
    server.clock.advance(0.99)
    assert peer.events() == []
    server.clock.advance(0.51)
    assert peer.events() == [TextMessage("Message received: a"), TextMessage("Message received: b")]


def test_faultChangeAppliesToTheNextMessage() -> None:
    """
    The faults are read for each message: a delay put in force while the
    connection is open holds its next reply.
    """
    server, peer = faulty(Faults())
    peer.send(TextMessage("a"))
    assert len(peer.events()) == 1
    server.factory.setFaults(Faults(delay=2.0), "test")
    peer.send(TextMessage("b"))
    assert peer.events() == []
    server.clock.advance(2.0)
    assert peer.events() == [TextMessage("Message received: b")]


def test_dropClosesWithoutAReply() -> None:
    server, peer = faulty(Faults(dropRate=1.0))
    peer.send(TextMessage("a"))
    [close] = peer.events()
    assert isinstance(close, CloseConnection) and close.code == 1000
    peer.lose()
    assert [record.outcome for record in server.records] == ["dropped"]


def test_resetAbortsTheConnection() -> None:
    _, peer = faulty(Faults(resetRate=1.0))
    peer.send(TextMessage("a"))
    assert peer.events() == []
    assert peer.transport.disconnecting or getattr(peer.transport, "disconnected", False)


def test_truncateSendsHalfTheReply() -> None:
    """
    A truncated reply is the first half of the reply's bytes, as a binary
    message, then the close.
    """
    server, peer = faulty(Faults(truncateRate=1.0))
    peer.send(TextMessage("abcd"))
    reply, close = peer.events()
    assert reply == BytesMessage(b"Message received: abcd"[:11])
    assert isinstance(close, CloseConnection)
    peer.lose()
    assert [record.outcome for record in server.records] == ["truncated-reply"]


def test_stallAnswersNothingUntilTheIdleTimeout() -> None:
    server, peer = faulty(Faults(stallRate=1.0), idleTimeout=3.0)
    peer.send(TextMessage("a"))
    server.factory.setFaults(Faults(), "test")
    peer.send(TextMessage("b"))
    assert peer.events() == []
    server.clock.advance(3.0)
    [close] = peer.events()
    assert isinstance(close, CloseConnection)
    peer.lose()
    assert [record.outcome for record in server.records] == ["stalled"]


def test_cutAfterAbortsOnTime() -> None:
    server, peer = faulty(Faults(cutAfter=2.0))
    server.clock.advance(1.9)
    assert not peer.closed
    server.clock.advance(0.1)
    assert peer.transport.disconnecting or getattr(peer.transport, "disconnected", False)
    peer.lose()
    assert [record.outcome for record in server.records] == ["cut"]


def test_throttleWritesNoFasterThanItSays() -> None:
    """
    With a throttle of 100 bytes a second, a 232-byte reply (its frame
    included) takes a bit over two seconds to be written.
    """
    server, peer = faulty(Faults(throttle=100))
    before = len(peer.transport.value())
    peer.send(BytesMessage(b"x" * 210))
    server.clock.pump([0.1] * 10)
    assert 100 <= len(peer.transport.value()) - before <= 110
    server.clock.pump([0.1] * 10)
    assert 200 <= len(peer.transport.value()) - before <= 210
    server.clock.pump([0.1] * 5)
    events = peer.events()
    assert isinstance(events[-1], BytesMessage) and events[-1].message_finished
    assert b"".join(bytes(e.data) for e in events if isinstance(e, BytesMessage)) == (
        b"Message received: " + b"x" * 210
    )


def test_injectionsCounted() -> None:
    """
    Each injected fault is told to the server's observers (the metrics'
    C{sockplay_faults_injected_total}), by the kinds TCP's use: a delay per
    delayed message, a drop per connection.
    """
    server, peer = faulty(Faults(delay=1.0))
    injected: list[tuple[str, int]] = []
    server.factory.injectedObservers.append(lambda kind, count: injected.append((kind, count)))
    peer.send(TextMessage("a"))
    server.factory.setFaults(Faults(dropRate=1.0), "test")
    peer.send(TextMessage("b"))
    assert injected == [("delay", 1), ("drop", 1)]
