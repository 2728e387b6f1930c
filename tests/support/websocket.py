"""
A blocking WebSocket client for tests, on wsproto (what Twisted's own
WebSocket support runs on), that shows every event: the upgrade's answer,
each message, the close frame with its code; and where a server says its
WebSocket listeners listen.
"""

from __future__ import annotations

import re
import socket
import time
from types import TracebackType

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
)

from support.servers import LOOPBACK, SOCKET_TIMEOUT, ServerProcess

__all__ = ["WebSocketPeer", "webSocketPorts"]

# Where the server says a WebSocket listener listens.
_SERVING = re.compile(r"Serving WebSocket on (tcp|ssl):127\.0\.0\.1:(\d+) ")


def webSocketPorts(server: ServerProcess) -> dict[str, int]:
    """
    The port of each WebSocket listener the server started, by its kind
    (C{tcp}, C{ssl}).
    """
    ports = {}
    for line in server.output:
        if match := _SERVING.search(line):
            ports[match.group(1)] = int(match.group(2))
    return ports


class WebSocketPeer:
    """
    One blocking WebSocket connection to a loopback port, upgraded at
    construction (L{accepted} says whether the server accepted).

    @ivar accepted: the server answered the upgrade with 101.
    @ivar rejection: otherwise, the status code and body it answered with.
    """

    def __init__(self, port: int, path: str = "/", timeout: float = SOCKET_TIMEOUT) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self.sock.sendall(self.ws.send(Request(host="localhost", target=path)))
        self.accepted = False
        self.rejection: tuple[int, bytes] | None = None
        first = self.next(timeout)
        if isinstance(first, AcceptConnection):
            self.accepted = True
        elif isinstance(first, RejectConnection):
            body = b""
            while first.has_body:
                event = self.next(timeout)
                if not isinstance(event, RejectData):
                    break
                body += event.data
                if event.body_finished:
                    break
            self.rejection = (first.status_code, body)

    def __enter__(self) -> WebSocketPeer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.sock.close()

    def send(self, event: Event) -> None:
        """
        Send one event (a message, a close).
        """
        self.sock.sendall(self.ws.send(event))

    def sendRaw(self, data: bytes) -> None:
        """
        Send bytes as they are (a hand-made frame).
        """
        self.sock.sendall(data)

    def next(self, timeout: float = SOCKET_TIMEOUT) -> Event | None:
        """
        The next event from the server, waiting at most C{timeout} seconds;
        C{None} if the connection closed first.
        """
        deadline = time.monotonic() + timeout
        while not self._events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no WebSocket event within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        event = self._events.pop(0)
        if isinstance(event, CloseConnection) and self.ws.state is not ConnectionState.CLOSED:
            # Answer the close, as a client does.
            try:
                self.sock.sendall(self.ws.send(event.response()))
            except OSError:
                pass
        return event
