"""
The one connection of C{--count --keep-open}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

from sockplay.client.protocol import KeepOpenClientProtocol

__all__ = ["KeepOpenSession"]


class KeepOpenSession:
    """
    Messages sent one after another on one connection, which is opened by
    the first L{ask}, and opened again by the next L{ask} after a failure
    (L{drop}) or after the server closed it.

    Not Twisted's C{ClientService}: it reconnects as soon as the server
    closes, and a probe must open a connection only when it sends, so that
    an idle timeout between probes does not become connection churn.

    @ivar connections: how many connections it has opened so far: the
        number of the current one, from 1 (0 before the first).
    """

    def __init__(self, endpoint: IStreamClientEndpoint, framing: str, clock: IReactorTime) -> None:
        """
        @param endpoint: where to connect.
        @param framing: the framing of the messages and replies.
        @param clock: the time source of the round-trip times.
        """
        self._endpoint = endpoint
        self._framing = framing
        self._clock = clock
        self._protocol: KeepOpenClientProtocol | None = None
        self.connections = 0

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """
        The protocol that the connection's TLS handshake selected in ALPN;
        C{None} if none (or no connection, or not TLS).
        """
        return None if self._protocol is None else self._protocol.negotiatedProtocol

    async def ask(self, message: bytes) -> tuple[bytes, float]:
        """
        Send C{message} and wait for its reply, connecting first if needed.

        @return: the reply payload and the seconds from sending it to its
            complete reply.
        """
        protocol = self._protocol
        if protocol is None or not protocol.isOpen:
            protocol = KeepOpenClientProtocol(self._framing)
            self.connections += 1
            await connectProtocol(self._endpoint, protocol)
            self._protocol = protocol
        sent = self._clock.seconds()
        reply = await protocol.ask(message)
        return reply, self._clock.seconds() - sent

    def drop(self) -> None:
        """
        Abandon the connection: abort it, so that the next L{ask} opens a
        new one. For after a failure, which leaves the connection in an
        unknown state, and for a L{close} that takes too long.
        """
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.abort()

    def close(self) -> Deferred[None]:
        """
        Close the connection.

        @return: fires once it is closed.
        """
        if self._protocol is None:
            return succeed(None)
        return self._protocol.close()
