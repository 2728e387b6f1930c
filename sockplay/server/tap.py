"""
The twistd plugin's options and service: C{twistd -n sockplay [options]}.

L{Options} parses the command line; L{makeService} turns it into a
L{MultiService} with one listening service per C{--listen}. The same pair
backs C{python -m sockplay.server}.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from sockplay.cli import number
from sockplay.framing import DEFAULT_MAX_MESSAGE, FRAMINGS, framingOption
from sockplay.server.listening import ListenerService, ListenFailed
from sockplay.server.protocol import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PREFIX,
    EchoReplyFactory,
    ServerSettings,
    renderProcessTemplate,
)
from sockplay.server.proxy import ProxiedEndpoint

__all__ = [
    "DEFAULT_LISTEN",
    "DrainService",
    "ListenFailed",
    "ListenerService",
    "Options",
    "exitCleanly",
    "makeService",
    "raiseFileLimit",
]

# Loopback unless the operator opts out: a test endpoint should not appear
# on a network by accident.
DEFAULT_LISTEN = "tcp:12345:interface=127.0.0.1"

READY_MESSAGE = "Server is running, waiting for connections..."

# Long enough for in-flight replies on a loaded server; shorter than the
# usual 30 s a supervisor (systemd, Kubernetes) waits before SIGKILL.
DEFAULT_DRAIN_TIMEOUT = 10.0


class Options(usage.Options):
    """
    Command-line options of the sockplay server.
    """

    synopsis = "[options]"
    longdesc = (
        "A TCP request/reply (echo-reply) server: every message gets "
        "'Message received: <message>' back. By default one message, one "
        "reply, then close, like the classic socket tutorial."
    )

    optFlags = [
        ["keep-open", "k", "Answer every message until the client closes (not with eof framing)."],
        ["quiet", "q", "No per-connection log events (startup, shutdown and errors remain)."],
    ]
    optParameters = [
        ["framing", "f", "raw", "What one message is: raw (one read), line (up to LF), "
         "eof (until the client half-closes), int32 (4-byte big-endian length prefix).",
         framingOption],
        ["prefix", "p", DEFAULT_PREFIX.decode("utf-8"),
         "Text put before each message in its reply; {hostname}, {listener}, {peer} and "
         "{pid} are filled in per connection."],
        ["max-message", "m", DEFAULT_MAX_MESSAGE, "Largest message accepted, in bytes.",
         number("--max-message", int, 1)],
        ["idle-timeout", None, DEFAULT_IDLE_TIMEOUT,
         "Seconds a connection may go without completing a message (0: no limit).",
         number("--idle-timeout", float, 0.0)],
        ["max-connections", None, DEFAULT_MAX_CONNECTIONS,
         "Most connections open at once (0: no limit).", number("--max-connections", int, 0)],
        ["max-per-peer", None, 0, "Most connections open at once from one IP address "
         "(0: no limit).", number("--max-per-peer", int, 0)],
        ["drain-timeout", None, DEFAULT_DRAIN_TIMEOUT, "On SIGTERM or SIGINT, seconds to let "
         "open connections finish before they are aborted.",
         number("--drain-timeout", float, 0.0)],
        ["metrics", None, None, "Serve Prometheus /metrics and /healthz over HTTP on this "
         "endpoint, such as tcp:9100:interface=127.0.0.1."],
        ["udp-interface", None, "127.0.0.1", "Address the --udp listeners bind to."],
        ["workers", "w", 1, "Worker processes sharing the listeners (one per core is "
         "typical). A worker that dies is restarted.", number("--workers", int, 1)],
        ["banner", None, None, "Text the server sends on connect, before reading, framed "
         "(for protocol-detection tests)."],
        ["delay", None, 0.0, "Seconds to wait before each reply (a timer; never blocks).",
         number("--delay", float, 0.0)],
        ["drop-rate", None, 0.0, "Probability (0-1) that a message is answered by closing "
         "without a reply.", number("--drop-rate", float, 0.0, 1.0)],
        ["reset-rate", None, 0.0, "Probability (0-1) that a message is answered by a reset "
         "(RST) without a reply.", number("--reset-rate", float, 0.0, 1.0)],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []
        self["udp"] = []

    def opt_udp(self, port: str) -> None:
        """
        Also answer UDP datagrams on this port (one datagram, one reply). Repeatable.
        """
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not 0 <= number < 65536:
            raise usage.UsageError(f"--udp must be a port number from 0 to 65535, not {port!r}")
        self["udp"].append(number)

    def opt_listen(self, description: str) -> None:
        """
        Where to listen: a Twisted endpoint string (tcp:, tcp6:, unix:, ssl:...). Repeatable.
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["keep-open"] and FRAMINGS[self["framing"]].needsEndOfInput:
            raise usage.UsageError(
                f"--keep-open cannot be used with --framing {self['framing']}: "
                "the message ends only when the client half-closes"
            )
        if self["workers"] > 1 and self["metrics"]:
            raise usage.UsageError(
                "--metrics cannot be used with --workers: each worker counts its own "
                "connections; run one server per core with its own --metrics instead"
            )
        if self["workers"] > 1:
            for description in self["listen"]:
                if description.split(":", 1)[0] == "ssl" or ":ssl:" in description:
                    raise usage.UsageError(
                        f"--workers cannot share the TLS listener {description!r}; "
                        "run one server per core behind a TCP load balancer instead"
                    )
        if self["drop-rate"] + self["reset-rate"] > 1:
            raise usage.UsageError("--drop-rate and --reset-rate add up to more than 1")
        # UTF-8, but any byte the shell passes is kept as it is.
        self["prefix"] = self["prefix"].encode("utf-8", "surrogateescape")
        if self["banner"] is not None:
            self["banner"] = self["banner"].encode("utf-8", "surrogateescape")
        for option, description in [("--listen", d) for d in self["listen"]] + (
            [("--metrics", self["metrics"])] if self["metrics"] else []
        ):
            try:
                # Parsing builds the endpoint without touching the reactor
                # (an ssl: endpoint loads its certificate here, so a missing
                # file is reported now rather than at startup).
                makeEndpoint(cast(Any, None), description)
            except Exception as e:
                reason = str(e)
                if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
                    reason = (
                        "no such socket was passed in; this endpoint is for socket "
                        "activation (systemd sets LISTEN_FDS and LISTEN_FDNAMES; with "
                        "systemd-socket-activate, pass --fdname)"
                    )
                raise usage.UsageError(f"bad {option} {description!r}: {reason}") from None

    def settings(self) -> ServerSettings:
        """
        The server settings these options describe.
        """
        return ServerSettings(
            framing=self["framing"],
            keepOpen=bool(self["keep-open"]),
            prefix=self["prefix"],
            maxMessage=self["max-message"],
            idleTimeout=self["idle-timeout"],
            maxConnections=self["max-connections"],
            maxPerPeer=self["max-per-peer"],
            quiet=bool(self["quiet"]),
            banner=self["banner"],
            delay=self["delay"],
            dropRate=self["drop-rate"],
            resetRate=self["reset-rate"],
        )


class DrainService(Service):
    """
    At startup, raise the file-descriptor limit; at shutdown, drain the
    factory's connections: what was read gets its reply, then each
    connection closes (write side first), and after C{timeout} seconds
    whatever is left is aborted.
    """

    log = Logger()

    def __init__(self, factory: EchoReplyFactory, timeout: float) -> None:
        self.factory = factory
        self.timeout = timeout
        # Called when the drain begins.
        self.onDrain: list[Callable[[], object]] = []
        # Services that run alongside and stop only once the drain is over.
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
        if soft != _UNLIMITED and (not wanted or wanted > soft):
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
        count = len(self.factory.connections)
        self.log.info(
            "Shutting down: no longer accepting; draining {count} connections "
            "(up to {timeout:g} s)",
            count=count,
            timeout=self.timeout,
        )
        d = self.factory.drain(self.timeout)

        def report(_: None) -> None:
            self.log.info(
                "Shutdown complete: {drained} connections drained, {aborted} aborted",
                drained=self.factory.drained,
                aborted=self.factory.aborted,
            )
            exitCleanly(self.factory.clock)

        def stopLingering(_: None) -> Deferred[Any]:
            return DeferredList(
                [maybeDeferred(service.stopService) for service in self.lingering]
            )

        return d.addCallback(report).addCallback(stopLingering).addCallback(lambda _: None)


_UNLIMITED = -1


def exitCleanly(reactor: object) -> None:
    """
    A drain that finished is a clean exit: status 0.

    twistd records the signal that stopped the reactor and, once the reactor
    has stopped, kills itself with that same signal (exit status -15 for
    SIGTERM). A graceful drain is the designed way to stop sockplay, so it
    forgets the signal. This uses the private attribute that twistd reads;
    if a future Twisted drops it, the exit status is the signal again.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]


def _limitText(limit: int) -> str:
    return "unlimited" if limit == _UNLIMITED else str(limit)


def raiseFileLimit() -> tuple[int, int]:
    """
    Raise the soft limit on open file descriptors (RLIMIT_NOFILE) as far as
    the hard limit allows: each connection is one descriptor.

    @return: the soft and hard limits now in force (-1 for unlimited).
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return _UNLIMITED, _UNLIMITED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # The kernel refuses "infinity" for this limit; nr_open is its real cap.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1024 * 1024
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    return (_UNLIMITED if soft == infinity else soft, _UNLIMITED if hard == infinity else hard)


class _ReadyAnnouncer(Service):
    """
    Started after every listener: says that the server is ready, once the
    reactor runs. twistd starts services before it runs the reactor, which
    is when it installs its SIGINT and SIGTERM handlers; whoever waits for
    this line may signal the server at once, and must find it able to stop
    cleanly.
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore, waitFor: Deferred[None] | None = None) -> None:
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


def makeFactory(config: Options, reactor: IReactorCore | None = None) -> EchoReplyFactory:
    """
    The protocol factory that C{config} describes.
    """
    return EchoReplyFactory(config.settings(), clock=cast(Any, reactor))


# Twisted's default listen backlog is 50: a burst of one-shot clients
# overflows it and connects then wait for SYN retransmits. The kernel caps
# this at net.core.somaxconn.
DEFAULT_BACKLOG = 1024

_BACKLOG_ENDPOINTS = ("tcp", "tcp6", "ssl", "unix")


def makeEndpoint(reactor: IReactorCore, description: str) -> IStreamServerEndpoint:
    """
    The server endpoint for C{description}, with a raised backlog (see
    L{withBacklog}). C{haproxy:} endpoints use sockplay's PROXY wrapper,
    which lets the protocol see the original client from its first moment.
    """
    description = withBacklog(description)
    if description.startswith("haproxy:"):
        return ProxiedEndpoint(serverFromString(reactor, description[len("haproxy:"):]))
    return cast(IStreamServerEndpoint, serverFromString(reactor, description))


def withBacklog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Add C{backlog=} to a TCP, TCP6, SSL or UNIX endpoint string (also inside
    C{haproxy:}) that does not set one.
    """
    inner = description[len("haproxy:"):] if description.startswith("haproxy:") else description
    kind = inner.split(":", 1)[0]
    if kind not in _BACKLOG_ENDPOINTS or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def makeService(config: Options, reactor: IReactorCore | None = None) -> IService:
    """
    Build the server that C{config} describes: a L{MultiService} with one
    L{ListenerService} per C{--listen}, all sharing one factory, and a
    L{DrainService} that drains the connections at shutdown.

    @param reactor: the reactor to listen with; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = cast(IReactorCore, globalReactor)
    factory = makeFactory(config, reactor)
    parent = MultiService()
    if config["workers"] > 1:
        from sockplay.server.workers import WorkerPoolService

        listeners = [
            (description, makeEndpoint(reactor, description)) for description in config["listen"]
        ]
        pool = WorkerPoolService(
            config["workers"], listeners, factory.settings, config["drain-timeout"], reactor
        )
        pool.setServiceParent(parent)  # type: ignore[no-untyped-call]
        announcer = _ReadyAnnouncer(reactor, pool.ready)
        announcer.setServiceParent(parent)  # type: ignore[no-untyped-call]
        return parent
    # Stopped last (services stop in reverse order): every listener has
    # stopped accepting by the time the drain begins.
    drain = DrainService(factory, config["drain-timeout"])
    drain.setServiceParent(parent)  # type: ignore[no-untyped-call]
    if config["metrics"]:
        from sockplay.server.metrics import Metrics, makeMetricsService

        metrics = Metrics()
        factory.openedObservers.append(metrics.connectionOpened)
        factory.observers.append(metrics.connectionClosed)
        drain.onDrain.append(lambda: setattr(metrics, "draining", True))
        # Serves through the drain (/healthz says 503), stops after it.
        drain.lingering.append(makeMetricsService(config["metrics"], metrics, reactor))
    for description in config["listen"]:
        endpoint = makeEndpoint(reactor, description)
        ListenerService(description, endpoint, factory, reactor).setServiceParent(parent)  # type: ignore[no-untyped-call]
    if config["udp"]:
        from sockplay.server.udp import makeUDPService

        prefix = renderProcessTemplate(factory.settings.prefix, factory.hostname)
        for port in config["udp"]:
            udp = makeUDPService(port, config["udp-interface"], prefix, cast(Any, reactor))
            udp.setServiceParent(parent)  # type: ignore[no-untyped-call]
    _ReadyAnnouncer(reactor).setServiceParent(parent)  # type: ignore[no-untyped-call]
    return parent
