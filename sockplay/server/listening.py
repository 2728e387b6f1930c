"""
The server's listeners: a service per stream endpoint (L{ListenerService}),
the endpoint strings it understands (L{makeEndpoint}), and the UDP
listeners, one datagram in, one reply out (L{UDPService} on Twisted's stock
L{internet.UDPServer}).

A listener that cannot start ends the program with one line naming it and
exit status 1 (L{ListenFailed}), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from cryptography import x509
from twisted.application import internet
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel
from twisted.python import log as legacyLog
from twisted.python.failure import Failure

from sockplay.server.address import describeAddress
from sockplay.server.proxy import ProxiedEndpoint
from sockplay.server.settings import DEFAULT_PREFIX
from sockplay.server.tls import ServerTLS, beneathTLS, secure

__all__ = [
    "DEFAULT_BACKLOG",
    "MAX_DATAGRAM",
    "MAX_REPLY",
    "EchoReplyDatagramProtocol",
    "ListenFailed",
    "ListenerService",
    "UDPService",
    "describeListener",
    "isTLS",
    "makeEndpoint",
    "makeUDPService",
    "quietly",
    "withBacklog",
]

_T = TypeVar("_T")

# Twisted's default listen backlog is 50: a burst of one-shot clients
# overflows it and connects then wait for SYN retransmits. The kernel caps
# this at net.core.somaxconn.
DEFAULT_BACKLOG = 1024

_BACKLOG_ENDPOINTS = ("tcp", "tcp6", "ssl", "unix")

# The largest UDP payload over IPv4 (65535 - 20 bytes of IP header - 8 of UDP
# header). IPv6 allows 20 bytes more; one limit for both keeps replies
# predictable.
MAX_REPLY = 65507

# How much one read takes. Twisted reads 8192 bytes by default and silently
# drops the rest of a longer datagram; this is larger than any datagram.
MAX_DATAGRAM = 65535


# Twisted's ports log "<Factory> starting on <port>" when they start, with
# no way to turn it off (a factory's noisy only covers "Starting factory");
# sockplay logs its own line per listener instead. An event logged in this
# context has no text, so a text log writes nothing for it, and debug level,
# for observers that filter by level.
_QUIET = {"log_format": "", "log_level": LogLevel.debug}


def quietly(start: Callable[..., _T], *args: Any) -> _T:
    """
    Call C{start(*args)}, a port's start, without the line that Twisted's
    port logs as it starts listening (see L{_QUIET}).
    """
    return cast(_T, legacyLog.callWithContext(_QUIET, start, *args))


class ListenFailed(SystemExit):
    """
    A listener could not start. Raised as a L{SystemExit} so that twistd and
    C{python -m sockplay.server} end with its one-line message and exit
    status 1 rather than a traceback.
    """


def makeEndpoint(
    reactor: IReactorCore, description: str, clientCAs: Sequence[x509.Certificate] = ()
) -> IStreamServerEndpoint:
    """
    The server endpoint for C{description}, with a raised backlog (see
    L{withBacklog}). C{haproxy:} endpoints use sockplay's PROXY wrapper,
    which lets the protocol see the original client from its first moment.
    C{ssl:} endpoints get sockplay's TLS context (L{secure}).

    @param clientCAs: the CAs whose client certificates C{ssl:} endpoints
        require (C{--tls-client-ca}); none to require none.
    """
    description = withBacklog(description)
    proxied = description.startswith("haproxy:")
    if proxied:
        description = description[len("haproxy:"):]
    endpoint = serverFromString(reactor, description)
    if not proxied:
        return secure(endpoint, clientCAs)
    if isinstance(endpoint, SSL4ServerEndpoint):
        # The header comes before TLS: TLS is the PROXY wrapper's to add.
        return ProxiedEndpoint(beneathTLS(endpoint), ServerTLS.of(endpoint, clientCAs))
    return ProxiedEndpoint(endpoint)


def isTLS(endpoint: IStreamServerEndpoint) -> bool:
    """
    Whether C{endpoint} wraps its connections in TLS (C{ssl:}, also behind
    C{haproxy:}): its connections cannot half-close, since TLS closes both
    directions at once.
    """
    while isinstance(endpoint, ProxiedEndpoint):
        if endpoint.tls is not None:
            return True
        endpoint = endpoint.wrapped
    return isinstance(endpoint, SSL4ServerEndpoint)


def describeListener(endpoint: IStreamServerEndpoint, address: IAddress | object) -> str:
    """
    A listener as the log names it: its kind, then its real address, such as
    C{tcp:127.0.0.1:12345}, C{ssl:127.0.0.1:12345},
    C{haproxy:tcp:127.0.0.1:12346} or C{unix:/run/sockplay.sock}.
    """
    proxied = isinstance(endpoint, ProxiedEndpoint)
    text = describeAddress(address)
    if isTLS(endpoint):
        kind, rest = text.split(":", 1)
        if kind in ("tcp", "tcp6"):
            text = f"ssl:{rest}"
    return f"haproxy:{text}" if proxied else text


def withBacklog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Add C{backlog=} to a TCP, TCP6, SSL or UNIX endpoint string (also inside
    C{haproxy:}) that does not set one.
    """
    inner = description[len("haproxy:"):] if description.startswith("haproxy:") else description
    kind = inner.split(":", 1)[0]
    if kind not in _BACKLOG_ENDPOINTS or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


class ListenerService(Service):
    """
    Listen on one endpoint while running; stop listening when stopped.

    Twisted's C{StreamServerEndpointService} logs a failure to listen as a
    traceback and carries on; a test endpoint that cannot listen should
    instead end at once, with one line.

    @ivar description: the endpoint string, for messages.
    @ivar port: the listening port, once listening.
    """

    log = Logger()

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        reactor: IReactorCore,
        purpose: str | None = None,
    ) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.purpose = purpose
        self.port: IListeningPort | None = None
        self._reactor = reactor
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        # Bind here, before twistd sheds privileges, so low ports work.
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._listen()
        if self.port is not None:
            # "Listening on" names the echo-reply listeners (tests and
            # scripts look for it); other services say what they serve.
            self.log.info(
                "Listening on {address} ({description})"
                if self.purpose is None
                else "Serving {purpose} on {address} ({description})",
                address=describeListener(self.endpoint, self.port.getHost()),
                description=self.description,
                purpose=self.purpose,
            )

    def _listen(self) -> None:
        if self._listening is not None:
            return
        failures: list[Failure] = []
        self._listening = quietly(self.endpoint.listen, self.factory)
        self._listening.addCallbacks(self._listened, failures.append)
        if failures:
            raise ListenFailed(
                f"Error: cannot listen on {self.description}{self._for()}: "
                f"{failures[0].getErrorMessage()}"
            )
        self._listening.addErrback(self._lateFailure)

    def _for(self) -> str:
        return "" if self.purpose is None else f" for {self.purpose}"

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def _lateFailure(self, failure: Failure) -> None:
        # Only endpoints that listen asynchronously get here.
        self.log.critical(
            "Error: cannot listen on {description}{purpose}: {error}",
            description=self.description,
            purpose=self._for(),
            error=failure.getErrorMessage(),
        )
        self._reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        self._listening = None
        if port is None:
            return None
        return maybeDeferred(cast(Callable[[], object], port.stopListening)).addCallback(
            lambda _: None
        )


class EchoReplyDatagramProtocol(DatagramProtocol):
    """
    The echo-reply server over UDP: answer every datagram with C{prefix +
    datagram}, sent to its sender.

    A datagram is a message: there is no framing, no connection and no
    lifecycle. A reply that would not fit in one UDP datagram is
    C{Error: message too long (limit N bytes)} and a newline instead, as in
    C{raw} framing.

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


class UDPService(internet.UDPServer):
    """
    Twisted's L{internet.UDPServer} for one echo-reply port, which also
    reports a port it cannot have in one line (L{ListenFailed}) and logs
    where it listens.

    @ivar description: C{udp:PORT:interface=ADDRESS}, for messages.
    @ivar protocol: the L{EchoReplyDatagramProtocol}.
    """

    log = Logger()

    def __init__(
        self,
        portNumber: int,
        interface: str,
        protocol: EchoReplyDatagramProtocol,
        reactor: IReactorUDP,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            portNumber, protocol, interface=interface, maxPacketSize=MAX_DATAGRAM, reactor=reactor
        )
        self.description = f"udp:{portNumber}:interface={interface}"
        self.protocol = protocol

    @contextmanager
    def _oneLineError(self) -> Iterator[None]:
        """
        Turn a port that cannot be had (in use, a bad address), a user
        error, into one line and exit status 1.
        """
        try:
            yield
        except CannotListenError as e:
            raise ListenFailed(
                f"Error: cannot listen on {self.description}: {e.socketError}"
            ) from None

    @property
    def port(self) -> Any:
        """
        The listening port while listening (its C{getHost()} gives the real
        address of port 0), else C{None}: the protocol's transport.
        """
        return self.protocol.transport

    def privilegedStartService(self) -> None:
        # Binds here, before twistd sheds privileges, so low ports work.
        with self._oneLineError():
            quietly(super().privilegedStartService)

    def startService(self) -> None:
        with self._oneLineError():
            quietly(super().startService)
        self.log.info("Listening on {address} (UDP)", address=describeAddress(self.port.getHost()))


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
