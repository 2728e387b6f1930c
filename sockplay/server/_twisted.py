"""
What a transport can do, beyond L{ITransport}.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableDescriptor,
    INegotiated,
    IPushProducer,
    ISSLTransport,
    ITransport,
)

__all__ = [
    "StreamTransport",
    "asStream",
    "canHalfClose",
    "isPlainSocket",
    "sendNow",
    "shutDownWriteNow",
]


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


# Everything below reaches under Twisted's TCP transport, for the hot path,
# and is used only on transports that isPlainSocket accepts: Twisted's own
# TCP and UNIX server connections, whose attributes it reads.


def _plainSocketClasses() -> tuple[type, ...]:
    from twisted.internet import tcp

    kinds: list[type] = [tcp.Server]
    try:
        from twisted.internet import unix
    except ImportError:  # no UNIX sockets on this platform
        pass
    else:
        kinds.append(unix.Server)
    return tuple(kinds)


_PLAIN_SOCKETS = _plainSocketClasses()


def isPlainSocket(transport: object) -> bool:
    """
    Whether C{transport} is a plain TCP or UNIX socket connection (not TLS,
    not a wrapper), which L{sendNow} and L{shutDownWriteNow} may use.
    """
    return type(transport) in _PLAIN_SOCKETS and not getattr(transport, "TLS", False)


def sendNow(transport: ITransport, data: bytes) -> bytes:
    """
    Send C{data} on the socket at once if nothing is queued ahead of it.

    Twisted's C{write} only buffers: it registers the socket for
    writability and sends on the next reactor turn, which for a small reply
    costs two epoll_ctl calls and a loop iteration, the bulk of a request's
    cost. Sending right away when the buffer is empty keeps the byte order.

    @return: what the socket did not take, for C{transport.write}.
    """
    plain: Any = transport
    if plain.dataBuffer or plain._tempDataBuffer:
        return data
    try:
        sent = plain.socket.send(data)
    except OSError:
        # Would block, or an error that Twisted meets on its own write and
        # reports.
        return data
    return data[sent:]


def shutDownWriteNow(transport: ITransport) -> bool:
    """
    Shut the write side of C{transport} now, if nothing is left to write, as
    Twisted would on its next turn after C{loseWriteConnection} (which costs
    two epoll_ctl calls and that turn).

    @return: whether it did; if not, call C{loseWriteConnection}.
    """
    plain: Any = transport
    if plain.dataBuffer or plain._tempDataBuffer:
        return False
    plain._writeDisconnected = True
    plain._closeWriteConnection()
    return True
