"""
sockplay's reactor: Twisted's epoll reactor, with less work per event.

Twisted's L{EPollReactor} hands every ready socket to its handler through
L{twisted.python.log.callWithLogger}, which asks the socket for its log
prefix, pushes a logging context holding it (the legacy log's C{system}
key), calls the handler under an exception guard, and pops the context:
per event, about as much Python work as the echo-reply protocol does with
the request. L{SockplayReactor} calls the handler directly instead, and
does the common case, a socket that is readable and nothing else, inline.

What it gives up, and what it keeps:
  - The C{system} key. Twisted's legacy log (C{twisted.python.log.msg}),
    called while a socket is being read, no longer names that socket in
    C{system}. sockplay logs through L{twisted.logger.Logger}, whose events
    never read that context, so its own logs are the same. An exception that
    a protocol raises is still logged with the socket's log prefix as
    C{system}, as Twisted logs it (see L{_logReadError}).
  - The exception guard. Twisted's handler catches what a protocol raises
    while reading or writing, logs it and disconnects that socket; that is
    unchanged (the fast path does the same). The guard that
    C{callWithLogger} adds around it, for what C{connectionLost} itself
    raises, is kept too: the failure is logged and the other ready sockets
    are still served.

Its TCP listeners (L{SockplayPort}) make L{SockplayServer} connections,
which do less work per connection (see there).

It is the default of C{twistd -n sockplay} and C{python -m sockplay.server}
(L{chooseReactor}). C{--reactor epoll} (or any other name of
C{twistd --help-reactors}), or twistd's own C{--reactor} option before
C{sockplay}, runs on a stock Twisted reactor instead.

The private names it uses are in L{PRIVATE_NAMES}, checked by a test against
the installed Twisted; if one is missing, L{install} installs Twisted's own
epoll reactor instead, so that an upgrade costs speed, never correctness.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any, cast

from twisted.internet import abstract, address, error, tcp
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python import log
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT",
    "PRIVATE_NAMES",
    "SockplayReactor",
    "available",
    "chooseReactor",
    "install",
]

# The reactor plugin name of this reactor (twisted/plugins/sockplay_plugin.py).
DEFAULT = "sockplay"

# The private names of Twisted's reactors that this module reaches for. The
# test suite checks each against the installed Twisted.
PRIVATE_NAMES = (
    "twisted.internet.epollreactor.EPollReactor._poller",
    "twisted.internet.epollreactor.EPollReactor._selectables",
    "twisted.internet.posixbase._PollLikeMixin._doReadOrWrite",
    "twisted.internet.posixbase._DisconnectSelectableMixin._disconnectSelectable",
    "twisted.internet.posixbase._NO_FILEDESC",
    "twisted.internet.tcp.Port._fromListeningDescriptor",
    "twisted.internet.tcp.Port._realPortNumber",
    "twisted.internet.abstract._LogOwner._getLogPrefix",
    "twisted.internet.tcp._SocketCloser._closeSocket",
    "twisted.internet.abstract.FileDescriptor._writeDisconnected",
)

_log = Logger()

try:
    from select import EPOLLIN

    from twisted.internet.epollreactor import EPollReactor
    from twisted.internet.posixbase import _NO_FILEDESC
except ImportError:  # not Linux, or a Twisted that moved the names
    _base: type | None = None
else:
    _base = EPollReactor


class SockplayServer(tcp.Server):
    """
    Twisted's TCP server connection, with less work per connection.

      - Its log prefix and C{repr}, which Twisted formats for every
        connection as it is made (two strings, which an idle connection
        keeps), are formatted when asked for.
      - It shuts the socket down (C{shutdown(SHUT_RDWR)}) before it closes
        it only if its write side is still open. Twisted always does, and
        calls it "not really necessary"; but it is where the write side is
        open: without it, a connection closed with the client's input
        unread (a refusal, C{server busy}) is reset before the client reads
        the error. Once the write side is shut (sockplay's half-close), the
        FIN is out, and the call only fails when the client has closed too.
      - It tells an aborted connection from others with C{isinstance}
        rather than L{Failure.check}, which names every base class.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: Any,
        client: tuple[Any, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: Any,
    ) -> None:
        # tcp.Server.__init__ without its two formatted strings.
        tcp.Connection.__init__(self, sock, protocol, reactor)
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        self.startReading()
        self.connected = 1

    @property
    def logstr(self) -> str:  # type: ignore[override]
        """
        The log prefix, as Twisted's server connection makes it.
        """
        protocol = getattr(self, "protocol", None)
        name = "-" if protocol is None else self._getLogPrefix(protocol)
        return f"{name},{self.sessionno},{self.hostname}"

    @property
    def repstr(self) -> str:  # type: ignore[override]
        """
        The C{repr}, as Twisted's server connection makes it.
        """
        protocol = getattr(self, "protocol", None)
        name = "-" if protocol is None else protocol.__class__.__name__
        return f"<{name} #{self.sessionno} on {self.server._realPortNumber}>"

    def __repr__(self) -> str:
        return self.repstr

    def _closeSocket(self, orderly: bool) -> None:
        """
        Close the socket as Twisted does, but for the C{shutdown} before
        C{close} once the write side is shut already: its FIN has gone out,
        and on a connection that the client has closed too, that call only
        fails (C{ENOTCONN}, raised and caught in Python).
        """
        if orderly and self._writeDisconnected:
            try:
                self.socket.close()
            except OSError:
                pass
            return
        super()._closeSocket(orderly)

    def connectionLost(self, reason: Failure) -> None:
        """
        Close the socket and tell the protocol, as Twisted's connection does.
        """
        if not hasattr(self, "socket"):
            return
        abstract.FileDescriptor.connectionLost(self, reason)
        self._closeSocket(not isinstance(reason.value, error.ConnectionAborted))
        protocol = self.protocol
        del self.protocol
        del self.socket
        del self.fileno
        protocol.connectionLost(reason)


class SockplayPort(tcp.Port):
    """
    Twisted's TCP listening port, whose connections are L{SockplayServer}s.
    """

    transport = SockplayServer


def _hasNames() -> bool:
    """
    Whether the installed Twisted still has every name L{SockplayReactor}
    relies on.
    """
    if _base is None:
        return False
    return all(
        hasattr(_base, name) for name in ("_doReadOrWrite", "_disconnectSelectable")
    ) and all(
        hasattr(kind, name)
        for kind, name in (
            (tcp.Port, "_fromListeningDescriptor"),
            (tcp.Port, "_realPortNumber"),
            (tcp.Server, "_getLogPrefix"),
            (tcp.Server, "_closeSocket"),
            (tcp.Server, "_writeDisconnected"),
        )
    )


def available() -> bool:
    """
    Whether this platform and the installed Twisted can run
    L{SockplayReactor} (Linux's epoll, and Twisted's names where this module
    expects them).
    """
    return _hasNames()


def _logReadError(selectable: Any) -> None:
    """
    Log the exception being handled, raised while reading C{selectable}, as
    Twisted's handler logs it: through the legacy log, with the socket's log
    prefix as C{system}.
    """
    try:
        system = selectable.logPrefix()
    except Exception:
        system = "(buggy logPrefix method)"
    log.err(system=system)


if _base is not None:

    class SockplayReactor(EPollReactor):
        """
        Twisted's epoll reactor, which dispatches each ready socket without
        L{twisted.python.log.callWithLogger} and handles a readable socket
        inline (see the module's docstring for what that gives up).
        """

        def doPoll(self, timeout: float | None) -> None:
            """
            Wait for ready sockets, at most C{timeout} seconds (C{None}:
            until one is ready), and serve each.
            """
            if timeout is None:
                timeout = -1
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as e:
                if e.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    # Gone since the poll, closed by an earlier event.
                    continue
                try:
                    if event == EPOLLIN:
                        # Readable, nothing else: what _doReadOrWrite does
                        # for this event, inline.
                        why: BaseException | None
                        try:
                            if selectable.fileno() == -1:
                                why = _NO_FILEDESC
                            else:
                                why = selectable.doRead()
                        except BaseException:
                            why = sys.exc_info()[1]
                            _logReadError(selectable)
                        if why:
                            self._disconnectSelectable(selectable, why, True)
                    else:
                        self._doReadOrWrite(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    # What callWithLogger guarded: connectionLost raising.
                    _log.failure("Unhandled error while serving {fd}", fd=fd)

        doIteration = doPoll

        def listenTCP(
            self, port: int, factory: Any, backlog: int = 50, interface: str = ""
        ) -> SockplayPort:
            """
            Listen as Twisted's reactor does, with L{SockplayPort}.
            """
            listening = SockplayPort(port, factory, backlog, interface, self)
            listening.startListening()
            return listening

        def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Any:
            """
            Adopt a listening socket as Twisted's reactor does, with
            L{SockplayPort} for TCP.
            """
            if addressFamily not in (socket.AF_INET, socket.AF_INET6):
                return super().adoptStreamPort(fileDescriptor, addressFamily, factory)
            listening = SockplayPort._fromListeningDescriptor(
                self, fileDescriptor, addressFamily, factory
            )
            listening.startListening()
            return listening

else:  # pragma: no cover - only where there is no epoll
    SockplayReactor = None  # type: ignore[assignment,misc]


def install() -> None:
    """
    Install L{SockplayReactor} as Twisted's global reactor, or Twisted's own
    epoll reactor where it cannot run (see L{available}).

    The reactor plugin C{sockplay} (C{twistd --reactor sockplay}) calls
    this.
    """
    from twisted.internet.main import installReactor

    if available():
        installReactor(SockplayReactor())
    else:
        from twisted.internet import epollreactor

        epollreactor.install()


def chooseReactor(name: str | None) -> IReactorCore:
    """
    The global reactor for the server to run on, installed first if none is.

    @param name: a reactor's short name, as C{twistd --help-reactors} lists
        them (C{epoll}, C{poll}, C{select}, C{asyncio}, C{sockplay}), or
        C{None} for the default: sockplay's reactor where L{available}, else
        Twisted's default. If a reactor is already installed (twistd's own
        C{--reactor}, or an embedding program's), it is kept.
    """
    if "twisted.internet.reactor" not in sys.modules:
        if name is not None:
            from twisted.application.reactors import installReactor

            installReactor(name)
        elif available():
            install()
    from twisted.internet import reactor

    return cast(IReactorCore, reactor)


def reactorName(value: str) -> str:
    """
    C{--reactor}'s value: the short name of a reactor that Twisted knows
    (its reactor plugins, C{twistd --help-reactors}).

    @raise ValueError: for a name Twisted does not know, listing those it
        does.
    """
    from twisted.application.reactors import getReactorTypes

    names = sorted(r.shortName for r in getReactorTypes())
    if value not in names:
        raise ValueError(f"--reactor must be one of {', '.join(names)}, not {value!r}")
    return value


reactorName.coerceDoc = ""  # type: ignore[attr-defined]


def nameOf(reactor: object) -> str | None:
    """
    The short name of C{reactor}'s kind, as L{chooseReactor} takes it (so
    that worker processes run on the reactor their parent runs on), or
    C{None} for a reactor that no reactor plugin installs.
    """
    from twisted.application.reactors import getReactorTypes

    module = type(reactor).__module__
    for installer in getReactorTypes():
        if installer.moduleName == module:  # type: ignore[attr-defined]
            return str(installer.shortName)
    return None
