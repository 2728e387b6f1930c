"""
Every reach under Twisted's public API, in one module.

Each private name used here is listed in L{PRIVATE_NAMES}, which a test
checks against the installed Twisted, so that an upgrade that renames one
fails loudly, naming it. Each use also falls back to the public API where
the name is missing: an upgrade then costs speed, never correctness.

  - The hot path: sending on a plain TCP or UNIX socket at once when its
    write buffer is empty (L{sendNow}) and shutting its write side at once
    (L{shutDownWriteNow}), instead of waiting a reactor turn.
  - How many bytes a socket transport still holds in its write buffer
    (L{writeBuffered}), for the linger's progress check.
  - twistd's exit signal, forgotten after a graceful drain
    (L{forgetExitSignal}); Twisted has no public way to say it.

(The PROXY protocol needs no reach any more: sockplay reads the header
itself, L{sockplay.server.proxyheader}, on Twisted's public
L{twisted.protocols.policies.ProtocolWrapper}.)

It also holds the typing help for transports (L{StreamTransport},
L{asStream}) and L{canHalfClose}, which use public names only.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableDescriptor,
    INegotiated,
    IPushProducer,
    ISSLTransport,
    ITransport,
)

from sockplay.server.reactor import SockplayServer

__all__ = [
    "PRIVATE_NAMES",
    "StreamTransport",
    "asStream",
    "canHalfClose",
    "forgetExitSignal",
    "isPlainSocket",
    "sendNow",
    "shutDownWriteNow",
    "writeBuffered",
]

# The private names this module reaches for, each with where it lives. The
# test suite checks every one against the installed Twisted.
PRIVATE_NAMES = (
    "twisted.internet.abstract.FileDescriptor._tempDataBuffer",
    "twisted.internet.abstract.FileDescriptor._tempDataLen",
    "twisted.internet.abstract.FileDescriptor._writeDisconnected",
    "twisted.internet.tcp.Connection._closeWriteConnection",
    "twisted.internet.base.ReactorBase._exitSignal",
)


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


# The hot path. Used only on transports that isPlainSocket accepts:
# Twisted's own TCP and UNIX server connections.


def _plainSocketClasses() -> tuple[type, ...]:
    kinds: list[type] = [tcp.Server, SockplayServer]
    try:
        from twisted.internet import unix
    except ImportError:  # no UNIX sockets on this platform
        pass
    else:
        kinds.append(unix.Server)
    return tuple(kinds)


def _hasFastPath() -> bool:
    """
    Whether the installed Twisted still has the names the fast path reads;
    without them every write goes through the public C{write}.
    """
    probe = abstract.FileDescriptor.__new__(abstract.FileDescriptor)
    try:
        abstract.FileDescriptor.__init__(probe, reactor=cast(Any, object()))
    except Exception:
        return False
    return (
        hasattr(probe, "_tempDataBuffer")
        and hasattr(probe, "dataBuffer")
        and hasattr(abstract.FileDescriptor, "_writeDisconnected")
        and hasattr(tcp.Connection, "_closeWriteConnection")
    )


_PLAIN_SOCKETS = _plainSocketClasses() if _hasFastPath() else ()


def isPlainSocket(transport: object) -> bool:
    """
    Whether C{transport} is a plain TCP or UNIX socket connection (not TLS,
    not a wrapper) on which L{sendNow} and L{shutDownWriteNow} save a
    reactor turn. Always C{False} if the installed Twisted lacks the names
    they read.
    """
    return type(transport) in _PLAIN_SOCKETS and not getattr(transport, "TLS", False)


def sendNow(transport: ITransport, data: bytes) -> bytes:
    """
    Send C{data} on the socket at once if nothing is queued ahead of it.

    Twisted's C{write} only buffers: it registers the socket for
    writability and sends on the next reactor turn, which for a small reply
    costs two epoll_ctl calls and a loop iteration, the bulk of a request's
    cost. Sending right away when the buffer is empty keeps the byte order.

    @return: what the socket did not take, for C{transport.write} (all of
        it if the socket cannot be written to now, or if Twisted's buffer
        is not where this module expects it).
    """
    plain: Any = transport
    try:
        if plain.dataBuffer or plain._tempDataBuffer:
            return data
        sent = plain.socket.send(data)
    except (OSError, AttributeError):
        # Would block, an error that Twisted meets on its own write and
        # reports, or a Twisted whose buffer has moved: write() handles it.
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
    try:
        if plain.dataBuffer or plain._tempDataBuffer:
            return False
        closeWrite = plain._closeWriteConnection
    except AttributeError:
        return False
    plain._writeDisconnected = True
    closeWrite()
    return True


def writeBuffered(transport: abstract.FileDescriptor) -> int | None:
    """
    How many bytes C{transport} (a socket transport: Twisted's TCP or UNIX
    connection) holds in its write buffer, not yet handed to the kernel.

    Twisted keeps two buffers: C{dataBuffer}, partly sent up to C{offset},
    and a list of later writes whose length is C{_tempDataLen}. No public
    API says how full they are.

    @return: the byte count, or C{None} if Twisted's buffer is not where
        this module expects it (the caller then cannot tell progress, and
        keeps a fixed bound).
    """
    plain: Any = transport
    try:
        return len(plain.dataBuffer) - int(plain.offset) + int(plain._tempDataLen)
    except (AttributeError, TypeError):
        return None


def forgetExitSignal(reactor: object) -> None:
    """
    Make twistd exit with status 0 after the signal that stopped it.

    twistd records the signal that stopped the reactor in the reactor's
    C{_exitSignal} and, once the reactor has stopped, kills itself with that
    signal. There is no public way to say that a signal ended the program
    as designed. If a future Twisted drops the attribute, the exit status
    is the signal again (a cosmetic loss).
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]

