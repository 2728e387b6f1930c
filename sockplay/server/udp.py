"""
The echo-reply server over UDP: one datagram in, one reply datagram back to
its sender.

A datagram is a message: there is no framing, no connection and no
lifecycle. The reply is the prefix followed by the datagram's bytes, unless
that would not fit in one UDP datagram, in which case it is
C{Error: message too long (limit N bytes)} followed by a newline, as in
C{raw} framing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sockplay.server.address import describeAddress
from sockplay.server.protocol import DEFAULT_PREFIX

__all__ = [
    "MAX_DATAGRAM",
    "MAX_REPLY",
    "EchoReplyDatagramProtocol",
    "UDPService",
    "makeUDPService",
]

# The largest UDP payload over IPv4 (65535 - 20 bytes of IP header - 8 of UDP
# header). IPv6 allows 20 bytes more; one limit for both keeps replies
# predictable.
MAX_REPLY = 65507

# How much one read takes. Twisted reads 8192 bytes by default and silently
# drops the rest of a longer datagram; this is larger than any datagram.
MAX_DATAGRAM = 65535


class EchoReplyDatagramProtocol(DatagramProtocol):
    """
    Answer every datagram with C{prefix + datagram}, sent to its sender.

    @ivar prefix: the bytes put before each datagram in its reply.
    """

    # The service logs the port; "Starting protocol" would say it twice.
    noisy = False
    log = Logger()

    def __init__(self, prefix: bytes = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    @property
    def limit(self) -> int:
        """
        The largest datagram whose reply fits in one UDP datagram.
        """
        return max(0, MAX_REPLY - len(self.prefix))

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if len(datagram) > self.limit:
            reply = f"Error: message too long (limit {self.limit} bytes)\n".encode()
        else:
            reply = self.prefix + datagram
        assert self.transport is not None
        try:
            self.transport.write(reply, addr)
        except (OSError, MessageLengthError) as e:
            # The network's business, not ours (no route, a full buffer, an
            # ICMP error from an earlier reply): this reply is lost, like any
            # datagram may be.
            self.log.warn(
                "Cannot send a reply to {peer}: {error}",
                peer=f"{addr[0]}:{addr[1]}",
                error=str(e) or type(e).__name__,
            )


class UDPService(Service):
    """
    Listen for datagrams on one UDP port while running; stop when stopped.

    @ivar description: C{udp:PORT:interface=ADDRESS}, for messages.
    @ivar port: the listening port, once listening: its C{getHost()} gives
        the real address of port 0.
    """

    log = Logger()

    def __init__(
        self,
        portNumber: int,
        interface: str,
        protocol: EchoReplyDatagramProtocol,
        reactor: IReactorUDP,
    ) -> None:
        self.description = f"udp:{portNumber}:interface={interface}"
        self.protocol = protocol
        self.port: IListeningPort | None = None
        self._portNumber = portNumber
        self._interface = interface
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        # Bind here, before twistd sheds privileges, so low ports work.
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._listen()
        assert self.port is not None
        self.log.info(
            "Listening on {address} (UDP)", address=describeAddress(self.port.getHost())
        )

    def _listen(self) -> None:
        if self.port is not None:
            return
        try:
            self.port = self._reactor.listenUDP(
                self._portNumber, self.protocol, self._interface, MAX_DATAGRAM
            )
        except CannotListenError as e:
            # A user error (port in use, bad address): one line, exit status 1.
            raise SystemExit(
                f"Error: cannot listen on {self.description}: {e.socketError}"
            ) from None

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return None
        return maybeDeferred(cast(Callable[[], object], port.stopListening)).addCallback(
            lambda _: None
        )


def makeUDPService(
    port: int, interface: str, prefix: bytes, reactor: IReactorUDP | None = None
) -> UDPService:
    """
    A service that answers datagrams on UDP C{port} of C{interface} (an IPv4
    or IPv6 address; C{""} for every IPv4 address) with C{prefix + datagram}.

    @param reactor: the reactor to listen with; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = cast(IReactorUDP, globalReactor)
    return UDPService(port, interface, EchoReplyDatagramProtocol(prefix), reactor)
