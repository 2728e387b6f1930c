"""
Multi-process serving: C{--workers N}.

The parent process binds every listener, C{--udp} ports included, stops
reading them itself, and starts N worker processes that adopt the sockets
(L{IReactorSocket.adoptStreamPort}, C{adoptDatagramPort}). On Linux, a TCP
listener is N sockets on one port, one per worker, bound with
C{SO_REUSEPORT} (L{sockplay.server.reuseport}): the kernel hashes each new
connection to one worker's socket, and only that worker wakes. Other
listeners (UNIX sockets, sockets handed in, UDP ports), and every listener
on other platforms, are one socket that all the workers share: each new
connection, or datagram, wakes every worker and one of them takes it.
A worker that dies is restarted within a second, on the same sockets: the
parent keeps its copy of each open, so the connections queued on a dead
worker's socket wait there for its successor. On SIGTERM or SIGINT the
parent passes SIGTERM on: each worker drains its own connections (see
L{sockplay.server.lifecycle.DrainService}) and exits, then the parent exits.
A second signal to the parent is passed on too (as SIGINT), and the
workers abort what is left at once. Workers run in a process group of their own, so that a
Ctrl-C in a terminal reaches the parent only, which passes it on once.

A worker dies with its parent: if the parent is killed, even while it is
starting the workers, no worker goes on serving (see L{sockplay._worker},
the worker's entry point, which sees to it before anything slow). A worker
that cannot be started at all ends the program: the workers already started
are stopped, and the parent exits with one line (L{SpawnFailed}).

A worker is a program (C{python -m sockplay._worker PARENT}, which runs
L{sockplay.server.worker.main}); it gets its settings and socket list from
the C{SOCKPLAY_WORKER} environment variable, as JSON.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorCore,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from sockplay.cli import counted
from sockplay.server._twisted import forgetExitSignal
from sockplay.server.address import describeAddress
from sockplay.server.factory import EchoReplyFactory
from sockplay.server.faultcontrol import Scenario
from sockplay.server.lifecycle import Stoppable
from sockplay.server.listening import (
    ListenerService,
    ListenFailed,
    makeEndpoint,
    makeUDPService,
)
from sockplay.server.reactor import nameOf
from sockplay.server.reuseport import ReusePortTCP, canSpreadConnections, perWorkerEndpoint
from sockplay.server.settings import ServerSettings
from sockplay.server.worker import ENVIRONMENT_KEY, FIRST_FD, encodeSettings

__all__ = [
    "MAX_WORKERS",
    "WORKER_MODULE",
    "SpawnFailed",
    "WorkerPoolService",
]

# What a worker process runs: a module outside sockplay.server, whose imports
# take half a second, so that the worker ties its life to the parent's
# before anything slow (see sockplay._worker).
WORKER_MODULE = "sockplay._worker"

# The most --workers: one per core is typical, and each worker is a whole
# Python process (about 50 MB), so more workers than cores add memory and
# no throughput. 256 is more cores than common servers have; a count far
# beyond it is a typo that would exhaust the process limit or the memory.
MAX_WORKERS = 256

# A worker that dies is restarted after this long, doubling while it keeps
# dying quickly, up to RESTART_MAX: within a second, without a tight loop.
RESTART_DELAY = 0.1
RESTART_MAX = 1.0
# A worker that ran this long before dying is not crash-looping.
STABLE_AFTER = 5.0

class SpawnFailed(SystemExit):
    """
    A worker process could not be started. Raised as a L{SystemExit} so
    that twistd and C{python -m sockplay.server} end with its one-line
    message and exit status 1 rather than a traceback.
    """


def _spawnFailure(index: int, count: int, error: OSError) -> SpawnFailed:
    """
    The one-line error for worker C{index} of C{count} that could not be
    started because of C{error}.
    """
    if error.errno == errno.EAGAIN:
        # What fork and posix_spawn say at the process limit (ulimit -u).
        return SpawnFailed(
            f"Error: cannot start worker {index} of {count}: too many processes "
            "(the limit is ulimit -u); lower --workers or raise that limit"
        )
    return SpawnFailed(
        f"Error: cannot start worker {index} of {count}: {error.strerror or error}"
    )


class _WorkerProcess(ProcessProtocol):
    """
    Watches one worker process for its pool.
    """

    def __init__(self, pool: WorkerPoolService, index: int, statusFD: int) -> None:
        self.pool = pool
        self.index = index
        self.statusFD = statusFD
        self.exited: Deferred[None] = Deferred()
        self.ready: Deferred[None] = Deferred()
        self.startedAt = 0.0

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self.statusFD and b"ready" in data and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        self.exited.callback(None)
        self.pool.workerEnded(self, reason)


class _Listener(NamedTuple):
    """
    A listener the parent binds and the workers serve.

    @ivar ports: its listening ports, bound in the parent but not read
        there: one that every worker shares, or one per worker (by index,
        from 1), all on one port.
    @ivar description: what the log calls it.
    @ivar family: its address family.
    @ivar haproxy: whether its connections start with a PROXY header.
    @ivar datagram: whether it is a UDP port.
    @ivar info: whether it is a C{--info} listener.
    """

    ports: tuple[Any, ...]
    description: str
    family: int
    haproxy: bool
    datagram: bool
    info: bool = False

    def forWorker(self, index: int) -> Any:
        """
        The port that worker C{index} serves: always the same one, so that a
        restarted worker takes over the connections queued for the one it
        replaces.
        """
        return self.ports[0] if len(self.ports) == 1 else self.ports[index - 1]


class WorkerPoolService(Service):
    """
    Bind the listeners, run N workers on them, keep them running, and stop
    them gracefully.

    @ivar listening: the listeners, bound in this process but not read.
    @ivar reusePort: whether each worker gets a socket of its own on a TCP
        listener (L{sockplay.server.reuseport}), rather than one that they
        all share.
    @ivar processes: the live worker processes, by index.
    """

    log = Logger()

    def __init__(
        self,
        count: int,
        listeners: list[tuple[str, Any]],
        settings: ServerSettings,
        drainTimeout: float,
        reactor: IReactorCore,
        datagrams: Sequence[tuple[int, str]] = (),
        signals: Stoppable | None = None,
        reusePort: bool | None = None,
        info: Sequence[tuple[str, Any]] = (),
        scenario: Scenario | None = None,
    ) -> None:
        """
        @param listeners: each stream listener's description and endpoint.
        @param datagrams: each UDP listener's port and interface.
        @param info: each C{--info} listener's description and endpoint.
        @param scenario: the C{--scenario} every worker runs, timed from
            when this service starts (so a restarted worker joins it at the
            stage due, rather than starting it over).
        @param signals: catches a second stop signal, to pass it on.
        @param reusePort: whether to give each worker a socket of its own on
            a TCP listener; by default, where the platform spreads
            connections over such sockets (L{canSpreadConnections}).
        """
        self.signals = signals
        self.count = count
        self.listeners = listeners
        self.datagrams = list(datagrams)
        self.info = list(info)
        self.settings = settings
        self.scenario = scenario
        self._startedAt = 0.0
        self.drainTimeout = drainTimeout
        self._reactor = reactor
        self.reusePort = canSpreadConnections() if reusePort is None else reusePort
        self.listening: list[_Listener] = []
        self.processes: dict[int, _WorkerProcess] = {}
        self.transports: dict[int, IProcessTransport] = {}
        self._delays: dict[int, float] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._waitingFor: list[Deferred[None]] = []
        self.ready: Deferred[None] = Deferred()

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self.listening = _bindAll(
            self.listeners, self.datagrams, self.count if self.reusePort else 1,
            self.settings, self._reactor, self.info,
        )

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._startedAt = self._reactor.seconds()  # type: ignore[attr-defined]
        for listener in self.listening:
            self.log.info(
                "Serving connection info on {address} ({description}) with {count} workers"
                if listener.info
                else "Listening on {address} ({description}) with {count} workers",
                address=describeAddress(listener.ports[0].getHost()),
                description=listener.description,
                count=self.count,
                socketsPerWorker=len(listener.ports) > 1,
            )
        for index in range(1, self.count + 1):
            try:
                self._spawn(index)
            except OSError as e:
                # Serving with fewer workers than asked would hide the
                # problem; the workers started so far are stopped (a worker
                # not yet handling signals dies of this one at once).
                self._stopping = True
                self._signalWorkers("TERM")
                raise _spawnFailure(index, self.count, e) from None
        # Ready once every first worker accepts (or has died trying, and
        # will be restarted).
        waits = [d.addErrback(lambda _: None) for d in self._waitingFor]
        DeferredList(waits).addCallback(lambda _: self.ready.callback(None))

    def _spec(self, index: int) -> str:
        return json.dumps(
            {
                "index": index,
                "settings": encodeSettings(self.settings),
                "drainTimeout": self.drainTimeout,
                # The workers run on the reactor this process runs on.
                "reactor": nameOf(self._reactor),
                "sockets": [
                    {
                        "fd": FIRST_FD + n,
                        "family": int(listener.family),
                        "haproxy": listener.haproxy,
                        "datagram": listener.datagram,
                        "info": listener.info,
                    }
                    for n, listener in enumerate(self.listening)
                ],
                "statusFD": FIRST_FD + len(self.listening),
                "scenario": None if self.scenario is None else self.scenario.toJSON(),
                # The reactors' clocks are the system's: the same in every worker.
                "startedAt": self._startedAt,
            }
        )

    def _spawn(self, index: int) -> None:
        """
        Start worker C{index}.

        @raise OSError: if the process cannot be started.
        """
        self._restarts.pop(index, None)
        childFDs: dict[int, int | str] = {1: 1, 2: 2}
        for n, listener in enumerate(self.listening):
            childFDs[FIRST_FD + n] = listener.forWorker(index).fileno()
        statusFD = FIRST_FD + len(self.listening)
        childFDs[statusFD] = "r"
        env = dict(os.environ)
        env[ENVIRONMENT_KEY] = self._spec(index)
        process = _WorkerProcess(self, index, statusFD)
        process.startedAt = cast(IReactorTime, self._reactor).seconds()
        transport = cast(IReactorProcess, self._reactor).spawnProcess(
            process,
            sys.executable,
            # The worker checks that this process is still its parent.
            [sys.executable, "-m", WORKER_MODULE, str(os.getpid())],
            env=env,
            childFDs=childFDs,
        )
        self.processes[index] = process
        if not self.ready.called:
            self._waitingFor.append(process.ready)
        self.transports[index] = transport
        self.log.info(
            "Worker {index} started (pid {pid})", index=index, pid=transport.pid
        )

    def workerEnded(self, process: _WorkerProcess, reason: Failure) -> None:
        index = process.index
        if self.processes.get(index) is process:
            del self.processes[index]
            self.transports.pop(index, None)
        if self._stopping:
            return
        clock = cast(IReactorTime, self._reactor)
        ranFor = clock.seconds() - process.startedAt
        delay = self._delays.get(index, RESTART_DELAY)
        delay = RESTART_DELAY if ranFor >= STABLE_AFTER else min(delay * 2, RESTART_MAX)
        self._delays[index] = delay
        how = "exited" if reason.check(ProcessDone) else reason.getErrorMessage()
        self.log.warn(
            "Worker {index} {how}; restarting in {delay:g} s", index=index, how=how, delay=delay
        )
        self._restarts[index] = clock.callLater(delay, self._restart, index)

    def _restart(self, index: int) -> None:
        """
        Start worker C{index} again; if it cannot be started now (the
        process limit may be reached only for a while), try again later,
        with the same backoff as a worker that keeps dying.
        """
        try:
            self._spawn(index)
        except OSError as e:
            delay = min(self._delays.get(index, RESTART_DELAY) * 2, RESTART_MAX)
            self._delays[index] = delay
            self.log.error(
                "Cannot restart worker {index}: {reason}; trying again in {delay:g} s",
                index=index,
                reason=e.strerror or str(e),
                delay=delay,
            )
            clock = cast(IReactorTime, self._reactor)
            self._restarts[index] = clock.callLater(delay, self._restart, index)

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        # Already stopping: the start failed, and no signal is being handled.
        failedStart, self._stopping = self._stopping, True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waits = [process.exited for process in self.processes.values()]
        stoppable = self.signals is not None and self.signals.caught and not failedStart
        if self.signals is not None:
            # Another signal than the first: two of the same sent in quick
            # succession can reach a worker as one.
            self.signals.whenSecond(lambda: self._signalWorkers("INT"))
        self.log.info(
            "Stopping {workers}{hint}",
            workers=counted(len(waits), "worker"),
            count=len(waits),
            hint="; press Ctrl-C again to stop now" if stoppable and waits else "",
        )
        self._signalWorkers("TERM")
        clock = cast(IReactorTime, self._reactor)
        # A worker that does not finish its drain in time is killed.
        killer = clock.callLater(self.drainTimeout + 5, self._killAll)
        done = DeferredList(waits) if waits else succeed([])

        def finished(result: object) -> None:
            if killer.active():
                killer.cancel()
            for listener in self.listening:
                for port in listener.ports:
                    port.stopListening()
            self.log.info("All workers stopped")
            forgetExitSignal(self._reactor)

        return done.addCallback(finished)

    def _signalWorkers(self, name: str) -> None:
        """
        Send signal C{name} to every worker: the first signal drains, a
        second aborts what the drain still waits for.
        """
        for transport in list(self.transports.values()):
            try:
                transport.signalProcess(name)
            except Exception:  # already gone
                pass

    def _killAll(self) -> None:
        for transport in list(self.transports.values()):
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass


def _bindAll(
    listeners: Sequence[tuple[str, Any]],
    datagrams: Sequence[tuple[int, str]],
    perWorker: int,
    settings: ServerSettings,
    reactor: IReactorCore,
    info: Sequence[tuple[str, Any]] = (),
) -> list[_Listener]:
    """
    Bind every listener now, for the workers to accept on; or end the
    program with one line if one cannot be bound.

    @param perWorker: sockets to make for each TCP listener that can have
        one per worker (see L{perWorkerEndpoint}): the worker count, or 1
        for one socket that the workers share.
    @param info: the C{--info} listeners, bound as the others are.
    """
    # The factory is never used here: this process does not accept.
    factory = EchoReplyFactory(settings, clock=cast(IReactorTime, reactor))
    listening = []
    kinds = [(d, e, False) for d, e in listeners] + [(d, e, True) for d, e in info]
    for description, endpoint, isInfo in kinds:
        if perWorker > 1 and perWorkerEndpoint(endpoint):
            group = ReusePortTCP(cast(IReactorTCP, reactor))
            ports = tuple(
                _bind(description, makeEndpoint(cast(Any, group), description), factory, reactor)
                for _ in range(perWorker)
            )
        else:
            ports = (_bind(description, endpoint, factory, reactor),)
        family = getattr(ports[0], "addressFamily", socket.AF_INET)
        listening.append(
            _Listener(
                ports, description, family, description.startswith("haproxy:"), False, isInfo
            )
        )
    for number, interface in datagrams:
        udp = makeUDPService(number, interface, b"", cast(IReactorUDP, reactor))
        udp.privilegedStartService()
        udpPort = udp.port
        udpPort.stopReading()
        listening.append(_Listener((udpPort,), "UDP", udpPort.addressFamily, False, True))
    return listening


def _bind(
    description: str,
    endpoint: IStreamServerEndpoint,
    factory: EchoReplyFactory,
    reactor: IReactorCore,
) -> Any:
    """
    Listen on C{endpoint} now, and leave the accepting to the workers.

    @return: the listening port, not read in this process.
    @raise ListenFailed: if it cannot listen, or its port cannot be
        handed to a worker.
    """
    listener = ListenerService(description, endpoint, factory, reactor)
    listener.privilegedStartService()
    port = listener.port
    assert port is not None
    stopReading = getattr(port, "stopReading", None)
    if stopReading is None or not hasattr(port, "fileno"):
        raise ListenFailed(f"Error: --workers cannot share the listener {description}")
    stopReading()
    return port
