"""
Where the load goes: a host name and port, or a Twisted client endpoint
string, turned into the address family and socket address the load
processes connect to.

The load generator connects with plain sockets, not Twisted endpoints, so
it reads the few endpoint kinds it supports itself, in Twisted's syntax.
"""

from __future__ import annotations

import socket
from typing import Any

from sockplay.cli import port as portOption
from sockplay.cli import splitEndpoint

__all__ = ["BenchError", "parseEndpoint", "resolve"]

# The arguments of each endpoint kind the load generator supports, in
# their positional order.
_ARGUMENTS = {"tcp": ["host", "port"], "tcp6": ["host", "port"], "unix": ["path"]}


class BenchError(Exception):
    """
    An error the user can cause (a bad target, too few file descriptors),
    with the one-line message to show.
    """


def parseEndpoint(description: str) -> tuple[int, Any]:
    """
    The address family and socket address of a client endpoint string:
    C{tcp:host=H:port=P} (or C{tcp:H:P}), C{tcp6:...} or C{unix:path=...}
    (or C{unix:PATH}), in Twisted's syntax. A C{timeout} argument is
    accepted and ignored (the run has its deadline).

    @raise BenchError: for any other endpoint, or a malformed one.
    """
    kind, *arguments = splitEndpoint(description)
    if kind not in _ARGUMENTS:
        raise BenchError(
            f"bad --connect endpoint {description!r}: the load generator supports "
            "tcp:, tcp6: and unix: endpoints"
        )
    names = _ARGUMENTS[kind]
    values: dict[str, str] = {}
    positional = iter(names)
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if not equals:
            name, value = next(positional, ""), argument
        if name == "timeout":
            continue
        if name not in names or name in values:
            raise BenchError(f"bad --connect endpoint {description!r}: unexpected {argument!r}")
        values[name] = value
    missing = [name for name in names if not values.get(name)]
    if missing:
        raise BenchError(f"bad --connect endpoint {description!r}: no {missing[0]}")
    if kind == "unix":
        return socket.AF_UNIX, values["path"]
    try:
        port = portOption(values["port"])
    except ValueError:
        raise BenchError(
            f"bad --connect endpoint {description!r}: bad port {values['port']!r}"
        ) from None
    return resolve(values["host"], port, socket.AF_INET6 if kind == "tcp6" else socket.AF_INET)


def resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[int, Any]:
    """
    The address family and socket address to connect to for C{host}.

    @raise BenchError: if the name does not resolve.
    """
    try:
        found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise BenchError(f"cannot resolve {host!r}: {e}") from None
    family, _, _, _, address = found[0]
    return family, address
