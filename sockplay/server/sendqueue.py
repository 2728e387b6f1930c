"""
How much of a connection's output its client has not yet received: what
bounds the linger after the last reply by progress rather than by a fixed
time (L{sockplay.server.protocol.EchoReplyProtocol.checkDelivery}).

The count is Twisted's write buffer plus the kernel's send queue, whose
size Linux reports with the C{SIOCOUTQ} (C{TIOCOUTQ}) ioctl: the bytes
written to the socket that the peer has not acknowledged, sent or not. A
client that reads makes it shrink; one that stops reading leaves it as it
is, since its receive window stays shut.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios

from twisted.internet import abstract

from sockplay.server._twisted import writeBuffered

__all__ = ["socketSendQueue", "unsentBytes"]

# Linux's SIOCOUTQ, which the termios module names TIOCOUTQ (same number);
# None where the platform has no such ioctl.
_SIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None)

# Wrappers to look through for the socket transport (TLS with the PROXY
# protocol is two); sockplay makes no deeper stack.
_MAX_WRAPPERS = 4

_INT = struct.Struct("i")


def socketSendQueue(sock: socket.socket) -> int | None:
    """
    Bytes written to C{sock} that its peer has not acknowledged yet.

    @return: the count, or C{None} where the system cannot tell (no
        C{SIOCOUTQ}, a closed socket).
    """
    if _SIOCOUTQ is None:
        return None
    try:
        answer = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * _INT.size)
    except (OSError, ValueError):
        return None
    count: int = _INT.unpack(answer)[0]
    return count


def unsentBytes(transport: object) -> int | None:
    """
    Bytes written to C{transport} that its client has not yet received:
    those still in Twisted's write buffer and those in the kernel's send
    queue. A wrapper (TLS, the PROXY protocol) is looked through to the
    socket transport beneath it; TLS then counts its encrypted bytes.

    @param transport: a connection's transport.
    @return: the count, or C{None} where it cannot be told: no socket
        beneath (an in-memory transport), a system without C{SIOCOUTQ}, or
        a Twisted whose write buffer cannot be read.
    """
    for _ in range(_MAX_WRAPPERS):
        if isinstance(transport, abstract.FileDescriptor):
            break
        transport = getattr(transport, "transport", None)
    if not isinstance(transport, abstract.FileDescriptor):
        return None
    getHandle = getattr(transport, "getHandle", None)
    handle = getHandle() if getHandle is not None else None
    if not isinstance(handle, socket.socket):
        return None
    buffered = writeBuffered(transport)
    queued = socketSendQueue(handle)
    if buffered is None or queued is None:
        return None
    return buffered + queued
