"""
L{EchoReplyFactory}: what the connections of one server share.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from zope.interface import implementer

from sockplay.cli import counted
from sockplay.framing import Framer, makeFramer
from sockplay.server.address import describeAddress
from sockplay.server.faults import FaultyEchoReplyProtocol
from sockplay.server.faultsettings import Faults
from sockplay.server.lifecycle import Drain, Sweep
from sockplay.server.limits import ConnectionLimits
from sockplay.server.protocol import ConnectionOwner, EchoReplyProtocol
from sockplay.server.proxy import IHeaderAdmission, ProxyHeaderWrapper
from sockplay.server.settings import ConnectionRecord, ServerSettings, renderTemplate
from sockplay.server.traced import tracedProtocols
from sockplay.server.tracer import Tracer

__all__ = ["CONNECTION_LOG_LEVELS", "EchoReplyFactory", "OwnerOnBehalf"]

# Which connection log events reach the log: info and above. Probes (health
# checks) are logged at debug level, and a text log (twistd's) shows every
# level, so they are left out here; to see them, lower the level:
# CONNECTION_LOG_LEVELS.setLogLevelForNamespace(EchoReplyFactory.log.namespace,
# LogLevel.debug).
CONNECTION_LOG_LEVELS = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)

# Distinct local addresses remembered for sharing: bounded whatever the host
# does, far above the listeners a server has.
_MAX_INTERNED = 1024


@implementer(IHeaderAdmission)
class EchoReplyFactory(ConnectionOwner):
    """
    What the connections of one server share: the settings, the clock, the
    connection accounting, the sweep, and the observers of connections.

    It builds the plain L{EchoReplyProtocol}, or the fault-injecting
    L{FaultyEchoReplyProtocol} when a fault is asked for or may be (see
    L{allowFaultChanges}); once L{traceWith} is called, their traced (or
    light) kin from L{sockplay.server.traced}.

    @ivar settings: the L{ServerSettings}.
    @ivar clock: the time source for timers.
    @ivar connections: the admitted connections now open.
    @ivar awaiting: the connections of C{haproxy:} listeners still awaiting
        their PROXY header: counted against the limits too.
    @ivar observers: called with a L{ConnectionRecord} when a connection
        closes (metrics subscribe here).
    @ivar openedObservers: called with no argument when a connection is
        made (before admission: each is later reported to C{observers}).
    @ivar random: the source of fault-injection draws (seed it in tests).
    @ivar faults: the L{Faults} in force, which connections read for each
        message: the settings' at first; L{setFaults} changes them.
    @ivar faultObservers: called with the new L{Faults} when they change.
    @ivar injectedObservers: called with a kind of fault (one of
        L{sockplay.server.faults.INJECTED_KINDS}) and a count when
        connections inject faults (metrics subscribe here).
    @ivar sweep: the idle and linger L{Sweep}.
    @ivar limits: the L{ConnectionLimits}, which count the connections in
        C{connections} and C{awaiting}.
    """

    noisy = False
    log = Logger(observer=FilteringLogObserver(globalLogPublisher, [CONNECTION_LOG_LEVELS]))

    def __init__(
        self,
        settings: ServerSettings | None = None,
        clock: IReactorTime | None = None,
        hostname: str | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.settings = settings if settings is not None else ServerSettings()
        self.clock = clock
        self.hostname = (hostname or socket.gethostname()).encode("utf-8", "backslashreplace")
        self.connections: set[EchoReplyProtocol] = set()
        self.awaiting: set[ProxyHeaderWrapper] = set()
        self.observers: list[Callable[[ConnectionRecord], object]] = []
        self.openedObservers: list[Callable[[], object]] = []
        self.random = random.Random()
        self.faults = self.settings.faults
        self.faultObservers: list[Callable[[Faults], object]] = [self._rearmCuts]
        self.injectedObservers: list[Callable[[str, int], object]] = []
        self._faulty = self.faults.active
        # The cutAfter that open connections' cuts were set by.
        self._cutAfter = self.faults.cutAfter
        self._newProtocol = self._chooseProtocol()
        self.sweep = Sweep(self.connections, clock, self.settings)
        # Whether the prefix or banner names {listener}, which needs each
        # connection's local address (asked once per connection).
        self._templatesNameListener = any(
            template is not None and b"{listener}" in template
            for template in (self.settings.prefix, self.settings.banner)
        )
        self._drain: Drain | None = None
        self.limits = ConnectionLimits(self.settings)
        self._addresses: dict[IAddress, IAddress] = {}

    def traceWith(self, tracer: Tracer) -> None:
        """
        Record every connection's events in C{tracer} from now on (C{--web},
        C{--trace}): build the traced connection instead of the plain one.
        """
        self.tracer = tracer
        self._newProtocol = self._chooseProtocol()

    def _chooseProtocol(self) -> Callable[[], EchoReplyProtocol]:
        """
        The kind of connection to build: fault-injecting or not, traced or
        not.
        """
        if self.tracer is not None:
            return tracedProtocols(self.tracer, self._faulty)
        return FaultyEchoReplyProtocol if self._faulty else EchoReplyProtocol

    def allowFaultChanges(self) -> None:
        """
        Build every connection from now on as one that reads the faults in
        force for each message, even while there are none, because they may
        change while it is open (C{PUT /faults}, C{--scenario}).
        """
        self._faulty = True
        self._newProtocol = self._chooseProtocol()

    def setFaults(self, faults: Faults, why: str) -> None:
        """
        Put C{faults} in force: the messages read from now on get them. The
        change is logged, with C{why} (who asked for it).
        """
        self.faults = faults
        if faults.active and not self._faulty:
            self.allowFaultChanges()
        self.log.info("faults now: {faults} ({why})", faults=faults.describe(), why=why)
        for observer in self.faultObservers:
            observer(faults)

    def _rearmCuts(self, faults: Faults) -> None:
        """
        The faults changed: set every open connection's cut by the new
        C{cutAfter}, counted from when it opened (one walk over the
        connections per change, and none while C{cutAfter} is unchanged).
        """
        if faults.cutAfter == self._cutAfter:
            return
        self._cutAfter = faults.cutAfter
        for connection in list(self.connections):
            if isinstance(connection, FaultyEchoReplyProtocol):
                connection.rearmCut()

    def buildProtocol(self, addr: IAddress | None) -> EchoReplyProtocol:
        protocol = self._newProtocol()
        protocol.factory = self
        return protocol

    @property
    def needsLocalAddress(self) -> bool:
        """
        Whether connections must learn their local address (a system call):
        for the connection log, the observers, or a C{{listener}} template.
        """
        return bool(not self.settings.quiet or self.observers or self._templatesNameListener)

    def makeFramer(self) -> Framer:
        """
        A new framer for one connection.
        """
        return makeFramer(self.settings.framing, self.settings.maxMessage)

    def render(self, template: bytes, protocol: EchoReplyProtocol) -> bytes:
        """
        Fill in a template's placeholders for C{protocol}'s connection.
        """
        return renderTemplate(
            template, self.hostname, protocol.hostAddress, protocol.peerAddress,
            tls=protocol.overTLS,
        )

    def intern(self, address: IAddress) -> IAddress:
        """
        One shared object per distinct local address: every connection of a
        listener has the same one, and need not keep its own copy.
        """
        if len(self._addresses) > _MAX_INTERNED:
            self._addresses.clear()
        return self._addresses.setdefault(address, address)

    def watch(self) -> None:
        """
        Make sure the idle and linger sweep runs.
        """
        self.sweep.watch()

    # Admission

    def admit(self, protocol: EchoReplyProtocol) -> tuple[str, str] | None:
        """
        Count a new connection in, or say why it is refused: a pair of the
        outcome and the error text. Every connection that will be reported
        closed is reported opened here, refused ones included, so that
        observers' counts balance.
        """
        for observer in self.openedObservers:
            observer()
        refusal = self.limits.countIn(protocol.peerAddress)
        if refusal is None:
            self.connections.add(protocol)
        return refusal

    # Connections awaiting their PROXY header (IHeaderAdmission)

    @property
    def headerTimeout(self) -> float:
        """
        The idle timeout, which holds from the accept: a connection that
        has not completed its PROXY header by then is closed.
        """
        return self.settings.idleTimeout

    def admitAwaiting(self, connection: ProxyHeaderWrapper) -> bool:
        """
        Count a connection that awaits its PROXY header against the limits,
        under its socket's peer. It is reported to the observers only if it
        ends before its header is in; once it is, its protocol is admitted
        (and reported) as any other.
        """
        if self.limits.countIn(connection.peerAddress) is not None:
            return False
        self.awaiting.add(connection)
        return True

    def awaitingEnded(self, connection: ProxyHeaderWrapper, handedOver: bool, detail: str) -> None:
        """
        Stop counting a connection that awaited its PROXY header; if it
        ended there (no header, a bad one, the timeout), log it.
        """
        if connection not in self.awaiting:
            return
        self.awaiting.discard(connection)
        self.limits.countOut(connection.peerAddress)
        if handedOver:
            return
        for observer in self.openedObservers:
            observer()
        if not (self.settings.quiet and not self.observers):
            self._record(connection, detail)

    def connectionClosed(self, protocol: EchoReplyProtocol) -> None:
        """
        Account for a closed connection, log it and tell the observers.
        """
        if protocol in self.connections:
            self.connections.discard(protocol)
            self.sweep.stopIfUnused()
            self.limits.countOut(protocol.peerAddress)
        if not (self.settings.quiet and not self.observers):
            self._record(protocol, protocol.detail)
        if self._drain is not None:
            self._drain.connectionClosed()

    def _record(self, protocol: EchoReplyProtocol | ProxyHeaderWrapper, detail: str = "") -> None:
        """
        Log what C{protocol}'s connection did and tell the observers.

        @param detail: what the outcome alone does not say (why a PROXY
            header was refused), or C{""}; never the client's bytes.
        """
        record = ConnectionRecord(
            peer=describeAddress(protocol.peerAddress),
            listener=describeAddress(protocol.hostAddress, protocol.overTLS),
            framing=self.settings.framing,
            messages=protocol.messages,
            bytesIn=protocol.bytesIn,
            bytesOut=protocol.bytesOut,
            duration=max(0.0, self.clock.seconds() - protocol.startedAt),
            outcome=protocol.outcome or "ok",
        )
        if not self.settings.quiet:
            _logConnection(self.log, record, detail)
        for observer in self.observers:
            observer(record)

    # Graceful shutdown

    @property
    def draining(self) -> bool:
        """
        Whether a drain has begun.
        """
        return self._drain is not None

    @property
    def drained(self) -> int:
        """
        Connections that closed by themselves during the drain.
        """
        return 0 if self._drain is None else self._drain.drained

    @property
    def aborted(self) -> int:
        """
        Connections aborted at the drain's timeout.
        """
        return 0 if self._drain is None else self._drain.aborted

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Stop answering on every connection, let each close cleanly, and
        abort whatever is still open after C{timeout} seconds.

        @return: fires when no connection is left.
        """
        for connection in list(self.awaiting):
            # Owed nothing: closed at once.
            connection.shutdown()
        self._drain = Drain(self.connections, self.clock)
        return self._drain.start(timeout)

    def stopDrainNow(self) -> None:
        """
        Abort the connections that the drain still waits for (a second
        signal asked to stop now).
        """
        if self._drain is not None:
            self._drain.stopNow()


class OwnerOnBehalf(ConnectionOwner):
    """
    The owner of another kind of listener's connections (C{--info},
    C{--websocket}), on behalf of the server's L{EchoReplyFactory}: the
    server counts them against its limits, sweeps, drains, logs and
    measures them as its own. Only the settings are this owner's: the
    server's, with what the kind of listener does differently.

    @ivar server: the server's factory.
    """

    noisy = False

    def __init__(self, server: EchoReplyFactory, **differences: Any) -> None:
        """
        @param differences: the settings that differ from the server's
            (L{ServerSettings} fields).
        """
        self.server = server
        self.settings = replace(server.settings, **differences)
        self.clock: IReactorTime = server.clock
        self.random = server.random

    @property
    def needsLocalAddress(self) -> bool:
        return self.server.needsLocalAddress

    def intern(self, address: IAddress) -> IAddress:
        return self.server.intern(address)

    def makeFramer(self) -> Framer:
        return makeFramer(self.settings.framing, self.settings.maxMessage)

    def render(self, template: bytes, protocol: EchoReplyProtocol) -> bytes:
        return self.server.render(template, protocol)

    def admit(self, protocol: EchoReplyProtocol) -> tuple[str, str] | None:
        return self.server.admit(protocol)

    def connectionClosed(self, protocol: EchoReplyProtocol) -> None:
        self.server.connectionClosed(protocol)

    def watch(self) -> None:
        self.server.watch()


def _logConnection(log: Logger, record: ConnectionRecord, detail: str) -> None:
    """
    Log one line for a closed connection: at debug level for a probe (a
    health check, every few seconds, is no news), else at info level.

    @param detail: what the outcome alone does not say, or C{""}.
    """
    # The text is made here with an f-string and given to the logger as one
    # field: Twisted formats each {field} of a format string in pure Python,
    # which cost ~25 us per connection for eight of them. The fields stay
    # in the event for structured observers.
    log.emit(
        LogLevel.debug if record.outcome == "probe" else LogLevel.info,
        "Connection closed: {summary}",
        summary=(
            f"{record.peer} on {record.listener}, {record.outcome}"
            f"{f' ({detail})' if detail else ''}, "
            f"{counted(record.messages, 'message')}, "
            f"{counted(record.bytesIn, 'byte')} in, "
            f"{counted(record.bytesOut, 'byte')} out, {record.duration:.3f} s"
        ),
        event="connection",
        peer=record.peer,
        listener=record.listener,
        framing=record.framing,
        messages=record.messages,
        bytesIn=record.bytesIn,
        bytesOut=record.bytesOut,
        duration=record.duration,
        outcome=record.outcome,
        **({"detail": detail} if detail else {}),
    )
