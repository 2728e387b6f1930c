"""
The server side of TLS, for C{ssl:} listeners: which ALPN protocol is
chosen, mutual TLS (C{--tls-client-ca}), what C{--info} reports of a TLS
connection, and how a failed handshake reads in the log.

Twisted's C{ssl:} endpoint builds a L{CertificateOptions} from the
endpoint string (the certificate, its key and chain); L{ServerTLS} takes
that context and adds what a test endpoint needs:

  - B{ALPN}: the server selects the client's first offer, whatever it is,
    so that any protocol name can be tested (a real server would pick from
    the protocols it speaks); the offers are kept for C{--info};
  - B{client certificates}: with C{--tls-client-ca}, a client must present
    a certificate signed by one of those CAs, or the handshake fails.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IOpenSSLContextFactory, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.tlserrors import openSSLReasons

__all__ = [
    "ClientCAError",
    "ServerTLS",
    "beneathTLS",
    "describeHandshakeFailure",
    "describeTLS",
    "isHandshakeFailure",
    "loadClientCAs",
    "secure",
]

# The ALPN protocols each connection's client offered, for --info: weakly
# held, so that an entry goes with its connection.
_offers: WeakKeyDictionary[SSL.Connection, list[bytes]] = WeakKeyDictionary()


class ClientCAError(Exception):
    """
    The C{--tls-client-ca} file cannot be used; the message says why.
    """


def loadClientCAs(path: str) -> list[x509.Certificate]:
    """
    The CA certificates in the PEM file at C{path} (one, or a bundle).

    @raise ClientCAError: if the file cannot be read or holds no valid
        PEM certificate.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ClientCAError(f"cannot read {path}: {e.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ClientCAError(f"{path} holds no valid PEM certificate") from None
    return certificates


def _selectFirstOffer(connection: SSL.Connection, offers: list[bytes]) -> bytes:
    """
    The ALPN choice of a test server: the client's first offer, kept with
    the rest for C{--info}.
    """
    _offers[connection] = list(offers)
    return offers[0]


def _verified(
    connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    """
    OpenSSL's own verdict on each certificate of the client's chain stands.
    """
    return bool(ok)


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """
    The TLS context of one C{ssl:} listener: the endpoint's own, with the
    client's first ALPN offer selected and, given client CAs, a client
    certificate required and verified.
    """

    def __init__(self, options: Any, clientCAs: Sequence[x509.Certificate] = ()) -> None:
        """
        @param options: the endpoint's context factory (Twisted's
            L{CertificateOptions}, built from the endpoint string).
        @param clientCAs: the CAs a client certificate must be signed by;
            none to ask for no client certificate.
        """
        self._options = options
        self.clientCAs = list(clientCAs)
        self._context: SSL.Context | None = None

    @classmethod
    def of(
        cls, endpoint: SSL4ServerEndpoint, clientCAs: Sequence[x509.Certificate] = ()
    ) -> ServerTLS:
        """
        The context for an C{ssl:} endpoint, from the certificate options
        Twisted's endpoint string parser built for it.
        """
        # The endpoint keeps them in this attribute (Twisted has no public
        # way to reach them); tests/server/test_info.py pins it.
        return cls(endpoint._sslContextFactory, clientCAs)

    def getContext(self) -> SSL.Context:
        """
        The context, configured once and shared by every connection.
        """
        if self._context is None:
            context: SSL.Context = self._options.getContext()
            context.set_alpn_select_callback(_selectFirstOffer)
            if self.clientCAs:
                store = context.get_cert_store()
                assert store is not None
                for authority in self.clientCAs:
                    store.add_cert(crypto.X509.from_cryptography(authority))
                context.set_verify(
                    SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verified
                )
            self._context = context
        return self._context


def secure(
    endpoint: IStreamServerEndpoint, clientCAs: Sequence[x509.Certificate] = ()
) -> IStreamServerEndpoint:
    """
    Give an C{ssl:} endpoint the L{ServerTLS} context; any other endpoint
    is returned as it is.
    """
    if isinstance(endpoint, SSL4ServerEndpoint):
        endpoint._sslContextFactory = ServerTLS.of(endpoint, clientCAs)
    return endpoint


def beneathTLS(endpoint: SSL4ServerEndpoint) -> TCP4ServerEndpoint:
    """
    The plain TCP endpoint an C{ssl:} endpoint listens on (same port,
    interface and backlog), for a PROXY header that comes before TLS.
    """
    # Twisted's endpoint keeps its arguments in these attributes, with no
    # public way to read them (tests/server/test_info.py pins them).
    return TCP4ServerEndpoint(
        endpoint._reactor, endpoint._port, endpoint._backlog, endpoint._interface
    )


def isHandshakeFailure(failure: Failure) -> bool:
    """
    Whether a connection ended with a TLS error.
    """
    return isinstance(failure.value, SSL.Error)


# What to do about the failures an operator can act on.
_HINTS = {
    "peer did not return a certificate": (
        "the client sent no certificate, which --tls-client-ca requires"
    ),
    "certificate verify failed": (
        "the client's certificate is not signed by a --tls-client-ca CA, or has expired"
    ),
    "http request": "the client spoke HTTP to a TLS listener",
    "wrong version number": "the client did not speak TLS",
    "packet length too long": "the client did not speak TLS",
}


def describeHandshakeFailure(failure: Failure) -> str:
    """
    Why a TLS connection failed, for its log line: OpenSSL's reasons, and
    what they mean where the operator can act on them.
    """
    reasons = [reason for reason in openSSLReasons(failure.value) if reason]
    reasons = reasons or ["no reason given"]
    text = "TLS handshake failed: " + "; ".join(reasons)
    hints = [_HINTS[reason] for reason in reasons if reason in _HINTS]
    if hints:
        text += f" ({hints[0]})"
    return text


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


def _certificate(certificate: x509.Certificate) -> dict[str, Any]:
    """
    What C{--info} says of a client certificate.
    """
    notAfter = certificate.not_valid_after_utc.astimezone(datetime.timezone.utc)
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "not_after": notAfter.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def describeTLS(connection: SSL.Connection) -> dict[str, Any]:
    """
    What C{--info} reports of an established TLS connection: the version,
    the cipher, the server name the client asked for (SNI), the ALPN
    protocols it offered and the one selected, and its certificate.
    """
    certificate = connection.get_peer_certificate(as_cryptography=True)
    return {
        "version": connection.get_protocol_version_name(),
        "cipher": connection.get_cipher_name(),
        "server_name": _text(connection.get_servername()),
        "alpn_offered": [_text(offer) for offer in _offers.get(connection, [])],
        "alpn": _text(connection.get_alpn_proto_negotiated() or None),
        "client_certificate": None if certificate is None else _certificate(certificate),
    }
