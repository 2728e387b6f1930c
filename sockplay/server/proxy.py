"""
The PROXY protocol (HAProxy's), for C{--listen haproxy:...}.

Twisted's wrapper (L{twisted.protocols.haproxy}) connects the wrapped
protocol as soon as TCP connects, before the PROXY header has arrived, so
the protocol sees the load balancer's address as its peer; and it drops
half-closes. This wrapper connects the wrapped protocol only once the header
is parsed (so C{connectionMade} sees the original client), passes
half-closes through, and never connects a protocol for a connection that
sends no header (a load balancer's plain TCP health check).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from sockplay.server._twisted import (
    HAVE_PROXY_WRAPPER,
    HAProxyProtocolWrapper,
    HAProxyWrappingFactory,
    proxyInfoOf,
)

__all__ = ["ProxiedEndpoint", "ProxyHeaderWrapper", "ProxyWrappingFactory", "localAddress"]


class _Collector:
    """
    Stands in for the wrapped protocol while the header is parsed, keeping
    the bytes that follow the header.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)


@implementer(IHalfCloseableProtocol)
class ProxyHeaderWrapper(HAProxyProtocolWrapper):
    """
    Parse the PROXY header (v1 or v2), then connect the wrapped protocol.
    """

    _connected = False

    def makeConnection(self, transport: ITransport) -> None:
        # As ProtocolWrapper does, but the wrapped protocol is connected
        # only once the header is in.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def dataReceived(self, data: bytes) -> None:
        if self._connected:
            self.wrappedProtocol.dataReceived(data)
            return
        protocol, collector = self.wrappedProtocol, _Collector()
        self.wrappedProtocol = collector  # type: ignore[assignment]
        try:
            super().dataReceived(data)
        finally:
            self.wrappedProtocol = protocol
        if proxyInfoOf(self) is None or self._isDisconnecting():
            return
        self._connected = True
        protocol.makeConnection(cast(ITransport, self))
        for chunk in collector.chunks:
            if self._isDisconnecting():
                break
            protocol.dataReceived(chunk)

    def _isDisconnecting(self) -> bool:
        # The wrapper may have dropped a bad header, or the wrapped protocol
        # closed the connection while it was fed.
        return bool(getattr(self.transport, "disconnecting", False))

    def readConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if self._connected and halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.loseConnection()  # type: ignore[no-untyped-call]

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if self._connected and halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._connected:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
        else:
            self.factory.unregisterProtocol(self)


class ProxyWrappingFactory(HAProxyWrappingFactory):
    """
    Wraps each connection's protocol in a L{ProxyHeaderWrapper}.
    """

    protocol = ProxyHeaderWrapper  # type: ignore[assignment]
    # The listener logs its own line; "Starting factory <...>" would be noise.
    noisy = False


@implementer(IStreamServerEndpoint)
class ProxiedEndpoint:
    """
    A server endpoint whose connections start with a PROXY header.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        """
        @param endpoint: the endpoint whose connections carry the header.
        """
        self.wrapped = endpoint

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        if not HAVE_PROXY_WRAPPER:
            # A Twisted whose wrapper classes moved: its public endpoint
            # still parses the header, but connects the protocol at once.
            return cast(
                "Deferred[IListeningPort]", proxyEndpoint(self.wrapped).listen(protocolFactory)
            )
        factory: Any = ProxyWrappingFactory(protocolFactory)  # type: ignore[no-untyped-call]
        return self.wrapped.listen(factory)


def localAddress(transport: ITransport) -> IAddress:
    """
    The local address of the socket under C{transport}: through a PROXY
    wrapper, the real socket's rather than the one the header names.
    """
    if isinstance(transport, ProxyHeaderWrapper) and transport.transport is not None:
        return transport.transport.getHost()
    return transport.getHost()
