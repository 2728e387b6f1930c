"""
One worker process of C{--workers N}: the child side of
L{sockplay.server.workers}.

The parent binds every listener and passes the sockets down; a worker
adopts them (L{AdoptedEndpoint}, L{AdoptedDatagramService}), serves them
with a factory of its own, drains on SIGTERM, and tells its parent when it
is ready. It gets its settings and socket list from the C{SOCKPLAY_WORKER}
environment variable, as JSON (L{encodeSettings}); L{main} is what
L{sockplay._worker} runs, once it has tied the worker's life to its
parent's.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import socket
import sys
from typing import Any, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorSocket,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogBeginner, textFileLogObserver
from zope.interface import implementer

from sockplay.server.address import describeAddress
from sockplay.server.factory import EchoReplyFactory
from sockplay.server.faultcontrol import Scenario, ScenarioService
from sockplay.server.faultsettings import Faults
from sockplay.server.info import InfoFactory
from sockplay.server.lifecycle import DrainService, SecondSignal
from sockplay.server.listening import (
    MAX_DATAGRAM,
    EchoReplyDatagramProtocol,
    ListenerService,
    quietly,
)
from sockplay.server.proxy import ProxiedEndpoint
from sockplay.server.reactor import chooseReactor
from sockplay.server.settings import ServerSettings, renderProcessTemplate

__all__ = [
    "ENVIRONMENT_KEY",
    "FIRST_FD",
    "AdoptedDatagramService",
    "AdoptedEndpoint",
    "decodeSettings",
    "encodeSettings",
    "main",
]

ENVIRONMENT_KEY = "SOCKPLAY_WORKER"

# Where adopted sockets start in a worker (0, 1, 2 are stdio).
FIRST_FD = 3


def encodeSettings(settings: ServerSettings) -> dict[str, Any]:
    """
    C{settings} as JSON-safe values (bytes as base64, the faults as their
    JSON object).
    """
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, bytes):
            value = {"base64": base64.b64encode(value).decode("ascii")}
        elif isinstance(value, Faults):
            value = value.toJSON()
        out[field.name] = value
    return out


def decodeSettings(data: dict[str, Any]) -> ServerSettings:
    """
    The inverse of L{encodeSettings}.
    """
    values: dict[str, Any] = {
        key: base64.b64decode(value["base64"]) if isinstance(value, dict) else value
        for key, value in data.items()
        if key != "faults"
    }
    return ServerSettings(faults=Faults(**data["faults"]), **values)


def _runWorker(reactor: IReactorCore, spec: dict[str, Any]) -> Deferred[None]:
    """
    A worker: adopt the listening sockets, serve, drain on SIGTERM.
    """
    index = spec["index"]
    log = Logger()
    observer = textFileLogObserver(sys.stdout)

    @implementer(ILogObserver)
    def tagged(event: LogEvent) -> None:
        event = dict(event)
        event["log_system"] = f"worker {index}"
        observer(event)

    globalLogBeginner.beginLoggingTo([tagged], redirectStandardIO=False)
    settings = decodeSettings(spec["settings"])
    factory = EchoReplyFactory(settings, clock=cast(IReactorTime, reactor))
    service = MultiService()
    signals = SecondSignal(reactor)
    signals.setServiceParent(service)  # type: ignore[no-untyped-call]
    drain = DrainService(factory, spec["drainTimeout"], signals)
    drain.setServiceParent(service)  # type: ignore[no-untyped-call]
    if spec.get("scenario") is not None:
        factory.allowFaultChanges()
        # Each stage names every fault, so the base is not used.
        scenario = Scenario.fromJSON(spec["scenario"], Faults())
        ScenarioService(
            scenario, factory, cast(IReactorTime, reactor), spec["startedAt"]
        ).setServiceParent(service)  # type: ignore[no-untyped-call]
    for entry in spec["sockets"]:
        if entry["datagram"]:
            prefix = renderProcessTemplate(settings.prefix, factory.hostname)
            AdoptedDatagramService(
                cast(IReactorSocket, reactor),
                entry["fd"],
                entry["family"],
                EchoReplyDatagramProtocol(prefix),
            ).setServiceParent(service)  # type: ignore[no-untyped-call]
            continue
        endpoint: IStreamServerEndpoint = AdoptedEndpoint(
            cast(IReactorSocket, reactor), entry["fd"], entry["family"]
        )
        if entry["haproxy"]:
            endpoint = ProxiedEndpoint(endpoint)
        if entry["info"]:
            listener = ListenerService(
                f"fd:{entry['fd']}", endpoint, InfoFactory(factory), reactor, "connection info"
            )
        else:
            listener = ListenerService(f"fd:{entry['fd']}", endpoint, factory, reactor)
        listener.setServiceParent(service)  # type: ignore[no-untyped-call]
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)

    def tellParent() -> None:
        # Once the reactor runs, SIGTERM drains rather than kills: only now
        # may the parent announce that the server is ready.
        statusFD = spec["statusFD"]
        try:
            os.write(statusFD, b"ready\n")
        except BrokenPipeError:
            # The parent is gone (it closed its end by dying): stop, as its
            # death signal stops a worker, through the same handler.
            log.info("The parent process is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.close(statusFD)

    reactor.callWhenRunning(tellParent)
    # SIGTERM from the parent stops the reactor, which runs the drain.
    return Deferred()


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    A server endpoint for a socket that is already bound and listening
    (inherited from the parent process).
    """

    def __init__(self, reactor: IReactorSocket, fd: int, family: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._family = family

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        def adopt() -> IListeningPort:
            port = self._reactor.adoptStreamPort(
                self._fd, socket.AddressFamily(self._family), cast(Any, protocolFactory)
            )
            os.close(self._fd)  # adoptStreamPort works on a duplicate
            return port

        return maybeDeferred(adopt)


class AdoptedDatagramService(Service):
    """
    Answer datagrams on a UDP socket that is already bound (inherited from
    the parent process), while running.

    @ivar port: the adopted port, while running.
    """

    log = Logger()

    def __init__(
        self, reactor: IReactorSocket, fd: int, family: int, protocol: DatagramProtocol
    ) -> None:
        self._reactor = reactor
        self._fd = fd
        self._family = family
        self.protocol = protocol
        self.port: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.port = quietly(
            self._reactor.adoptDatagramPort,
            self._fd,
            socket.AddressFamily(self._family),
            self.protocol,
            MAX_DATAGRAM,
        )
        os.close(self._fd)  # adoptDatagramPort works on a duplicate
        self.log.info("Listening on {address} (UDP)", address=describeAddress(self.port.getHost()))

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return None
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)


def main() -> None:
    """
    Serve as a worker, from the settings in C{SOCKPLAY_WORKER}: what
    L{sockplay._worker} runs once it has tied its life to its parent's.
    """
    from twisted.internet.task import react

    raw = os.environ.get(ENVIRONMENT_KEY)
    if not raw:
        print(
            "Error: this is a sockplay worker, started by `twistd sockplay --workers N`",
            file=sys.stderr,
        )
        sys.exit(2)
    # Signals come from the parent only: a Ctrl-C in the terminal reaches the
    # parent, which passes it on once, rather than every worker at once too.
    os.setpgid(0, 0)
    spec = json.loads(raw)
    react(_runWorker, (spec,), chooseReactor(spec.get("reactor")))
