"""
Reading a C{--connect} endpoint string, with no I/O: its kind, and for the
kinds the client builds itself (C{tcp:}, C{tcp6:}, C{ssl:}) the host, port
and connection options, so that a mistyped string is a usage error that
says what is wrong, and the messages can name the host actually looked up.
A C{ws://} or C{wss://} URL (L{parseWebSocketURL}) is a WebSocket server.

The syntax is Twisted's (U{endpoint strings
<https://docs.twisted.org/en/stable/core/howto/endpoints.html>}):
arguments separated by colons, C{name=value} or positional, a backslash
escaping the next character. A colon in a value (an IPv6 address) must be
escaped: C{tcp:host=\\:\\:1:port=12345}.
"""

from __future__ import annotations

import math
from typing import NamedTuple
from urllib.parse import urlsplit

import idna
from twisted.internet.abstract import isIPAddress, isIPv6Address

from sockplay.cli import splitEndpoint

__all__ = [
    "HOST_KINDS",
    "SHAPE",
    "BadConnect",
    "HostTarget",
    "WebSocketTarget",
    "hostNameProblem",
    "parseConnect",
    "parseWebSocketURL",
]

# The example every "cannot parse" message ends with.
SHAPE = "an endpoint looks like tcp:host=...:port=..."

# The kinds whose host and port the client reads itself: tcp6: is not
# among Twisted's client endpoint strings, and ssl: is set up by the
# client so that it verifies the server (Twisted's ssl: string does not).
HOST_KINDS = ("tcp", "tcp6", "ssl")

# The arguments of those kinds that the client accepts, beyond host and port.
_OPTIONAL = ("timeout", "bindAddress")


class BadConnect(ValueError):
    """
    A C{--connect} string that cannot be parsed; the message says why and
    what one looks like.
    """


class HostTarget(NamedTuple):
    """
    A C{tcp:}, C{tcp6:} or C{ssl:} endpoint string, read.

    @ivar kind: C{tcp}, C{tcp6} or C{ssl}.
    @ivar host: the host name or address to connect to.
    @ivar port: the TCP port.
    @ivar timeout: the connect timeout in seconds, if the string sets one.
    @ivar bindAddress: the local address to connect from, if set.
    """

    kind: str
    host: str
    port: int
    timeout: float | None = None
    bindAddress: str | None = None


class WebSocketTarget(NamedTuple):
    """
    A C{ws://} or C{wss://} URL, read.

    @ivar url: the URL as given.
    @ivar secure: C{wss://}: WebSocket over TLS.
    @ivar host: the host name or address to connect to.
    @ivar port: the TCP port (80 or 443 where the URL names none).
    """

    url: str
    secure: bool
    host: str
    port: int


def parseWebSocketURL(description: str) -> WebSocketTarget | None:
    """
    Read C{description} as a WebSocket URL: C{ws://HOST:PORT/PATH} or
    C{wss://...} (an IPv6 host in brackets).

    @return: the target; C{None} if it is not a C{ws://} or C{wss://} URL.
    @raise BadConnect: if it is one, but without a usable host or port, or
        with user information or a fragment, which a WebSocket URL cannot
        have (RFC 6455, section 3).
    """
    scheme, separator, _ = description.partition("://")
    if not separator or scheme.lower() not in ("ws", "wss"):
        return None
    shape = "a WebSocket URL looks like ws://127.0.0.1:8080/ or wss://host:443/path"

    def bad(why: str) -> BadConnect:
        return BadConnect(f"cannot parse --connect {description!r}: {why}; {shape}")

    try:
        parts = urlsplit(description)
        port = parts.port
    except ValueError as e:
        raise bad(str(e)) from None
    if parts.username is not None or parts.password is not None:
        raise bad("a WebSocket URL has no user name or password")
    if parts.fragment:
        raise bad("a WebSocket URL has no #fragment")
    host = parts.hostname or ""
    problem = hostNameProblem(host, strict=False)
    if problem is not None:
        raise bad(f"the host {host!r} is not a host name or an IP address ({problem})")
    secure = scheme.lower() == "wss"
    if port is None:
        port = 443 if secure else 80
    if not 0 < port < 65536:
        raise bad(f"port {port} is not from 1 to 65535")
    return WebSocketTarget(description, secure, host, port)


def hostNameProblem(host: str, strict: bool = True) -> str | None:
    """
    Why C{host} is neither an IP address nor a host name the client can
    look up, or C{None} if it is one.

    @param strict: check a name by IDNA 2008 (the C{idna} package), as
        Twisted's C{HostnameEndpoint} and its TLS name check do; otherwise
        only as the system resolver behind a C{tcp:} endpoint needs it
        (Python's own IDNA codec), which takes names such as C{my_host}
        that those refuse.
    @return: the reason, for a message: C{"it is empty"}, or what IDNA
        says is wrong with the name.
    """
    if isIPAddress(host) or isIPv6Address(host):
        return None
    if not host:
        return "it is empty"
    try:
        if strict:
            idna.encode(host)
        else:
            host.encode("idna")
    except UnicodeError as e:
        reason = str(e)
        # Python's codec wraps its reason in its own words.
        inner = reason.partition("(UnicodeError: ")[2]
        return inner.removesuffix(")") if inner else reason
    return None


def _unescapedColon(description: str, host: str) -> bool:
    """
    Whether the host looks cut at an unescaped colon, as an IPv6 address
    written as it is (C{tcp:host=::1:port=12345}) is.
    """
    return "::" in description or "host=:" in description or host.startswith("[")


# What to write instead of an IPv6 address with bare colons.
_ESCAPE = (
    "the colons of an IPv6 address must be escaped with a backslash: "
    "tcp:host=\\:\\:1:port=12345 (in single quotes in a shell)"
)


def parseConnect(description: str) -> HostTarget | None:
    """
    Read C{description}, a C{--connect} endpoint string.

    @return: its host, port and options for a C{tcp:}, C{tcp6:} or
        C{ssl:} string; C{None} for any other kind, which Twisted reads
        (C{unix:}, or a kind a plugin adds).
    @raise BadConnect: if the string has no kind, or a C{tcp:}, C{tcp6:}
        or C{ssl:} string lacks a host or a port, has an argument the client
        does not take, a host that cannot be looked up (L{hostNameProblem}),
        a port that is not a number from 1 to 65535, or a timeout that is
        not a positive number.
    """
    kind, *arguments = splitEndpoint(description)
    if not arguments or not kind:
        raise BadConnect(f"cannot parse --connect {description!r}: no endpoint kind; {SHAPE}")
    if kind not in HOST_KINDS:
        return None

    def bad(why: str) -> BadConnect:
        return BadConnect(f"cannot parse --connect {description!r}: {why}; {SHAPE}")

    named: dict[str, str] = {}
    positional: list[str] = []
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if not equals:
            positional.append(argument)
        elif name in named:
            raise bad(f"{name}= is given twice")
        else:
            named[name] = value
    for name in ("host", "port"):
        if positional and name not in named:
            named[name] = positional.pop(0)
    host = named.pop("host", "")
    if positional or not host:
        if _unescapedColon(description, host):
            raise bad(_ESCAPE)
        raise bad(f"unexpected {positional[0]!r}" if positional else "no host")
    problem = hostNameProblem(host, strict=False)
    if problem is not None:
        raise bad(f"the host {host!r} is not a host name or an IP address ({problem})")
    if "port" not in named:
        raise bad("no port")
    try:
        port = int(named.pop("port"))
    except ValueError:
        why = _ESCAPE if _unescapedColon(description, host) else "the port is not a number"
        raise bad(why) from None
    if not 0 < port < 65536:
        raise bad(f"port {port} is not from 1 to 65535")
    for name in named:
        if name not in _OPTIONAL:
            extra = "; the client trusts --ca or the system's CAs" if kind == "ssl" else ""
            raise bad(f"{kind}: takes host, port, timeout and bindAddress, not {name}={extra}")
    timeout = None
    if "timeout" in named:
        try:
            timeout = float(named["timeout"])
        except ValueError:
            raise bad("the timeout is not a number") from None
        if not (math.isfinite(timeout) and timeout > 0):
            raise bad(f"the timeout must be a positive number of seconds, not {named['timeout']!r}")
    return HostTarget(kind, host, port, timeout, named.get("bindAddress"))
