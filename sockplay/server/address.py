"""
Addresses as short, readable strings for logs and messages.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

__all__ = ["describeAddress", "hostOf"]


def describeAddress(address: IAddress | object, tls: bool = False) -> str:
    """
    Render C{address} the way an endpoint string names it: C{tcp:127.0.0.1:12345},
    C{tcp6:[::1]:12345}, C{unix:/run/sockplay.sock}.

    @param tls: the address is of a TLS listener or connection, named
        C{ssl:127.0.0.1:12345} (C{ssl:[::1]:12345}) as its endpoint is.
    """
    if isinstance(address, IPv4Address):
        kind = "ssl" if tls and address.type == "TCP" else address.type.lower()
        return f"{kind}:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        if tls and address.type == "TCP":
            kind = "ssl"
        else:
            kind = "tcp6" if address.type == "TCP" else address.type.lower() + "6"
        return f"{kind}:[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        text = name.decode("utf-8", "backslashreplace") if name else "(unnamed)"
        return f"unix:{text}"
    return str(address)


def hostOf(address: IAddress | object) -> str:
    """
    The host part of an address (an IP address), or the whole description
    where there is none (UNIX sockets).
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return describeAddress(address)
