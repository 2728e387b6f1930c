"""
C{--info ENDPOINT}: a listener that tells each client what the server sees
of its connection, as one JSON object and a newline, then closes (its
write side first, as every sockplay connection does).

What it reports (L{describeConnection}; the schema is in
C{docs/protocol.md}): the socket's own peer and local addresses, the
listener, the host name and process, the PROXY header that arrived (its
version, command, addresses and TLVs, decoded where the specification
names them), the TLS session (version, cipher, server name, ALPN offers
and choice, client certificate), and the time.

An info connection is one of the server's connections like any other: it
is built by L{InfoFactory} but owned by the server's
L{EchoReplyFactory}, so the same limits, idle timeout, linger, drain,
connection log and metrics hold for it. A PROXY header or TLS handshake
that never completes ends with the idle timeout.
"""

from __future__ import annotations

import datetime
import json
import os
import struct
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, ITransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from sockplay.server.address import describeAddress
from sockplay.server.factory import EchoReplyFactory, OwnerOnBehalf
from sockplay.server.faultsettings import Faults
from sockplay.server.protocol import ConnectionState, EchoReplyProtocol
from sockplay.server.proxy import IHeaderAdmission, ProxyHeaderWrapper
from sockplay.server.proxyheader import TLV, InvalidProxyHeader, ProxyHeader, parseTLVs
from sockplay.server.tls import describeTLS

__all__ = ["InfoFactory", "InfoProtocol", "describeConnection", "describeTLV"]

# The TLV types of the PROXY protocol specification (section 2.2), by the
# names --info gives them.
TLV_NAMES = {
    0x01: "alpn",
    0x02: "authority",
    0x03: "crc32c",
    0x04: "noop",
    0x05: "unique_id",
    0x20: "ssl",
    0x30: "netns",
}
# The sub-TLVs of the SSL TLV.
SSL_TLV_NAMES = {
    0x21: "version",
    0x22: "cn",
    0x23: "cipher",
    0x24: "sig_alg",
    0x25: "key_alg",
    0x26: "group",
    0x27: "sig_scheme",
    0x28: "client_cert",
}
# Those whose value is text.
_TEXT_TLVS = {0x01, 0x02, 0x05, 0x30}
_TEXT_SSL_TLVS = {0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27}
# PP2_TYPE_SSL's fixed part: the client flags byte, the 32-bit verify result.
_SSL_FIXED = struct.Struct("!BI")
_CLIENT_FLAGS = {"ssl": 0x01, "cert_conn": 0x02, "cert_sess": 0x04}


def _text(value: bytes) -> str:
    """
    Bytes from the network as text: UTF-8, any other byte escaped (JSON
    then escapes whatever a terminal would act on).
    """
    return value.decode("utf-8", "backslashreplace")


def _sslValue(value: bytes) -> dict[str, Any]:
    """
    The SSL TLV decoded: what the load balancer knows of the client's TLS
    connection to it.
    """
    if len(value) < _SSL_FIXED.size:
        return {"error": f"shorter than its {_SSL_FIXED.size}-byte fixed part"}
    client, verify = _SSL_FIXED.unpack_from(value)
    decoded: dict[str, Any] = {
        "client": {name: bool(client & bit) for name, bit in _CLIENT_FLAGS.items()},
        "verify": verify,
    }
    try:
        subs = parseTLVs(value[_SSL_FIXED.size :], "SSL sub-TLV")
    except InvalidProxyHeader as e:
        decoded["error"] = str(e)
        return decoded
    decoded["tlvs"] = [_describeSSLSub(sub) for sub in subs]
    return decoded


def _described(tlv: TLV, name: str | None, value: Any) -> dict[str, Any]:
    """
    A TLV or sub-TLV as C{--info} reports it: its type, its name (C{None}
    where the specification gives none), its decoded value, and its exact
    bytes in hex.
    """
    return {"type": tlv.type, "name": name, "value": value, "hex": tlv.value.hex()}


def describeTLV(tlv: TLV) -> dict[str, Any]:
    """
    One TLV as C{--info} reports it (L{_described}), its value decoded
    where its type says how: text, the CRC32C as hex, the SSL TLV's fields
    and sub-TLVs; C{None} otherwise.
    """
    if tlv.type in _TEXT_TLVS:
        value: Any = _text(tlv.value)
    elif tlv.type == 0x03 and len(tlv.value) == 4:
        value = f"0x{tlv.value.hex()}"
    elif tlv.type == 0x20:
        value = _sslValue(tlv.value)
    else:
        value = None
    return _described(tlv, TLV_NAMES.get(tlv.type), value)


def _describeSSLSub(sub: TLV) -> dict[str, Any]:
    """
    A sub-TLV of the SSL TLV, as L{describeTLV} reports a TLV: text for the
    types that are (version, CN, cipher, algorithms), else C{None}.
    """
    value = _text(sub.value) if sub.type in _TEXT_SSL_TLVS else None
    return _described(sub, SSL_TLV_NAMES.get(sub.type), value)


def _address(address: object) -> dict[str, Any] | None:
    """
    An address as C{--info} reports it.
    """
    if address is None:
        return None
    if isinstance(address, (IPv4Address, IPv6Address)):
        family = "ipv4" if isinstance(address, IPv4Address) else "ipv6"
        return {"family": family, "address": address.host, "port": address.port}
    if isinstance(address, UNIXAddress):
        name = address.name
        path = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
        return {"family": "unix", "path": path}
    return {"family": "other", "text": describeAddress(address)}


def _proxy(header: ProxyHeader) -> dict[str, Any]:
    """
    A PROXY header as C{--info} reports it.
    """
    return {
        "version": header.version,
        "command": header.command,
        "protocol": header.protocol,
        "source": _address(header.source),
        "destination": _address(header.destination),
        "tlvs": [describeTLV(tlv) for tlv in header.tlvs],
    }


def _timestamp(seconds: float) -> str:
    """
    A time in UTC, ISO 8601 to the millisecond.
    """
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describeConnection(
    transport: ITransport, hostname: str, pid: int, now: float
) -> dict[str, Any]:
    """
    Everything C{--info} reports of the connection under C{transport}.

    @param transport: the protocol's transport: the socket's, or a PROXY
        wrapper or TLS layer over it (or both).
    @param hostname: this host's name.
    @param pid: this process's ID.
    @param now: the time, in seconds since the epoch.
    """
    wrapper: ProxyHeaderWrapper | None = None
    tls: TLSMemoryBIOProtocol | None = None
    socket: Any = transport
    # Down through the layers to the socket: the PROXY wrapper and the TLS
    # protocol each hold the one beneath as their transport.
    while isinstance(socket, (ProxyHeaderWrapper, TLSMemoryBIOProtocol)):
        if isinstance(socket, ProxyHeaderWrapper):
            wrapper = socket
        else:
            tls = socket
        socket = socket.transport
    local = socket.getHost()
    listener = describeAddress(local, tls is not None)
    if wrapper is not None:
        listener = f"haproxy:{listener}"
    header = None if wrapper is None else wrapper.header
    return {
        "peer": _address(socket.getPeer()),
        "local": _address(local),
        "listener": listener,
        "hostname": hostname,
        "pid": pid,
        "proxy": None if header is None else _proxy(header),
        "tls": None if tls is None else describeTLS(tls.getHandle()),
        "time": _timestamp(now),
    }


class InfoProtocol(EchoReplyProtocol):
    """
    One C{--info} connection: once admitted (and, over TLS, once the
    handshake is done), write L{describeConnection}'s object as one line of
    JSON and close, write side first. Whatever the client sends is
    discarded (and counted).
    """

    factory: InfoFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.state is ConnectionState.READING and not self._handshaking:
            self._report()

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        if self.state is ConnectionState.READING:
            self._report()

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)

    def _report(self) -> None:
        """
        Write the connection's description and end the conversation.
        """
        assert self.transport is not None
        factory = self.factory
        description = describeConnection(
            self.transport, factory.hostname, os.getpid(), factory.clock.seconds()
        )
        self._send(json.dumps(description).encode("ascii") + b"\n")
        self._stop("ok")


@implementer(IHeaderAdmission)
class InfoFactory(OwnerOnBehalf):
    """
    The protocol factory of the C{--info} listeners: builds L{InfoProtocol}s
    and owns them on behalf of the server's L{EchoReplyFactory}, which
    counts them against its limits, sweeps, drains and logs them as its
    own. Only what an info connection does differently is its own: no
    banner, no faults, no framing of its output (only an error, over a
    limit, is ever framed: raw, a line of text).
    """

    def __init__(self, server: EchoReplyFactory) -> None:
        super().__init__(server, framing="raw", keepOpen=False, banner=None, faults=Faults())
        self.hostname = server.hostname.decode("utf-8", "backslashreplace")

    def buildProtocol(self, addr: IAddress | None) -> InfoProtocol:
        protocol = InfoProtocol()
        protocol.factory = self
        return protocol

    # IHeaderAdmission, for haproxy: info listeners.

    @property
    def headerTimeout(self) -> float:
        return self.server.headerTimeout

    def admitAwaiting(self, connection: ProxyHeaderWrapper) -> bool:
        return self.server.admitAwaiting(connection)

    def awaitingEnded(self, connection: ProxyHeaderWrapper, handedOver: bool, detail: str) -> None:
        self.server.awaitingEnded(connection, handedOver, detail)
