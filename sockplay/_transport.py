"""
What a transport can do, beyond L{ITransport}.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    INegotiated,
    ISSLTransport,
    ITransport,
)

__all__ = ["canHalfClose"]


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
