"""
The client side of TLS: what to trust, what name to check and send, the
client certificate and the ALPN offer, and how a TLS failure reads.

Importing this module needs Twisted's TLS support (pyOpenSSL and
service_identity), which C{pip install sockplay} includes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.tlserrors import openSSLReasons

if TYPE_CHECKING:
    # Public as what trustRootFromCertificates and platformTrust return,
    # but defined (only) in a private module.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "ClientCertificateError",
    "TrustError",
    "clientConnectionCreator",
    "describeTLSFailure",
    "loadClientCertificate",
    "loadTrustRoot",
]

_PEM_END = b"-----END CERTIFICATE-----"


class TrustError(Exception):
    """
    The C{--ca} file cannot be used; the message is the one line to show.
    """


def loadTrustRoot(path: str) -> IOpenSSLTrustRoot:
    """
    Trust exactly the certificates in the PEM file at C{path} (one CA, or a
    bundle of several).

    @raise TrustError: if the file cannot be read or holds no certificate.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TrustError(f"cannot read --ca {path}: {e.strerror}") from None
    certificates = []
    for block in data.split(_PEM_END)[:-1]:
        try:
            certificates.append(Certificate.loadPEM(block + _PEM_END))
        except crypto.Error:
            raise TrustError(f"--ca {path} holds a certificate that is not valid PEM") from None
    if not certificates:
        raise TrustError(f"--ca {path} holds no PEM certificate")
    trustRoot: IOpenSSLTrustRoot = trustRootFromCertificates(certificates)
    return trustRoot


class ClientCertificateError(Exception):
    """
    The C{--cert} or C{--key} file cannot be used; the message is the one
    line to show.
    """


class _EncryptedKey(Exception):
    """
    The key file asked for a passphrase, which the client has no way to ask
    for.
    """


def _askedForPassphrase(*args: object) -> bytes:
    """
    The passphrase callback: refuse, rather than let OpenSSL prompt on the
    terminal.
    """
    raise _EncryptedKey()


def _read(option: str, path: str) -> bytes:
    """
    The bytes of the file C{path}, given as C{option}.

    @raise ClientCertificateError: if it cannot be read.
    """
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ClientCertificateError(f"cannot read {option} {path}: {e.strerror}") from None


def loadClientCertificate(certFile: str, keyFile: str | None = None) -> PrivateCertificate:
    """
    The client certificate in the PEM file C{certFile}, with its private
    key from C{keyFile} (by default, the same file, holding both).

    @raise ClientCertificateError: if a file cannot be read, holds no
        certificate or no unencrypted private key, or the key is not the
        certificate's.
    """
    if keyFile is None:
        keyFile = certFile
    try:
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, _read("--cert", certFile))
    except crypto.Error:
        raise ClientCertificateError(f"--cert {certFile} holds no PEM certificate") from None
    where = f"--key {keyFile}" if keyFile != certFile else f"--cert {certFile}"
    try:
        key = crypto.load_privatekey(
            crypto.FILETYPE_PEM, _read("--key", keyFile), _askedForPassphrase
        )
    except _EncryptedKey:
        raise ClientCertificateError(
            f"the private key in {where} is encrypted; the client needs it unencrypted"
        ) from None
    except crypto.Error:
        hint = "" if keyFile != certFile else " (give the key's file with --key FILE)"
        raise ClientCertificateError(f"{where} holds no PEM private key{hint}") from None
    try:
        paired: PrivateCertificate = PrivateCertificate.fromCertificateAndKeyPair(
            Certificate(certificate), KeyPair(key)
        )
        return paired
    except VerifyError:
        raise ClientCertificateError(
            f"the private key in {where} is not the key of the certificate in --cert {certFile}"
        ) from None


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedConnectionCreator:
    """
    TLS without any check of the server's certificate (C{--insecure}): the
    connection is encrypted, but to whoever answers.

    @ivar serverName: the name sent in the TLS Server Name Indication, or
        C{None} to send none (the name is an IP address).
    """

    def __init__(
        self,
        serverName: str,
        clientCertificate: PrivateCertificate | None = None,
        acceptableProtocols: list[bytes] | None = None,
    ) -> None:
        """
        @param serverName: the host name to send as SNI (an IP address is
            not sent: RFC 6066 forbids it).
        @param clientCertificate: the certificate and key to present, if any.
        @param acceptableProtocols: the ALPN offer, in order of preference.
        """
        if clientCertificate is None:
            self._options = CertificateOptions(acceptableProtocols=acceptableProtocols)
        else:
            self._options = CertificateOptions(
                privateKey=clientCertificate.privateKey.original,
                certificate=clientCertificate.original,
                acceptableProtocols=acceptableProtocols,
            )
        self.serverName: bytes | None = None
        if not (isIPAddress(serverName) or isIPv6Address(serverName)):
            try:
                self.serverName = serverName.encode("idna")
            except UnicodeError:
                pass

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        return connection


def clientConnectionCreator(
    serverName: str,
    caFile: str | None = None,
    insecure: bool = False,
    clientCertificate: PrivateCertificate | None = None,
    acceptableProtocols: list[bytes] | None = None,
) -> IOpenSSLClientConnectionCreator:
    """
    How the client sets up TLS.

    @param serverName: the name the server's certificate must be valid for
        (a host name or an IP address); also sent in the TLS Server Name
        Indication when it is a host name, with C{insecure} too.
    @param caFile: a PEM file of the CAs to trust; by default, the
        platform's trusted CAs.
    @param insecure: check nothing about the server's certificate.
    @param clientCertificate: the certificate (and key) to present to a
        server that asks for one (L{loadClientCertificate}).
    @param acceptableProtocols: the protocols to offer in ALPN, in order of
        preference; none offered if empty or C{None}.
    @raise TrustError: if C{caFile} cannot be used.
    """
    protocols = acceptableProtocols or None
    if insecure:
        return _UnverifiedConnectionCreator(serverName, clientCertificate, protocols)
    trustRoot = loadTrustRoot(caFile) if caFile is not None else platformTrust()
    return optionsForClientTLS(
        serverName,
        trustRoot=trustRoot,
        clientCertificate=clientCertificate,
        acceptableProtocols=protocols,
    )


def _identity(serviceID: object) -> str:
    """
    The name or address that a certificate did not match, quoted.
    """
    for attribute in ("hostname", "ip"):
        value = getattr(serviceID, attribute, None)
        if isinstance(value, bytes):
            value = value.decode("ascii", "backslashreplace")
        if value is not None:
            return repr(str(value))
    return repr(str(serviceID))


# How OpenSSL names an alert the peer sent: "tlsv13 alert certificate
# required", "tlsv1 alert unknown ca", "sslv3 alert bad certificate", and
# since OpenSSL 3.2 "tls alert handshake failure".
_ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13|tls) alert (.+)")

# Alerts a server sends when it wants a client certificate and got none.
_CERTIFICATE_REQUIRED = frozenset({"certificate required"})

# Alerts a server sends when it does not accept the client certificate it
# got: its CA is not one the server trusts, it is expired or revoked, or
# its signature or usage is wrong.
_CERTIFICATE_REFUSED = frozenset(
    {
        "unknown ca",
        "bad certificate",
        "certificate unknown",
        "certificate expired",
        "certificate revoked",
        "unsupported certificate",
    }
)


def _alerts(reasons: list[str]) -> list[str]:
    """
    The names of the TLS alerts the peer sent, among C{reasons}.
    """
    return [match.group(1) for r in reasons if (match := _ALERT.fullmatch(r))]


def _clientCertificateProblem(reasons: list[str], certFile: str | None) -> str | None:
    """
    What to say about a handshake the server ended because of the client
    certificate (or its absence), or C{None} if it did not.
    """
    for alert in _alerts(reasons):
        if alert in _CERTIFICATE_REQUIRED:
            return (
                "the server requires a client certificate: give one with --cert FILE "
                "(and --key FILE)"
            )
        if certFile is not None and alert in _CERTIFICATE_REFUSED:
            return (
                f"the server does not accept the client certificate of --cert {certFile} "
                f"({alert}): is it signed by a CA the server trusts (its --tls-client-ca), "
                "and valid now?"
            )
        if certFile is None and alert == "handshake failure":
            # What a server that requires a certificate sends over TLS 1.2
            # (and what a server that shares no cipher with us sends).
            return (
                "handshake failure: does the server require a client certificate? "
                "give one with --cert FILE (and --key FILE)"
            )
    return None


def describeTLSFailure(
    failure: Failure, target: str, caFile: str | None, certFile: str | None = None
) -> str | None:
    """
    The one-line message for a failed TLS handshake or certificate check,
    or C{None} if C{failure} is not one.

    @param target: what the client connected to, for the message.
    @param caFile: the C{--ca} file, if any, to say what was trusted.
    @param certFile: the C{--cert} file, if any, to say what the server
        refused.
    """
    if isinstance(failure.value, VerificationError):
        names = [_identity(mismatch.mismatched_id) for mismatch in failure.value.errors]
        name = " or ".join(names) or "the server name"
        return (
            f"the TLS certificate of {target} is not valid for {name} "
            "(hostname mismatch; --server-name sets the name to check)"
        )
    if failure.check(SSL.Error):
        reasons = openSSLReasons(failure.value)
        if "certificate verify failed" in reasons:
            if caFile:
                why = f"not signed by the CA in {caFile}, or expired or not yet valid"
            else:
                why = (
                    "not signed by a CA this system trusts, or expired or not yet valid; "
                    "--ca FILE trusts another CA"
                )
            return (
                f"cannot verify the TLS certificate of {target}: "
                f"certificate verify failed ({why})"
            )
        problem = _clientCertificateProblem(reasons, certFile)
        if problem is not None:
            return f"TLS handshake with {target} failed: {problem}"
        detail = "; ".join(r for r in reasons if r) or failure.getErrorMessage()
        if "wrong version number" in reasons:
            detail += " (is it a TLS server?)"
        return f"TLS handshake with {target} failed: {detail}"
    return None
