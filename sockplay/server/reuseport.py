"""
A listening socket for each C{--workers} worker (C{SO_REUSEPORT}), all on
one port, so that the kernel picks the one worker that takes a new
connection.

Workers that share one listening socket share its accept queue: every
worker's epoll reports the socket readable when a connection arrives, each
wakes, one accepts it, and the others find nothing (C{EAGAIN}). With a
socket each, bound with C{SO_REUSEPORT}, Linux hashes every new connection
to one socket of the group, and only the worker that owns it wakes.

L{ReusePortTCP} binds such a group through Twisted's own TCP port
(C{listenTCP} with a L{twisted.internet.tcp.makeBinding} that asks for
C{SO_REUSEPORT}), so any C{tcp:} or C{tcp6:} endpoint string, also behind
C{haproxy:}, can make the sockets; L{perWorkerEndpoint} says which
endpoints can.
"""

from __future__ import annotations

import socket
import sys
from types import ModuleType
from typing import Any, cast

from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IConnector,
    IListeningPort,
    IReactorTCP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ClientFactory, ServerFactory
from twisted.internet.tcp import makeBinding
from zope.interface import implementer

from sockplay.server.proxy import ProxiedEndpoint

__all__ = ["ReusePortTCP", "canSpreadConnections", "perWorkerEndpoint"]


def canSpreadConnections(platform: str = sys.platform, module: ModuleType = socket) -> bool:
    """
    Whether this platform spreads the connections to one port over a group
    of C{SO_REUSEPORT} sockets: Linux does (since 3.9); the BSDs and macOS
    accept the option but hand every connection to one socket of the group
    (FreeBSD's balancing option is another, C{SO_REUSEPORT_LB}), so there
    the workers keep one shared socket.

    @param platform: C{sys.platform}, for tests.
    @param module: the C{socket} module, for tests.
    """
    return platform.startswith("linux") and hasattr(module, "SO_REUSEPORT")


def perWorkerEndpoint(endpoint: IStreamServerEndpoint) -> bool:
    """
    Whether C{endpoint} listens on a TCP port (C{tcp:}, C{tcp6:}, also
    behind C{haproxy:}), which a socket per worker can share. A UNIX socket
    cannot (C{SO_REUSEPORT} does not spread its connections), nor a
    socket handed in (C{systemd:}, C{fd:}): there is only one.
    """
    while isinstance(endpoint, ProxiedEndpoint):
        endpoint = endpoint.wrapped
    return isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint))


def _checkFree(interface: str, port: int) -> None:
    """
    Fail as a port in use would if a socket already listens on C{port} of
    C{interface}: another group's sockets would otherwise let this group
    join them, and two servers would share the port instead of the second
    failing. A bind without C{SO_REUSEPORT} (but with C{SO_REUSEADDR}, as
    Twisted's ports bind) fails on a listening port, and only then.

    @raise CannotListenError: if the port is taken.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            address = socket.getaddrinfo(
                interface, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            )[0][4]
        else:
            address = (interface, port)
        probe.bind(address)
    except OSError as e:
        raise CannotListenError(interface, port, e) from None
    finally:
        probe.close()


@implementer(IReactorTCP)
class ReusePortTCP:
    """
    The TCP part of a reactor for a group of listening sockets on one port:
    each C{listenTCP} binds another socket with C{SO_REUSEPORT}, to the port
    the first one got (so port 0 picks one port for the whole group).

    Build the endpoint of a C{--listen} string with this in place of the
    reactor, and call its C{listen} once per worker.

    @ivar portNumber: the group's port, once its first socket listens.
    """

    def __init__(self, reactor: IReactorTCP) -> None:
        """
        @param reactor: the reactor whose TCP ports these are.
        """
        self._reactor = reactor
        self.portNumber: int | None = None

    def listenTCP(
        self,
        port: int,
        factory: ServerFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        if self.portNumber is None:
            if port != 0:
                _checkFree(interface, port)
        else:
            port = self.portNumber
        binding = makeBinding(interface, port, reuseAddress=True, reusePort=True)
        # Twisted's TCP port takes a binding where it takes a port number;
        # the interface is passed too, since it decides the address family.
        listening = self._reactor.listenTCP(cast(Any, binding), factory, backlog, interface)
        if self.portNumber is None:
            self.portNumber = cast(Any, listening.getHost()).port
        return listening

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: ClientFactory[Any],
        timeout: float = 30.0,
        bindAddress: tuple[str, int] | None = None,
    ) -> IConnector:
        return self._reactor.connectTCP(host, port, factory, timeout, bindAddress)
