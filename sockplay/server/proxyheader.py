"""
The PROXY protocol header (HAProxy's, versions 1 and 2), read strictly: no
I/O, bytes in, addresses (and TLVs) out.

A load balancer puts the header in front of a connection's bytes to say
whom it relays. Everything in it comes from the network, so everything is
checked as the specification (haproxy.org, C{proxy-protocol.txt}) says
before any of it becomes an address: version 1's addresses are dotted-quad
IPv4 or IPv6 text, its ports decimal 0..65535 without leading zeros, its
line at most 107 bytes; version 2's signature, version, command, address
family and lengths. A header that breaks a rule is refused with a reason
that names the rule, never the bytes, so that a reason can go into a log.

Addresses come out in one canonical text form, whichever version carried
them: IPv4 dotted-quad, IPv6 as a C{tcp6:} listener reports its own peers
(RFC 5952, the form of C{inet_ntop}), so that C{{peer}}, the per-peer limit
and the logs name a client the same way through v1, v2 or no proxy at all.

Twisted's own parsers (C{twisted.protocols.haproxy}) trust their input (a
non-numeric port raises C{ValueError}, any text passes as an address, ports
are not bounded, C{PROXY UNKNOWN} alone is refused, v2 IPv6 addresses come
out uncompressed) and need the first read to hold 8 or 16 bytes; hence this
module.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address

__all__ = [
    "TLV",
    "V1_MAX_LENGTH",
    "V1_SIGNATURE",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "HeaderParser",
    "InvalidProxyHeader",
    "ProxyHeader",
    "parseTLVs",
]

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

# The longest version 1 line, CRLF included, that the specification allows
# (an IPv6 TCP6 line at its longest).
V1_MAX_LENGTH = 107

# The longest version 2 address block (with its TLVs) accepted: the 16-bit
# length field allows 64 KB, but a UNIX address pair takes 216 bytes and
# the TLVs a load balancer adds (ALPN, authority, unique ID, TLS details)
# a few hundred more; a longer block only holds memory while it trickles in.
V2_MAX_LENGTH = 4096

# Version 2: the fixed part (signature, version and command, family and
# protocol, length), and the fields of its 13th and 14th bytes.
_V2_FIXED = 16
_V2_VERSION = 0x20
_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_V2_UNSPEC = 0x00
_V2_TCP4 = 0x11
_V2_TCP6 = 0x21
# Each family and protocol the specification defines, and the length of its
# addresses: UNSPEC, TCP and UDP over IPv4, over IPv6, and UNIX stream and
# datagram. Any other value must be refused.
_V2_ADDRESS_LENGTHS = {
    _V2_UNSPEC: 0,
    _V2_TCP4: 12,
    0x12: 12,
    _V2_TCP6: 36,
    0x22: 36,
    0x31: 216,
    0x32: 216,
}
# Their names, as C{--info} reports them.
_V2_PROTOCOLS = {
    _V2_UNSPEC: "UNSPEC",
    _V2_TCP4: "TCP4",
    0x12: "UDP4",
    _V2_TCP6: "TCP6",
    0x22: "UDP6",
    0x31: "UNIX_STREAM",
    0x32: "UNIX_DGRAM",
}
# A TLV's type byte and 16-bit length.
_TLV_HEAD = 3

# Version 1 fields, checked byte by byte before any is decoded.
_V1_IPV4 = re.compile(rb"[0-9.]{7,15}")
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_UNKNOWN = b"UNKNOWN"
_MAX_PORT = 65535


class InvalidProxyHeader(ValueError):
    """
    The bytes are not a valid PROXY header; the message says which rule
    they break, and never quotes them.
    """


@dataclass(frozen=True)
class TLV:
    """
    One type-length-value record of a version 2 header: what a load
    balancer adds about the connection (the ALPN protocol, the TLS server
    name, a unique ID, TLS details...). Its meaning is for
    L{sockplay.server.info} to decode; here it is only framed.

    @ivar type: the type byte (C{PP2_TYPE_*} in the specification).
    @ivar value: the value's bytes, as they came.
    """

    type: int
    value: bytes


@dataclass(frozen=True)
class ProxyHeader:
    """
    What a PROXY header says.

    @ivar source: the client the load balancer relays, or C{None} where the
        header names none (v1 C{UNKNOWN}, the v2 C{LOCAL} command, or an
        address family other than TCP over IPv4 or IPv6): the connection's
        own addresses then stand.
    @ivar destination: the address the client connected to, or C{None}
        as for C{source}.
    @ivar version: 1 or 2.
    @ivar command: C{"PROXY"}, or C{"LOCAL"} (version 2: the load
        balancer's own connection, such as a health check).
    @ivar protocol: the transport protocol and address family the header
        names: C{"TCP4"}, C{"TCP6"} or C{"UNKNOWN"} (version 1); C{"TCP4"},
        C{"UDP4"}, C{"TCP6"}, C{"UDP6"}, C{"UNIX_STREAM"},
        C{"UNIX_DGRAM"} or C{"UNSPEC"} (version 2).
    @ivar tlvs: the version 2 TLVs that follow the addresses, in order.
    """

    source: IPv4Address | IPv6Address | None = None
    destination: IPv4Address | IPv6Address | None = None
    version: int = 1
    command: str = "PROXY"
    protocol: str = "UNKNOWN"
    tlvs: tuple[TLV, ...] = ()


class HeaderParser:
    """
    Reads one PROXY header, v1 or v2, from bytes that arrive in pieces of
    any size.

    L{feed} returns C{None} while the header may still be completed, the
    L{ProxyHeader} once it is, and raises L{InvalidProxyHeader} as soon as
    the bytes cannot start or be a valid header: a first byte that starts
    neither signature is refused at once, not after a timeout.

    @ivar rest: once the header is read, the bytes that followed it (the
        client's own).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        """
        Take the next bytes of the connection.

        @return: the header once it is complete, else C{None}.
        @raise InvalidProxyHeader: if the bytes so far cannot be the start
            of a valid header, or are a complete invalid one.
        """
        buffer = self._buffer + data
        if buffer[:1] == V1_SIGNATURE[:1]:
            header = self._feedV1(buffer)
        else:
            header = self._feedV2(buffer)
        if header is None:
            self._buffer = buffer
        else:
            self._buffer = b""
        return header

    def _feedV1(self, buffer: bytes) -> ProxyHeader | None:
        if not buffer.startswith(V1_SIGNATURE[: len(buffer)]):
            raise InvalidProxyHeader("not a PROXY header")
        end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise InvalidProxyHeader(f"v1 line longer than {V1_MAX_LENGTH} bytes")
            if b"\n" in buffer:
                raise InvalidProxyHeader("v1 line ends without CRLF")
            return None
        header = parseV1(buffer[len(V1_SIGNATURE) : end])
        self.rest = buffer[end + 2 :]
        return header

    def _feedV2(self, buffer: bytes) -> ProxyHeader | None:
        if not V2_SIGNATURE.startswith(buffer[: len(V2_SIGNATURE)]):
            raise InvalidProxyHeader("not a PROXY header")
        if len(buffer) < _V2_FIXED:
            return None
        command, family, length = _checkV2Fixed(buffer)
        end = _V2_FIXED + length
        if len(buffer) < end:
            return None
        self.rest = buffer[end:]
        return _v2Addresses(command, family, buffer[_V2_FIXED:end])


def parseV1(line: bytes) -> ProxyHeader:
    """
    Read a version 1 header: the line after C{PROXY } and before its CRLF.

    @raise InvalidProxyHeader: if it is not C{UNKNOWN} (followed by
        anything) nor C{TCP4} or C{TCP6} with two valid addresses of that
        family and two valid ports, each field one space apart.
    """
    if line == _V1_UNKNOWN or line.startswith(_V1_UNKNOWN + b" "):
        # The specification: the receiver ignores the rest of the line and
        # uses the connection's own addresses.
        return ProxyHeader(version=1)
    fields = line.split(b" ")
    protocol = fields[0]
    if protocol == b"TCP4":
        kind: type[IPv4Address] | type[IPv6Address] = IPv4Address
    elif protocol == b"TCP6":
        kind = IPv6Address
    else:
        raise InvalidProxyHeader("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 5:
        raise InvalidProxyHeader(
            "v1 line is not: protocol, source and destination address and port, one space apart"
        )
    _, source, destination, sourcePort, destinationPort = fields
    return ProxyHeader(
        kind("TCP", _v1Address(source, kind, "source"), _v1Port(sourcePort, "source")),
        kind(
            "TCP",
            _v1Address(destination, kind, "destination"),
            _v1Port(destinationPort, "destination"),
        ),
        version=1,
        protocol=protocol.decode("ascii"),
    )


def _v1Address(field: bytes, kind: type[IPv4Address] | type[IPv6Address], which: str) -> str:
    """
    A version 1 address field as canonical text.
    """
    if kind is IPv4Address:
        if _V1_IPV4.fullmatch(field):
            try:
                return str(ipaddress.IPv4Address(field.decode("ascii")))
            except ValueError:
                pass
        raise InvalidProxyHeader(f"v1 {which} address is not a dotted-quad IPv4 address")
    if _V1_IPV6.fullmatch(field):
        try:
            return canonicalIPv6(ipaddress.IPv6Address(field.decode("ascii")).packed)
        except ValueError:
            pass
    raise InvalidProxyHeader(f"v1 {which} address is not an IPv6 address")


def _v1Port(field: bytes, which: str) -> int:
    """
    A version 1 port field: decimal, no leading zero, 0..65535.
    """
    if _V1_PORT.fullmatch(field):
        port = int(field)
        if port <= _MAX_PORT:
            return port
    raise InvalidProxyHeader(f"v1 {which} port is not a decimal number in 0..{_MAX_PORT}")


def _checkV2Fixed(buffer: bytes) -> tuple[int, int, int]:
    """
    Check the fixed part of a version 2 header, as soon as it is in.

    @return: the command, the family and protocol byte, and the length of
        the address block that follows.
    @raise InvalidProxyHeader: for another version or command, an undefined
        family, a block too long to accept, or too short for its family.
    """
    versionCommand, family, length = struct.unpack_from("!BBH", buffer, len(V2_SIGNATURE))
    if versionCommand & 0xF0 != _V2_VERSION:
        raise InvalidProxyHeader("v2 version is not 2")
    command = versionCommand & 0x0F
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise InvalidProxyHeader("v2 command is neither LOCAL nor PROXY")
    if length > V2_MAX_LENGTH:
        raise InvalidProxyHeader(f"v2 address block longer than {V2_MAX_LENGTH} bytes")
    if command == _V2_PROXY:
        # (LOCAL: the receiver discards the block, family included.)
        needed = _V2_ADDRESS_LENGTHS.get(family)
        if needed is None:
            raise InvalidProxyHeader("v2 address family or protocol is not defined")
        if length < needed:
            raise InvalidProxyHeader("v2 address block too short for its family")
    return command, family, length


def _v2Addresses(command: int, family: int, block: bytes) -> ProxyHeader:
    """
    What a complete, checked version 2 header says: its addresses and TLVs.

    TCP over IPv4 or IPv6 carries the client's address. C{LOCAL} (a load
    balancer's own connection, such as its health check) and C{UNSPEC} mean
    the connection's own addresses; so do UDP and UNIX addresses, which the
    specification lets a receiver treat as C{UNSPEC}. A C{LOCAL} header's
    block is discarded, as the specification says, TLVs included.

    @raise InvalidProxyHeader: if the TLVs after the addresses do not
        exactly fill the rest of the block.
    """
    if command == _V2_LOCAL:
        protocol = _V2_PROTOCOLS.get(family, "UNSPEC")
        return ProxyHeader(version=2, command="LOCAL", protocol=protocol)
    protocol = _V2_PROTOCOLS[family]
    tlvs = parseTLVs(block[_V2_ADDRESS_LENGTHS[family] :])
    if family == _V2_TCP4:
        source, destination, sourcePort, destinationPort = struct.unpack_from("!4s4sHH", block)
        return ProxyHeader(
            IPv4Address("TCP", str(ipaddress.IPv4Address(source)), sourcePort),
            IPv4Address("TCP", str(ipaddress.IPv4Address(destination)), destinationPort),
            version=2,
            protocol=protocol,
            tlvs=tlvs,
        )
    if family == _V2_TCP6:
        source, destination, sourcePort, destinationPort = struct.unpack_from("!16s16sHH", block)
        return ProxyHeader(
            IPv6Address("TCP", canonicalIPv6(source), sourcePort),
            IPv6Address("TCP", canonicalIPv6(destination), destinationPort),
            version=2,
            protocol=protocol,
            tlvs=tlvs,
        )
    return ProxyHeader(version=2, protocol=protocol, tlvs=tlvs)


def parseTLVs(data: bytes, what: str = "v2 TLV") -> tuple[TLV, ...]:
    """
    Frame a run of type-length-value records (a version 2 header's, or the
    sub-records of its C{SSL} TLV).

    @param what: what the records are, for the error.
    @raise InvalidProxyHeader: if a record's length runs past the end, or a
        record is cut short in its type and length.
    """
    tlvs = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _TLV_HEAD:
            raise InvalidProxyHeader(f"{what} cut short in its type and length")
        kind, length = struct.unpack_from("!BH", data, offset)
        start = offset + _TLV_HEAD
        if start + length > len(data):
            raise InvalidProxyHeader(f"{what} longer than the header's remaining bytes")
        tlvs.append(TLV(kind, data[start : start + length]))
        offset = start + length
    return tuple(tlvs)


def canonicalIPv6(packed: bytes) -> str:
    """
    The text of a 16-byte IPv6 address as a C{tcp6:} listener reports its
    own peers: compressed as RFC 5952 says (C{2001:db8::7}), with an IPv4
    tail where the address maps one (C{::ffff:192.0.2.7}).
    """
    return socket.inet_ntop(socket.AF_INET6, packed)
