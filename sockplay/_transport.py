"""
What a transport can do, beyond L{ITransport}.
"""

from __future__ import annotations

from typing import Protocol, cast

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableDescriptor,
    INegotiated,
    IPushProducer,
    ISSLTransport,
    ITransport,
)

__all__ = ["StreamTransport", "asStream", "canHalfClose"]


def canHalfClose(transport: ITransport | None) -> bool:
    """
    Whether C{transport} can close its write side alone (a TCP or UNIX
    socket can; TLS cannot).

    Twisted's TLS wrapper copies the interfaces of the TCP transport under
    it, so it looks half-closeable; but half-closing the TCP connection under
    TLS skips the TLS close_notify and breaks the session. Hence the check
    for TLS first.
    """
    if transport is None:
        return False
    if INegotiated.providedBy(transport) or ISSLTransport.providedBy(transport):
        return False
    return IHalfCloseableDescriptor.providedBy(transport)


class StreamTransport(Protocol):
    """
    The parts of a TCP (or UNIX, or TLS) transport that the protocols use:
    L{ITCPTransport} plus the producer and consumer methods that Twisted's
    transports all have but its interfaces spread over several others.
    """

    disconnecting: bool

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def loseWriteConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeer(self) -> IAddress: ...
    def getHost(self) -> IAddress: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


def asStream(transport: object) -> StreamTransport:
    """
    C{transport}, typed as the L{StreamTransport} it is.
    """
    return cast(StreamTransport, transport)
