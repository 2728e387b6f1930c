"""
Where the client connects: C{--host} and C{--port}, or a C{--connect}
endpoint string, wrapped in TLS with C{--tls}.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.endpoints import HostnameEndpoint, clientFromString, wrapClientTLS
from twisted.internet.interfaces import IReactorCore, IStreamClientEndpoint

from sockplay.client.failures import ClientError
from sockplay.client.options import Options

__all__ = ["makeEndpoint"]


def makeEndpoint(reactor: IReactorCore, config: Options) -> IStreamClientEndpoint:
    """
    The endpoint that C{config} names, wrapped in TLS with C{--tls}.

    @raise ClientError: if C{--connect} is not a valid endpoint string, or
        TLS cannot be set up as asked.
    """
    if config["connect"]:
        try:
            endpoint = cast(IStreamClientEndpoint, clientFromString(reactor, config["connect"]))
        except Exception as e:
            raise ClientError(f"bad --connect endpoint {config['connect']!r}: {e}") from None
    else:
        endpoint = HostnameEndpoint(
            reactor, config["host"], config["port"], timeout=config["timeout"]
        )
    if config["tls"]:
        try:
            # Here, not at the top: TLS support (pyOpenSSL, service_identity)
            # is part of the install, but a broken one should cost --tls
            # only, with one line saying what to do.
            from sockplay.client.tls import TrustError, clientConnectionCreator
        except ImportError as e:
            raise ClientError(
                f"--tls needs Twisted's TLS support ({e.name} is missing): "
                "pip install sockplay (it includes TLS)"
            ) from None
        try:
            creator = clientConnectionCreator(
                config.serverName(), config["ca"], bool(config["insecure"])
            )
        except TrustError as e:
            raise ClientError(str(e)) from None
        endpoint = wrapClientTLS(creator, endpoint)
    return endpoint
