"""
A service that listens on one endpoint while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from sockplay.server.address import describeAddress

__all__ = ["ListenFailed", "ListenerService"]


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
        factory: IProtocolFactory,
        reactor: IReactorCore,
        purpose: str | None = None,
    ) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.purpose = purpose
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
            # "Listening on" names the echo-reply listeners (tests and
            # scripts look for it); other services say what they serve.
            self.log.info(
                "Listening on {address} ({description})"
                if self.purpose is None
                else "Serving {purpose} on {address} ({description})",
                address=describeAddress(self.port.getHost()),
                description=self.description,
                purpose=self.purpose,
            )

    def _listen(self) -> None:
        if self._listening is not None:
            return
        failures: list[Failure] = []
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(self._listened, failures.append)
        if failures:
            raise ListenFailed(
                f"Error: cannot listen on {self.description}{self._for()}: "
                f"{failures[0].getErrorMessage()}"
            )
        self._listening.addErrback(self._lateFailure)

    def _for(self) -> str:
        return "" if self.purpose is None else f" for {self.purpose}"

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def _lateFailure(self, failure: Failure) -> None:
        # Only endpoints that listen asynchronously get here.
        self.log.critical(
            "Error: cannot listen on {description}{purpose}: {error}",
            description=self.description,
            purpose=self._for(),
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
