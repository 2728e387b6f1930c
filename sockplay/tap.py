"""
The twistd plugin's options and service: C{twistd -n sockplay [options]}.

L{Options} parses the command line; L{makeService} turns it into a
L{MultiService} with one listening service per C{--listen}. The same pair
backs C{python -m sockplay.server}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorCore, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from sockplay._address import describeAddress
from sockplay.framing import DEFAULT_MAX_MESSAGE, FRAMINGS, framingOption
from sockplay.protocol import DEFAULT_PREFIX, EchoReplyFactory

__all__ = ["DEFAULT_LISTEN", "ListenFailed", "ListenerService", "Options", "makeService"]

# Loopback unless the operator opts out: a test endpoint should not appear
# on a network by accident.
DEFAULT_LISTEN = "tcp:12345:interface=127.0.0.1"

READY_MESSAGE = "Server is running, waiting for connections..."


def _positiveInt(option: str) -> Callable[[str], int]:
    """
    A coerce function for an option that takes a whole number of at least 1;
    its errors name the option.
    """

    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise ValueError(f"{option} must be a positive whole number, not {value!r}")
        return number

    coerce.coerceDoc = "A positive whole number."  # type: ignore[attr-defined]
    return coerce


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
    ]
    optParameters = [
        ["framing", "f", "raw", "What one message is: raw (one read), line (up to LF), "
         "eof (until the client half-closes), int32 (4-byte big-endian length prefix).",
         framingOption],
        ["prefix", "p", DEFAULT_PREFIX.decode("utf-8"),
         "Text put before each message in its reply."],
        ["max-message", "m", DEFAULT_MAX_MESSAGE, "Largest message accepted, in bytes.",
         _positiveInt("--max-message")],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []

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
        # UTF-8, but any byte the shell passes is kept as it is.
        self["prefix"] = self["prefix"].encode("utf-8", "surrogateescape")
        for description in self["listen"]:
            try:
                # Parsing builds the endpoint without touching the reactor
                # (an ssl: endpoint loads its certificate here, so a missing
                # file is reported now rather than at startup).
                serverFromString(cast(Any, None), description)
            except Exception as e:
                raise usage.UsageError(f"bad --listen {description!r}: {e}") from None


class ListenFailed(SystemExit):
    """
    A listener could not start. Raised as a L{SystemExit} so that twistd and
    C{python -m sockplay.server} end with its one-line message and exit
    status 1 rather than a traceback.
    """


class ListenerService(Service):
    """
    Listen on one endpoint while running; stop listening when stopped.

    @ivar description: the endpoint string, for messages.
    @ivar port: the listening port, once listening.
    """

    log = Logger()

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: EchoReplyFactory,
        reactor: IReactorCore,
    ) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self._reactor = reactor
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        # Bind here, before twistd sheds privileges, so low ports work.
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._listen()
        if self.port is not None:
            self.log.info(
                "Listening on {address} ({description})",
                address=describeAddress(self.port.getHost()),
                description=self.description,
            )

    def _listen(self) -> None:
        if self._listening is not None:
            return
        failures: list[Failure] = []
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(self._listened, failures.append)
        if failures:
            raise ListenFailed(
                f"Error: cannot listen on {self.description}: {failures[0].getErrorMessage()}"
            )
        self._listening.addErrback(self._lateFailure)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def _lateFailure(self, failure: Failure) -> None:
        # Only endpoints that listen asynchronously get here.
        self.log.critical(
            "Error: cannot listen on {description}: {error}",
            description=self.description,
            error=failure.getErrorMessage(),
        )
        self._reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        self._listening = None
        if port is None:
            return None
        return maybeDeferred(cast(Callable[[], object], port.stopListening)).addCallback(
            lambda _: None
        )


class _ReadyAnnouncer(Service):
    """
    Started after every listener: says that the server is ready, once the
    reactor runs. twistd starts services before it runs the reactor, which
    is when it installs its SIGINT and SIGTERM handlers; whoever waits for
    this line may signal the server at once, and must find it able to stop
    cleanly.
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.callWhenRunning(self.log.info, READY_MESSAGE)


def makeFactory(config: Options, reactor: IReactorCore | None = None) -> EchoReplyFactory:
    """
    The protocol factory that C{config} describes.
    """
    return EchoReplyFactory(
        framing=config["framing"],
        keepOpen=bool(config["keep-open"]),
        prefix=config["prefix"],
        maxMessage=config["max-message"],
        clock=cast(Any, reactor),
    )


def makeService(config: Options, reactor: IReactorCore | None = None) -> IService:
    """
    Build the server that C{config} describes: a L{MultiService} with one
    L{ListenerService} per C{--listen}, all sharing one factory.

    @param reactor: the reactor to listen with; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = cast(IReactorCore, globalReactor)
    factory = makeFactory(config, reactor)
    parent = MultiService()
    for description in config["listen"]:
        endpoint = serverFromString(reactor, description)
        ListenerService(description, endpoint, factory, reactor).setServiceParent(parent)  # type: ignore[no-untyped-call]
    _ReadyAnnouncer(reactor).setServiceParent(parent)  # type: ignore[no-untyped-call]
    return parent
