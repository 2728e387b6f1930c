"""
The twistd plugin's options and service: C{twistd -n sockplay [options]}.

L{Options} parses the command line; L{makeService} assembles the server it
describes from the parts in this package. The same pair backs
C{python -m sockplay.server}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from cryptography import x509
from twisted.application.service import IService, MultiService
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IReactorCore, IReactorTime, IStreamServerEndpoint
from twisted.python import usage

from sockplay.cli import DEFAULT_PORT, CommandOptions, number
from sockplay.framing import DEFAULT_MAX_MESSAGE, checkKeepOpen, framingOption
from sockplay.server.factory import EchoReplyFactory
from sockplay.server.faultcontrol import FaultsPage, Scenario, ScenarioError, ScenarioService
from sockplay.server.faultsettings import OPTION_OF, Faults, FaultsError
from sockplay.server.lifecycle import DrainService, ReadyAnnouncer, SecondSignal
from sockplay.server.listening import ListenerService, isTLS, makeEndpoint, makeUDPService
from sockplay.server.reactor import chooseReactor, reactorName
from sockplay.server.settings import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PREFIX,
    ServerSettings,
    renderProcessTemplate,
)
from sockplay.server.tls import ClientCAError, loadClientCAs
from sockplay.server.workers import MAX_WORKERS, WorkerPoolService

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "DEFAULT_LISTEN", "LOOPBACK", "Options", "makeService"]

# Loopback unless the operator opts out: a test endpoint should not appear
# on a network by accident. --port listens here too.
LOOPBACK = "127.0.0.1"
DEFAULT_LISTEN = f"tcp:{DEFAULT_PORT}:interface={LOOPBACK}"

# A port to listen on: 0 lets the system pick a free one.
_listenPort = number("--port", int, 0, 65535)
_udpPort = number("--udp", int, 0, 65535)


def _udpInterface(value: str) -> str:
    """
    The address the C{--udp} listeners bind to: an IPv4 or IPv6 address,
    or C{""} for every IPv4 address (what Twisted's UDP port accepts; it
    takes no host name).
    """
    if value and not (isIPAddress(value) or isIPv6Address(value)):
        raise ValueError(
            f"--udp-interface must be an IPv4 or IPv6 address (such as 127.0.0.1 or ::1), "
            f"not {value!r}"
        )
    return value


_udpInterface.coerceDoc = ""  # type: ignore[attr-defined]

# Long enough for in-flight replies on a loaded server; shorter than the
# usual 30 s a supervisor (systemd, Kubernetes) waits before SIGKILL.
DEFAULT_DRAIN_TIMEOUT = 10.0


_Method = TypeVar("_Method", bound=Callable[..., None])


def _helpText(method: _Method) -> _Method:
    """
    Twisted shows an option method's docstring as its help, indentation
    and all: make it one line of single spaces.
    """
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method


class Options(CommandOptions):
    """
    Command-line options of the sockplay server.
    """

    program = "python -m sockplay.server"
    longdesc = (
        "A TCP request/reply (echo-reply) server: every message gets "
        "'Message received: <message>' back. By default one message, one "
        "reply, then close, like the classic socket tutorial."
    )

    optFlags = [
        ["keep-open", "k", "Answer every message until the client closes (not with eof framing)."],
        ["quiet", "q", "No per-connection log events (startup, shutdown and errors remain)."],
        ["trace", None, "Log every protocol event of every connection (chunks, messages, "
         "replies, half-closes), one line each."],
    ]
    optParameters = [
        ["framing", "f", "raw", "What one message is: raw (one read), line (up to LF), "
         "eof (until the client half-closes), int32 (4-byte big-endian length prefix).",
         framingOption],
        ["prefix", None, DEFAULT_PREFIX.decode("utf-8"),
         "Text put before each message in its reply; {hostname}, {listener}, {peer} and "
         "{pid} are filled in per connection."],
        ["max-message", None, DEFAULT_MAX_MESSAGE, "Largest message accepted, in bytes.",
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
        ["web", None, None, "Serve the playground, a live view of every connection in a "
         "browser, on this endpoint, such as tcp:8080:interface=127.0.0.1."],
        ["tls-client-ca", None, None, "Make every ssl: listener (--listen and --info) "
         "require a client certificate signed by a CA in this PEM file (mutual TLS)."],
        ["udp-interface", None, "127.0.0.1", "Address the --udp listeners bind to (an IPv4 "
         "or IPv6 address; '' for every IPv4 address).", _udpInterface],
        ["workers", "w", 1, "Worker processes sharing the listeners (one per core is "
         f"typical; at most {MAX_WORKERS}). A worker that dies is restarted.",
         number("--workers", int, 1, MAX_WORKERS)],
        ["banner", None, None, "Text the server sends on connect, before reading, framed "
         "(for protocol-detection tests)."],
        ["delay", None, 0.0, "Seconds to wait before each reply (a timer; never blocks).",
         number("--delay", float, 0.0)],
        ["jitter", None, 0.0, "At most this many seconds more before each reply, drawn "
         "uniformly per reply (added to --delay).", number("--jitter", float, 0.0)],
        ["drop-rate", None, 0.0, "Probability (0-1) that a message is answered by closing "
         "without a reply.", number("--drop-rate", float, 0.0, 1.0)],
        ["reset-rate", None, 0.0, "Probability (0-1) that a message is answered by a reset "
         "(RST) without a reply.", number("--reset-rate", float, 0.0, 1.0)],
        ["truncate-rate", None, 0.0, "Probability (0-1) that a message gets the first half "
         "of its reply, then a close.", number("--truncate-rate", float, 0.0, 1.0)],
        ["stall-rate", None, 0.0, "Probability (0-1) that a message is never answered: the "
         "connection is held (a half-close does not end it) until --idle-timeout does.",
         number("--stall-rate", float, 0.0, 1.0)],
        ["cut-after", None, 0.0, "Reset every connection this many seconds after it opened "
         "(0: never).", number("--cut-after", float, 0.0)],
        ["throttle", None, 0, "Write replies no faster than this many bytes a second, per "
         "connection (0: no limit).", number("--throttle", int, 0)],
        ["scenario", None, None, "A JSON file of timed stages of faults, such as "
         '{"stages": [{"at": 0, "delay": 0}, {"at": 10, "dropRate": 0.2}]}: each stage '
         "changes the faults (as PUT /faults does) at its second after startup."],
        ["reactor", None, None, "The Twisted reactor to run on, by the names twistd "
         "--help-reactors lists ('epoll' for Twisted's own). [default: sockplay, "
         "Twisted's epoll reactor with less work per event, where the platform has epoll]",
         reactorName],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []
        self["info"] = []
        self["websocket"] = []
        self["udp"] = []
        # The --tls-client-ca certificates, once read.
        self.clientCAs: list[x509.Certificate] = []
        self.scenario: Scenario | None = None

    @_helpText
    def opt_udp(self, port: str) -> None:
        """
        Also answer UDP datagrams on this port (one datagram, one reply). Repeatable.
        """
        try:
            self["udp"].append(_udpPort(port))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    @_helpText
    def opt_listen(self, description: str) -> None:
        """
        Where to listen: a Twisted endpoint string (tcp:, tcp6:, unix:,
        ssl:...). Repeatable. [default: tcp:12345:interface=127.0.0.1]
        """
        self["listen"].append(description)

    opt_l = opt_listen

    @_helpText
    def opt_info(self, description: str) -> None:
        """
        Also listen on this endpoint (tcp:, ssl:, haproxy:...) for connection
        info: each client gets one line of JSON saying what the server sees
        of its connection (addresses, PROXY header, TLS), then the server
        closes. Repeatable.
        """
        self["info"].append(description)

    @_helpText
    def opt_websocket(self, description: str) -> None:
        """
        Also answer over WebSocket on this endpoint (tcp:, ssl: for wss://):
        each message gets its reply as a message of the same kind (text or
        binary), every path upgrades. Repeatable.
        """
        self["websocket"].append(description)

    @_helpText
    def opt_port(self, port: str) -> None:
        """
        Listen on this TCP port of 127.0.0.1: short for --listen
        tcp:PORT:interface=127.0.0.1. Repeatable; combines with --listen.
        """
        try:
            number_ = _listenPort(port)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["listen"].append(f"tcp:{number_}:interface={LOOPBACK}")

    opt_p = opt_port

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}, with usage errors in sockplay's words. Under twistd
        (this is its C{sockplay} sub-command), which would print its whole
        help before the error, say instead what is wrong and where help is,
        and exit 2, as C{python -m sockplay.server} does.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            print(f"Error: {e}", file=sys.stderr)
            print(f"Try '{self._command()} --help'.", file=sys.stderr)
            raise SystemExit(2) from None

    def _command(self) -> str:
        """
        How the runner that parses these options as a sub-command is run:
        C{twistd sockplay}, or C{twist sockplay} (also C{python -m twisted}).
        """
        runner = "twist" if type(self.parent).__name__ == "TwistOptions" else "twistd"
        return f"{runner} sockplay"

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["keep-open"]:
            try:
                checkKeepOpen(self["framing"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        faults = self.faults()
        if self["scenario"] is not None:
            try:
                self.scenario = Scenario.load(self["scenario"], faults)
            except ScenarioError as e:
                raise usage.UsageError(f"bad --scenario {self['scenario']!r}: {e}") from None
        if self["reactor"] is not None and self.parent is not None and _reactorInstalled():
            raise usage.UsageError(
                "the reactor is chosen twice: give either twistd's --reactor (before "
                "'sockplay') or sockplay's --reactor, not both"
            )
        if self["tls-client-ca"] is not None:
            try:
                self.clientCAs = loadClientCAs(self["tls-client-ca"])
            except ClientCAError as e:
                raise usage.UsageError(f"bad --tls-client-ca: {e}") from None
        endpoints = self._endpoints()
        if self["tls-client-ca"] is not None and not any(
            isTLS(endpoint) for _, endpoint in endpoints
        ):
            raise usage.UsageError(
                "--tls-client-ca needs an ssl: listener (--listen ssl:..., --info ssl:... "
                "or --websocket ssl:...)"
            )
        if self["workers"] > 1 and (self["web"] or self["trace"]):
            raise usage.UsageError(
                f"{'--web' if self['web'] else '--trace'} cannot be used with --workers: it "
                "shows one process's connections; drop --workers"
            )
        if self["workers"] > 1 and self["websocket"]:
            raise usage.UsageError(
                "--websocket cannot be used with --workers: run one server per core with "
                "its own --websocket instead"
            )
        for description in self["websocket"]:
            if description.startswith("haproxy:"):
                raise usage.UsageError(
                    f"--websocket {description!r}: haproxy: is not supported for WebSocket "
                    "listeners; use tcp: or ssl:"
                )
        if self["workers"] > 1 and self["metrics"]:
            raise usage.UsageError(
                "--metrics cannot be used with --workers: each worker counts its own "
                "connections; run one server per core with its own --metrics instead"
            )
        for description, endpoint in endpoints:
            if not isTLS(endpoint):
                continue
            if self["workers"] > 1:
                raise usage.UsageError(
                    f"--workers cannot share the TLS listener {description!r}; "
                    "run one server per core behind a TCP load balancer instead"
                )
            if self["framing"] == "eof" and description in self["listen"]:
                # (An info listener reads no message.)
                # The client refuses --tls --framing eof for the same reason.
                raise usage.UsageError(
                    f"--framing eof cannot be used with the TLS listener {description!r}: "
                    "a TLS client cannot half-close to end its message; "
                    "use --framing line or int32"
                )
        # UTF-8, but any byte the shell passes is kept as it is.
        self["prefix"] = self["prefix"].encode("utf-8", "surrogateescape")
        if self["banner"] is not None:
            self["banner"] = self["banner"].encode("utf-8", "surrogateescape")

    def _endpoints(self) -> list[tuple[str, IStreamServerEndpoint]]:
        """
        Check that every C{--listen}, C{--info}, C{--websocket}, C{--metrics}
        and C{--web} is an endpoint string.

        @return: each C{--listen}, C{--info} and C{--websocket} with its
            endpoint.
        """
        endpoints = []
        for option, description in [("--listen", d) for d in self["listen"]] + [
            ("--info", d) for d in self["info"]
        ] + [("--websocket", d) for d in self["websocket"]] + (
            [(option, self[option[2:]]) for option in ("--metrics", "--web")
             if self[option[2:]] is not None]
        ):
            try:
                # Parsing builds the endpoint without touching the reactor
                # (an ssl: endpoint loads its certificate here, so a missing
                # file is reported now rather than at startup).
                endpoint = makeEndpoint(cast(Any, None), description)
            except Exception as e:
                reason = str(e)
                if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
                    reason = (
                        "no such socket was passed in; this endpoint is for socket "
                        "activation (systemd sets LISTEN_FDS and LISTEN_FDNAMES; with "
                        "systemd-socket-activate, pass --fdname)"
                    )
                raise usage.UsageError(f"bad {option} {description!r}: {reason}") from None
            if option in ("--listen", "--info", "--websocket"):
                endpoints.append((description, endpoint))
        return endpoints

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
            faults=self.faults(),
        )

    def faults(self) -> Faults:
        """
        The faults these options ask for at startup.

        @raise usage.UsageError: they cannot be put together (rates that
            add up to more than 1).
        """
        try:
            return Faults(**{key: self[option[2:]] for key, option in OPTION_OF.items()})
        except FaultsError as e:
            raise usage.UsageError(e.describe(OPTION_OF)) from None


def _trace(
    config: Options,
    factory: EchoReplyFactory,
    drain: DrainService,
    listeners: list[ListenerService],
    reactor: IReactorCore,
    faultsPage: FaultsPage | None,
    webSockets: list[ListenerService],
) -> None:
    """
    Trace every connection of C{factory} (C{--trace} logs each event), and
    with C{--web}, serve the playground through the drain, as the metrics
    site is, with C{faultsPage} at C{/faults}; its send panel targets the
    echo C{listeners} and the C{webSockets} listeners.
    """
    # Imported only when asked for, as the metrics are: twisted.web.
    from sockplay.playground.panel import SendPanel
    from sockplay.playground.site import PlaygroundService, targetOf, webSocketTargetOf
    from sockplay.server.trace import serverDescription
    from sockplay.server.tracer import Tracer

    settings = factory.settings
    tracer = Tracer(cast(Any, reactor), logEvents=bool(config["trace"]))
    tracer.server = serverDescription(
        settings.framing, settings.keepOpen, settings.prefix, factory.hostname,
        settings.maxMessage, settings.idleTimeout,
    )
    factory.traceWith(tracer)
    if config["web"]:
        panel = SendPanel(
            reactor,
            tracer,
            lambda: [
                t
                for t in [
                    *(targetOf(listener) for listener in listeners),
                    *(webSocketTargetOf(listener) for listener in webSockets),
                ]
                if t is not None
            ],
        )
        drain.lingering.append(
            PlaygroundService(config["web"], tracer, panel, reactor, faultsPage)
        )


def _reactorInstalled() -> bool:
    """
    Whether Twisted's global reactor is installed already (twistd installs
    the one its own C{--reactor} names while it parses its options).
    """
    return "twisted.internet.reactor" in sys.modules


def makeService(config: Options, reactor: IReactorCore | None = None) -> IService:
    """
    Build the server that C{config} describes: a L{MultiService} with one
    L{ListenerService} per C{--listen}, all sharing one factory, a UDP
    service per C{--udp}, and a L{DrainService} that drains the connections
    at shutdown; or, with C{--workers}, the pool of worker processes.

    @param reactor: the reactor to listen with; by default the global one,
        installed first (as C{--reactor} says) if none is yet.
    """
    if reactor is None:
        reactor = chooseReactor(config["reactor"])
    factory = EchoReplyFactory(config.settings(), clock=cast(Any, reactor))
    parent = MultiService()
    # A second SIGINT or SIGTERM stops the drain (or the workers') at once.
    signals = SecondSignal(reactor)
    signals.setServiceParent(parent)  # type: ignore[no-untyped-call]
    if config["workers"] > 1:
        listeners = [
            (description, makeEndpoint(reactor, description)) for description in config["listen"]
        ]
        pool = WorkerPoolService(
            config["workers"],
            listeners,
            factory.settings,
            config["drain-timeout"],
            reactor,
            datagrams=[(port, config["udp-interface"]) for port in config["udp"]],
            signals=signals,
            info=[
                (description, makeEndpoint(reactor, description)) for description in config["info"]
            ],
            scenario=config.scenario,
        )
        pool.setServiceParent(parent)  # type: ignore[no-untyped-call]
        announcer = ReadyAnnouncer(reactor, pool.ready)
        announcer.setServiceParent(parent)  # type: ignore[no-untyped-call]
        return parent
    # Stopped last (services stop in reverse order): every listener has
    # stopped accepting by the time the drain begins.
    drain = DrainService(factory, config["drain-timeout"], signals)
    drain.setServiceParent(parent)  # type: ignore[no-untyped-call]
    faultsPage = None
    if config["metrics"] or config["web"] or config.scenario is not None:
        # The faults may change while connections are open.
        factory.allowFaultChanges()
        faultsPage = FaultsPage(factory)
    if config.scenario is not None:
        scenario = ScenarioService(config.scenario, factory, cast(IReactorTime, reactor))
        scenario.setServiceParent(parent)  # type: ignore[no-untyped-call]
    if config["metrics"]:
        # Imported only when asked for: twisted.web and prometheus_client
        # add a tenth of a second to every server's start-up.
        from sockplay.server.metrics import Metrics, makeMetricsService

        metrics = Metrics()
        factory.openedObservers.append(metrics.connectionOpened)
        factory.observers.append(metrics.connectionClosed)
        factory.injectedObservers.append(metrics.faultsInjected)
        drain.onDrain.append(lambda: setattr(metrics, "draining", True))
        # Serves through the drain (/healthz says 503), stops after it.
        drain.lingering.append(
            makeMetricsService(config["metrics"], metrics, reactor, faultsPage)
        )
    echoListeners: list[ListenerService] = []
    for description in config["listen"]:
        endpoint = makeEndpoint(reactor, description, config.clientCAs)
        listener = ListenerService(description, endpoint, factory, reactor)
        listener.setServiceParent(parent)  # type: ignore[no-untyped-call]
        echoListeners.append(listener)
    if config["info"]:
        from sockplay.server.info import InfoFactory

        info = InfoFactory(factory)
        for description in config["info"]:
            endpoint = makeEndpoint(reactor, description, config.clientCAs)
            service = ListenerService(description, endpoint, info, reactor, "connection info")
            service.setServiceParent(parent)  # type: ignore[no-untyped-call]
    webSocketListeners: list[ListenerService] = []
    if config["websocket"]:
        # Imported only when asked for: twisted.web and wsproto.
        from sockplay.server.websocketsite import webSocketSite

        site = webSocketSite(factory, reactor)
        for description in config["websocket"]:
            endpoint = makeEndpoint(reactor, description, config.clientCAs)
            service = ListenerService(description, endpoint, site, reactor, "WebSocket")
            service.setServiceParent(parent)  # type: ignore[no-untyped-call]
            webSocketListeners.append(service)
    if config["web"] or config["trace"]:
        _trace(config, factory, drain, echoListeners, reactor, faultsPage, webSocketListeners)
    if config["udp"]:
        prefix = renderProcessTemplate(factory.settings.prefix, factory.hostname)
        for port in config["udp"]:
            udp = makeUDPService(port, config["udp-interface"], prefix, cast(Any, reactor))
            udp.setServiceParent(parent)  # type: ignore[no-untyped-call]
    ReadyAnnouncer(reactor).setServiceParent(parent)  # type: ignore[no-untyped-call]
    return parent
