"""
How a server's connections end, and how the server starts and stops:

  - L{Sweep}: one timer per server that ends connections idle past the idle
    timeout and connections lingering past their deadline;
  - L{Drain}: the graceful shutdown of every open connection;
  - L{DrainService}: raises the file-descriptor limit at start-up, drains
    at shutdown, and makes a finished drain a clean exit;
  - L{ReadyAnnouncer}: says that the server is ready, once the reactor runs.
"""

from __future__ import annotations

import gc
import signal
import typing
from collections.abc import Callable, Collection
from types import FrameType
from typing import Any, cast

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sockplay.cli import UNLIMITED, counted, raiseFileLimit
from sockplay.server._twisted import forgetExitSignal
from sockplay.server.protocol import ConnectionState
from sockplay.server.settings import ServerSettings

__all__ = [
    "READY_MESSAGE",
    "Drain",
    "DrainService",
    "ReadyAnnouncer",
    "SecondSignal",
    "Sweep",
]

READY_MESSAGE = "Server is running, waiting for connections..."

_READING = ConnectionState.READING


class Sweepable(typing.Protocol):
    """
    What the sweep and the drain need of a connection.
    """

    state: ConnectionState
    lastMessageAt: float
    lingerDeadline: float
    delivering: bool
    outcome: str | None

    def idleExpired(self) -> None:
        """
        No message completed within the idle timeout.
        """

    def checkDelivery(self) -> None:
        """
        See whether the last replies made progress towards the client, and
        if so restart the linger period.
        """

    def lingerExpired(self) -> None:
        """
        The client did not close in time after the last reply.
        """

    def shutdown(self) -> None:
        """
        Answer nothing more, then close.
        """

    def abort(self) -> None:
        """
        Drop the connection now.
        """


class Sweep:
    """
    Ends the connections whose time is up: those reading with no complete
    message for the idle timeout, and those whose conversation is over and
    whose client has not closed by their linger deadline. Before it ends
    one, it asks a connection whose replies are still on their way whether
    they made progress, which moves the deadline: a reply that is being
    read keeps its connection.

    One timer for all connections, rather than a timer per connection reset
    at every message: a message only notes the time, which is cheap at a
    million messages a second, and a connection costs no timer to make or to
    cancel (measured: this saved a third of an idle connection's memory).
    """

    def __init__(
        self, connections: Collection[Sweepable], clock: IReactorTime, settings: ServerSettings
    ) -> None:
        """
        @param connections: the server's open connections (a live view).
        """
        self._connections = connections
        self._clock = clock
        self._settings = settings
        self._loop: LoopingCall | None = None

    def interval(self) -> float:
        """
        How often the sweep looks: a tenth of the idle timeout and of the
        linger period, at most a second. A connection is ended within that
        long after its time is up.
        """
        settings = self._settings
        periods = [1.0, settings.lingerTimeout / 10]
        if settings.idleTimeout > 0:
            periods.append(settings.idleTimeout / 10)
        return min(periods)

    def watch(self) -> None:
        """
        Make sure the sweep runs while there are connections.
        """
        if self._loop is None:
            loop = LoopingCall(self._sweep)
            loop.clock = self._clock
            loop.start(self.interval(), now=False)
            self._loop = loop

    def _sweep(self) -> None:
        now = self._clock.seconds()
        idleTimeout = self._settings.idleTimeout
        idleDeadline = now - idleTimeout
        for protocol in list(self._connections):
            if idleTimeout > 0 and protocol.state is _READING:
                if protocol.lastMessageAt <= idleDeadline:
                    protocol.idleExpired()
            elif protocol.lingerDeadline:
                if protocol.delivering:
                    protocol.checkDelivery()
                if protocol.lingerDeadline <= now:
                    protocol.lingerExpired()
        self.stopIfUnused()

    def stopIfUnused(self) -> None:
        """
        Stop the timer once no connection is left.
        """
        if self._loop is not None and not self._connections:
            if self._loop.running:
                self._loop.stop()
            self._loop = None


class Drain:
    """
    A graceful shutdown: every connection stops answering (what was read
    gets its reply) and closes cleanly; whatever is still open after the
    timeout, or when told to stop now, is aborted.

    @ivar drained: connections that closed cleanly during the drain.
    @ivar aborted: connections that were aborted: at the timeout, when told
        to stop now, or earlier, when their client did not close in time
        after the server's last reply (their log says C{aborted} too).
    """

    def __init__(self, connections: Collection[Sweepable], clock: IReactorTime) -> None:
        self._connections = connections
        self._clock = clock
        self._waiting: set[Sweepable] = set()
        self._done: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None
        self.drained = 0
        self.aborted = 0

    def start(self, timeout: float) -> Deferred[None]:
        """
        Begin: shut every connection down, and abort what is left after
        C{timeout} seconds.

        @return: fires when no connection is left.
        """
        open_ = list(self._connections)
        self._waiting = set(open_)
        if not open_:
            return succeed(None)
        done = self._done = Deferred()
        self._timer = self._clock.callLater(timeout, self._expired)
        for protocol in open_:
            # May close it at once, and end the drain before this returns.
            protocol.shutdown()
        return done

    def _expired(self) -> None:
        self._timer = None
        self.stopNow()

    def stopNow(self) -> None:
        """
        Abort every connection still open, without waiting for the timeout.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for protocol in list(self._connections):
            self.aborted += 1
            self._waiting.discard(protocol)
            protocol.abort()

    def connectionClosed(self) -> None:
        """
        A connection closed: count it as drained or aborted, as its log
        says, and finish when none is left.
        """
        if self._done is None:
            return
        for protocol in list(self._waiting):
            if protocol not in self._connections:
                self._waiting.discard(protocol)
                if protocol.outcome == "aborted":
                    self.aborted += 1
                else:
                    self.drained += 1
        if not self._connections:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            done, self._done = self._done, None
            done.callback(None)


class Drainable(typing.Protocol):
    """
    What L{DrainService} needs of the server's factory.
    """

    settings: ServerSettings
    clock: IReactorTime

    @property
    def connections(self) -> Collection[Any]:
        """
        The open connections.
        """

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Drain every connection.
        """

    def stopDrainNow(self) -> None:
        """
        Abort the connections the drain still waits for.
        """

    @property
    def drained(self) -> int:
        """
        Connections drained by the last drain.
        """

    @property
    def aborted(self) -> int:
        """
        Connections aborted by the last drain.
        """


def _limitText(limit: int) -> str:
    return "unlimited" if limit == UNLIMITED else str(limit)


class SecondSignal(Service):
    """
    SIGINT and SIGTERM while the server runs: the first stops the reactor,
    as the reactor's own handlers do; a later one calls back whoever asked
    (L{whenSecond}: the drain, to stop now), instead of stopping the reactor
    again, which would log a C{ReactorNotRunning} traceback.

    Only the reactor's own handlers are replaced, once it runs (the service
    installs them then): not those of a program that runs the reactor
    without them, nor a test runner's.

    @ivar caught: whether the handlers are installed, so that a second
        signal will be caught.
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore) -> None:
        self._reactor = reactor
        self._theirs: dict[int, Callable[[int, FrameType | None], object]] = {}
        self._seen = False
        self._pending = False
        self._callback: Callable[[], object] | None = None
        self.caught = False

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.callWhenRunning(self.install)

    def install(self) -> None:
        """
        Replace the reactor's SIGINT and SIGTERM handlers, where they are
        installed: call this once the reactor runs.
        """
        for signum, theirs in [
            (signal.SIGINT, getattr(self._reactor, "sigInt", None)),
            (signal.SIGTERM, getattr(self._reactor, "sigTerm", None)),
        ]:
            if theirs is not None and signal.getsignal(signum) == theirs:
                self._theirs[signum] = theirs
                signal.signal(signum, self._handle)
                self.caught = True

    def whenSecond(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} on a second signal, or now if one already came.
        """
        self._callback = callback
        if self._pending:
            self._pending = False
            callback()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._seen:
            self._seen = True
            self._theirs[signum](signum, frame)
            return
        self.log.info(
            "Received {signal} again: aborting the connections left",
            signal=signal.Signals(signum).name,
        )
        cast(Any, self._reactor).callFromThread(self._second)

    def _second(self) -> None:
        if self._callback is None:
            self._pending = True
        else:
            self._callback()


class Stoppable(typing.Protocol):
    """
    What L{DrainService} needs of a L{SecondSignal}.
    """

    caught: bool

    def whenSecond(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} on a second signal.
        """


class DrainService(Service):
    """
    At startup, raise the file-descriptor limit; at shutdown, drain the
    factory's connections: what was read gets its reply, then each
    connection closes (write side first), and after C{timeout} seconds
    whatever is left is aborted.

    A second SIGINT or SIGTERM aborts what is left at once, where
    C{signals} catches it.

    @ivar onDrain: called when the drain begins.
    @ivar lingering: services that run alongside and stop only once the
        drain is over (the metrics site, whose /healthz says 503 meanwhile).
    """

    log = Logger()

    def __init__(
        self,
        factory: Drainable,
        timeout: float,
        signals: Stoppable | None = None,
    ) -> None:
        """
        @param signals: catches a second stop signal (a L{SecondSignal});
            by default, nothing does.
        """
        self.factory = factory
        self.timeout = timeout
        self.signals = signals
        self.onDrain: list[Callable[[], object]] = []
        self.lingering: list[IService] = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        for service in self.lingering:
            service.privilegedStartService()
        soft, hard = raiseFileLimit()
        self.log.info(
            "File descriptor limit: {soft} (hard limit {hard})",
            soft=_limitText(soft),
            hard=_limitText(hard),
        )
        wanted = self.factory.settings.maxConnections
        if soft != UNLIMITED and (not wanted or wanted > soft):
            self.log.warn(
                "--max-connections {wanted} is above the file descriptor limit {soft}; "
                "connections past it will be refused by the system",
                wanted=wanted or "(unlimited)",
                soft=soft,
            )

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        for service in self.lingering:
            service.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        for callback in self.onDrain:
            callback()
        factory = self.factory
        count = len(factory.connections)
        if not count:
            self.log.info("Shutting down: no longer accepting; no connection to drain")
        else:
            stoppable = self.signals is not None and self.signals.caught
            self.log.info(
                "Shutting down: no longer accepting; draining {connections}, waiting up "
                "to {timeout:g} s{hint}",
                connections=counted(count, "connection"),
                count=count,
                timeout=self.timeout,
                hint="; press Ctrl-C again to stop now" if stoppable else "",
            )
        d = factory.drain(self.timeout)
        if self.signals is not None:
            self.signals.whenSecond(factory.stopDrainNow)

        def report(_: None) -> None:
            self.log.info(
                "Shutdown complete: {connections} drained, {aborted} aborted",
                connections=counted(factory.drained, "connection"),
                drained=factory.drained,
                aborted=factory.aborted,
            )
            # A drain that finished is a clean exit: status 0, not the signal.
            forgetExitSignal(factory.clock)

        def stopLingering(_: None) -> Deferred[Any]:
            return DeferredList(
                [maybeDeferred(service.stopService) for service in self.lingering]
            )

        return d.addCallback(report).addCallback(stopLingering).addCallback(lambda _: None)


class ReadyAnnouncer(Service):
    """
    Started after every listener: says that the server is ready, once the
    reactor runs. twistd starts services before it runs the reactor, which
    is when it installs its SIGINT and SIGTERM handlers; whoever waits for
    this line may signal the server at once, and must find it able to stop
    cleanly.
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore, waitFor: Deferred[None] | None = None) -> None:
        """
        @param waitFor: fires when the server is ready (the workers are), if
            not as soon as the reactor runs.
        """
        self._reactor = reactor
        self._waitFor = waitFor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.callWhenRunning(self._announce)

    def _announce(self) -> None:
        if self._waitFor is None:
            self._ready()
        else:
            self._waitFor.addCallback(lambda _: self._ready())

    def _ready(self) -> None:
        # Everything made during start-up (modules, Twisted, prometheus_client
        # and twisted.web with --metrics) lives as long as the process: move it
        # out of the garbage collector's sight, so that the collections that
        # serving triggers do not scan it again and again.
        gc.freeze()
        self.log.info(READY_MESSAGE)
