"""
Where the client connects: C{--host} and C{--port}, or a C{--connect}
endpoint string, wrapped in TLS with C{--tls} or an C{ssl:} string.

C{tcp:}, C{tcp6:} and C{ssl:} strings are built here, from what
L{sockplay.client.connect} read; C{ssl:} is C{tcp:} with the client's own
TLS, which verifies the server as C{--tls} does (Twisted's C{ssl:} client
string verifies nothing unless told). Any other kind goes to Twisted's
C{clientFromString}.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IStreamClientEndpoint

from sockplay.client.connect import SHAPE, HostTarget
from sockplay.client.failures import ClientError
from sockplay.client.options import Options
from sockplay.client.verdict import USAGE

__all__ = ["makeEndpoint"]


def makeEndpoint(reactor: IReactorCore, config: Options) -> IStreamClientEndpoint:
    """
    The endpoint that C{config} names, wrapped in TLS with C{--tls} or an
    C{ssl:} C{--connect} string; for a C{ws://} or C{wss://} URL, the
    connection beneath the WebSocket (in TLS for C{wss://}).

    @raise ClientError: if C{--connect} is not a valid endpoint string, or
        the C{--cert} or C{--key} file cannot be used (with the usage
        error's status), or TLS cannot be set up as asked.
    """
    target = config.connectTarget
    webSocket = config.webSocket
    endpoint: IStreamClientEndpoint
    if webSocket is not None:
        # The TCP (or TLS) connection beneath the WebSocket.
        endpoint = HostnameEndpoint(
            reactor, webSocket.host, webSocket.port, timeout=config["timeout"]
        )
    elif target is not None:
        endpoint = _hostEndpoint(reactor, target, config["timeout"])
    elif config["connect"]:
        try:
            endpoint = cast(IStreamClientEndpoint, clientFromString(reactor, config["connect"]))
        except Exception as e:
            raise ClientError(
                f"cannot parse --connect {config['connect']!r}: {e}; {SHAPE}", USAGE
            ) from None
    else:
        endpoint = HostnameEndpoint(
            reactor, config["host"], config["port"], timeout=config["timeout"]
        )
    if config.usesTLS():
        try:
            # Here, not at the top: TLS support (pyOpenSSL, service_identity)
            # is part of the install, but a broken one should cost --tls
            # only, with one line saying what to do.
            from sockplay.client.tls import (
                ClientCertificateError,
                TrustError,
                clientConnectionCreator,
                loadClientCertificate,
            )
        except ImportError as e:
            raise ClientError(
                f"TLS needs Twisted's TLS support ({e.name} is missing): "
                "pip install sockplay (it includes TLS)"
            ) from None
        clientCertificate = None
        if config["cert"] is not None:
            try:
                clientCertificate = loadClientCertificate(config["cert"], config["key"])
            except ClientCertificateError as e:
                raise ClientError(str(e), USAGE) from None
        try:
            creator = clientConnectionCreator(
                config.serverName(),
                config["ca"],
                bool(config["insecure"]),
                clientCertificate,
                config["alpn"],
            )
        except TrustError as e:
            raise ClientError(str(e)) from None
        endpoint = wrapClientTLS(creator, endpoint)
    return endpoint


def _hostEndpoint(
    reactor: IReactorCore, target: HostTarget, timeout: float
) -> IStreamClientEndpoint:
    """
    The TCP endpoint of a C{tcp:}, C{tcp6:} or C{ssl:} string (TLS is
    added by the caller): C{tcp6:} connects over IPv6 only, and resolves a
    name to its IPv6 addresses.

    @param timeout: the connect timeout if the string sets none.
    """
    bindAddress = None if target.bindAddress is None else (target.bindAddress, 0)
    kind = TCP6ClientEndpoint if target.kind == "tcp6" else TCP4ClientEndpoint
    return kind(
        cast(IReactorTCP, reactor),
        target.host,
        target.port,
        timeout=target.timeout if target.timeout is not None else timeout,
        bindAddress=bindAddress,
    )
