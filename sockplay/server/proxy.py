"""
The PROXY protocol (HAProxy's), for C{--listen haproxy:...}.

L{ProxyHeaderWrapper} reads the header (L{sockplay.server.proxyheader},
strictly) and only then connects the wrapped protocol, so that its
C{connectionMade} sees the original client; it passes half-closes through.
Twisted's own wrapper (L{twisted.protocols.haproxy}) connects the protocol
before the header, drops half-closes, and trusts the header's contents.

Over TLS (C{haproxy:ssl:}), the header comes first, in the clear, and TLS
after it, as a load balancer sends them (HAProxy's C{ssl send-proxy-v2}):
the wrapper reads the header, then hands the bytes to Twisted's TLS
protocol, which wraps the server's.

A connection is under the server's limits from the moment it is accepted,
not only once its header is in: while the header is awaited it counts
against C{--max-connections} and C{--max-per-peer} (under the socket's own
peer, the load balancer, until a header names another), and the idle
timeout ends it. The wrapped factory provides this by L{IHeaderAdmission};
a factory that does not gets the header parsed, without limits.
"""

from __future__ import annotations

import enum
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IOpenSSLContextFactory,
    IProtocolFactory,
    ISSLTransport,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, directlyProvides, implementer, providedBy

from sockplay.server.proxyheader import HeaderParser, InvalidProxyHeader, ProxyHeader

__all__ = [
    "HeaderState",
    "IHeaderAdmission",
    "ProxiedEndpoint",
    "ProxyHeaderWrapper",
    "ProxyWrappingFactory",
    "acceptedAt",
    "headerOf",
    "localAddress",
]


class IHeaderAdmission(Interface):
    """
    A factory whose limits hold for a connection from its accept, while its
    PROXY header is still awaited.
    """

    clock = Attribute("The IReactorTime that times the wait for the header.")
    headerTimeout = Attribute(
        "Seconds a connection may take to complete its header; 0 for no limit."
    )
    needsLocalAddress = Attribute(
        "Whether a connection must learn its local address (for the connection log)."
    )

    def intern(address: IAddress) -> IAddress:
        """
        One shared object per distinct local address.
        """

    def admitAwaiting(connection: ProxyHeaderWrapper) -> bool:
        """
        Count C{connection}, which awaits its header, against the limits,
        under its socket's peer.

        @return: whether it is within them; if not, it is not counted, and
            the wrapped protocol is connected at once to refuse it as it
            refuses any connection over a limit.
        """

    def awaitingEnded(connection: ProxyHeaderWrapper, handedOver: bool, detail: str) -> None:
        """
        C{connection} awaits its header no more: stop counting it.

        @param handedOver: its header is in and its wrapped protocol is
            about to be connected (and counted); if C{False}, the connection
            ended before that, and is logged with its C{outcome}.
        @param detail: why, where the outcome alone does not say (the rule
            a refused header breaks), or C{""}.
        """


class HeaderState(enum.Enum):
    """
    Where a L{ProxyHeaderWrapper} is.

    @cvar AWAITING: reading the header; limits and the timeout apply.
    @cvar CONNECTED: the wrapped protocol is connected (header in, or
        refused over a limit at accept); bytes pass through.
    @cvar ENDED: the wrapper ended the connection itself (a bad header, the
        timeout, a drain); whatever still arrives is discarded.
    """

    AWAITING = "awaiting"
    CONNECTED = "connected"
    ENDED = "ended"


_CONNECTED = HeaderState.CONNECTED

# The log's word on a connection that ended while its header was awaited.
_INCOMPLETE = "PROXY header incomplete"


@implementer(IHalfCloseableProtocol)
class ProxyHeaderWrapper(ProtocolWrapper):
    """
    Reads the PROXY header (v1 or v2), then connects the wrapped protocol.

    Until then it stands for the connection in the factory's accounting and
    connection log, with the attributes the log reads.

    @ivar header: the header, once read.
    @ivar state: the L{HeaderState}.
    @ivar peerAddress: the socket's peer (the load balancer).
    @ivar hostAddress: the socket's local address, where the factory needs it.
    @ivar overTLS: whether the socket is a TLS connection.
    @ivar bytesIn: bytes received while the header was awaited.
    @ivar startedAt: when the connection was accepted.
    @ivar outcome: why the wrapper ended the connection, if it did.
    """

    messages = 0
    bytesOut = 0

    def __init__(
        self, factory: WrappingFactory[ProxyHeaderWrapper], wrappedProtocol: Any
    ) -> None:
        super().__init__(factory, wrappedProtocol)
        self.header: ProxyHeader | None = None
        self.state = HeaderState.AWAITING
        self.peerAddress: IAddress | None = None
        self.hostAddress: IAddress | None = None
        self.overTLS = False
        self.bytesIn = 0
        self.startedAt = 0.0
        self.outcome: str | None = None
        self._detail = ""
        self._parser = HeaderParser()
        self._timer: IDelayedCall | None = None
        wrapped = factory.wrappedFactory
        if isinstance(wrapped, TLSMemoryBIOFactory):
            # (haproxy:ssl:) The server's factory is beneath TLS.
            wrapped = wrapped.wrappedFactory
        self._admission: IHeaderAdmission | None = IHeaderAdmission(wrapped, None)

    def makeConnection(self, transport: ITransport) -> None:
        # As ProtocolWrapper does, but the wrapped protocol is connected
        # only once the header is in.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        admission = self._admission
        if admission is None:
            return
        self.peerAddress = transport.getPeer()
        self.startedAt = admission.clock.seconds()
        if admission.needsLocalAddress:
            self.hostAddress = admission.intern(transport.getHost())
            self.overTLS = ISSLTransport.providedBy(transport) or self.factory.overTLS
        if not admission.admitAwaiting(self):
            # Over a limit already: the wrapped protocol refuses it, with
            # its error reply and log line, under the socket's peer.
            self.state = _CONNECTED
            self.wrappedProtocol.makeConnection(cast(ITransport, self))
            return
        if admission.headerTimeout > 0:
            self._timer = admission.clock.callLater(admission.headerTimeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self.state is _CONNECTED:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.state is HeaderState.ENDED:
            return
        self.bytesIn += len(data)
        try:
            header = self._parser.feed(data)
        except InvalidProxyHeader as e:
            self._end("bad-header", str(e))
            return
        if header is not None:
            self.header = header
            rest, self._parser.rest = self._parser.rest, b""
            self._connect(rest)

    def _connect(self, rest: bytes) -> None:
        """
        AWAITING to CONNECTED: hand the connection to the wrapped protocol,
        with the bytes that followed the header.
        """
        self._cancelTimer()
        self.state = _CONNECTED
        if self._admission is not None:
            self._admission.awaitingEnded(self, True, "")
        self.wrappedProtocol.makeConnection(cast(ITransport, self))
        if rest and not self._isDisconnecting():
            self.wrappedProtocol.dataReceived(rest)

    def _timedOut(self) -> None:
        self._timer = None
        self._end("idle-timeout", _INCOMPLETE)

    def _end(self, outcome: str, detail: str = "") -> None:
        """
        AWAITING to ENDED: close the connection; there is no framing to
        answer in before the header, so nothing is sent.
        """
        self._cancelTimer()
        self.state = HeaderState.ENDED
        self.outcome = outcome
        self._detail = detail
        self.loseConnection()  # type: ignore[no-untyped-call]

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _isDisconnecting(self) -> bool:
        # The wrapped protocol may have closed the connection while it was
        # connected (refused it over a limit).
        return bool(getattr(self.transport, "disconnecting", False))

    # What the drain and the factory's accounting ask of a connection that
    # awaits its header.

    def shutdown(self) -> None:
        """
        The server is draining: a connection still awaiting its header is
        owed nothing, so it closes at once.
        """
        if self.state is HeaderState.AWAITING:
            self._end("shutdown", _INCOMPLETE)

    # The address the header names, else the socket's.

    def getPeer(self) -> IAddress:
        if self.header is not None and self.header.source is not None:
            return self.header.source
        return cast(ITransport, self.transport).getPeer()

    def getHost(self) -> IAddress:
        if self.header is not None and self.header.destination is not None:
            return self.header.destination
        return cast(ITransport, self.transport).getHost()

    # Half-closes pass through once the wrapped protocol is connected.

    def readConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if self.state is _CONNECTED and halfCloseable is not None:
            halfCloseable.readConnectionLost()
        elif self.state is HeaderState.AWAITING:
            if self.bytesIn:
                self._end("no-message", _INCOMPLETE)
            else:
                self._end("probe")
        else:
            self.loseConnection()  # type: ignore[no-untyped-call]

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if self.state is _CONNECTED and halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.state is _CONNECTED:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
            return
        self._cancelTimer()
        self.factory.unregisterProtocol(self)
        if self.state is HeaderState.AWAITING:
            # The client went away before its header was complete.
            if not self.bytesIn:
                self.outcome = "probe"
            else:
                self.outcome = "no-message" if reason.check(ConnectionDone) else "reset"
                self._detail = _INCOMPLETE
        self.state = HeaderState.ENDED
        if self._admission is not None:
            self._admission.awaitingEnded(self, False, self._detail)


class ProxyWrappingFactory(WrappingFactory[ProxyHeaderWrapper]):
    """
    Wraps each connection's protocol in a L{ProxyHeaderWrapper}.

    @ivar overTLS: whether TLS follows the header (C{haproxy:ssl:}).
    """

    protocol = ProxyHeaderWrapper
    # The listener logs its own line; "Starting factory <...>" would be noise.
    noisy = False
    overTLS = False


@implementer(IStreamServerEndpoint)
class ProxiedEndpoint:
    """
    A server endpoint whose connections start with a PROXY header.
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, tls: IOpenSSLContextFactory | None = None
    ) -> None:
        """
        @param endpoint: the endpoint whose connections carry the header.
        @param tls: the TLS context of the connections, where TLS follows
            the header (C{haproxy:ssl:}); C{None} for none.
        """
        self.wrapped = endpoint
        self.tls = tls

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        if self.tls is not None:
            tlsFactory = TLSMemoryBIOFactory(self.tls, False, protocolFactory)
            tlsFactory.noisy = False
            protocolFactory = tlsFactory
        factory: Any = ProxyWrappingFactory(protocolFactory)  # type: ignore[no-untyped-call]
        factory.overTLS = self.tls is not None
        return self.wrapped.listen(factory)


def headerOf(transport: ITransport) -> ProxyHeaderWrapper | None:
    """
    The PROXY wrapper under a protocol's C{transport}, if any: the transport
    itself, or the one beneath TLS (C{haproxy:ssl:}).
    """
    beneath = transport.transport if isinstance(transport, TLSMemoryBIOProtocol) else transport
    return beneath if isinstance(beneath, ProxyHeaderWrapper) else None


def acceptedAt(transport: ITransport, now: float) -> float:
    """
    When the connection under C{transport} was accepted: through a PROXY
    wrapper, when the socket was, so that the idle timeout holds the header
    and the first message together (and the logged duration counts both);
    otherwise C{now}.
    """
    wrapper = headerOf(transport)
    if wrapper is not None and wrapper.startedAt:
        return wrapper.startedAt
    return now


def localAddress(transport: ITransport) -> IAddress:
    """
    The local address of the socket under C{transport}: through a PROXY
    wrapper, the real socket's rather than the one the header names.
    """
    wrapper = headerOf(transport)
    if wrapper is not None:
        if wrapper.hostAddress is not None:
            return wrapper.hostAddress
        if wrapper.transport is not None:
            return wrapper.transport.getHost()
    return transport.getHost()
