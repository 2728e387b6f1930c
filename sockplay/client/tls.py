"""
The client side of TLS: what to trust, what name to check, and how a TLS
failure reads.

Importing this module needs Twisted's TLS support (pyOpenSSL and
service_identity), which C{pip install sockplay} includes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    # Public as what trustRootFromCertificates and platformTrust return,
    # but defined (only) in a private module.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "TrustError",
    "clientConnectionCreator",
    "describeTLSFailure",
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


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedConnectionCreator:
    """
    TLS without any check of the server's certificate (C{--insecure}): the
    connection is encrypted, but to whoever answers.

    @ivar serverName: the name sent in the TLS Server Name Indication, or
        C{None} to send none (the name is an IP address).
    """

    def __init__(self, serverName: str) -> None:
        self._options = CertificateOptions()
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
    serverName: str, caFile: str | None = None, insecure: bool = False
) -> IOpenSSLClientConnectionCreator:
    """
    How the client sets up TLS.

    @param serverName: the name the server's certificate must be valid for
        (a host name or an IP address); also sent in the TLS Server Name
        Indication when it is a host name.
    @param caFile: a PEM file of the CAs to trust; by default, the
        platform's trusted CAs.
    @param insecure: check nothing about the server's certificate.
    @raise TrustError: if C{caFile} cannot be used.
    """
    if insecure:
        return _UnverifiedConnectionCreator(serverName)
    trustRoot = loadTrustRoot(caFile) if caFile is not None else platformTrust()
    return optionsForClientTLS(serverName, trustRoot=trustRoot)


def _reasons(error: BaseException | None) -> list[str]:
    """
    The reason strings of an C{OpenSSL.SSL.Error}, innermost last.
    """
    queue = error.args[0] if error is not None and error.args else []
    if not isinstance(queue, list):
        return [str(error)]
    return [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]


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


def describeTLSFailure(failure: Failure, target: str, caFile: str | None) -> str | None:
    """
    The one-line message for a failed TLS handshake or certificate check,
    or C{None} if C{failure} is not one.

    @param target: what the client connected to, for the message.
    @param caFile: the C{--ca} file, if any, to say what was trusted.
    """
    if isinstance(failure.value, VerificationError):
        names = [_identity(mismatch.mismatched_id) for mismatch in failure.value.errors]
        name = " or ".join(names) or "the server name"
        return (
            f"the TLS certificate of {target} is not valid for {name} "
            "(hostname mismatch; --server-name sets the name to check)"
        )
    if failure.check(SSL.Error):
        reasons = _reasons(failure.value)
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
        detail = "; ".join(r for r in reasons if r) or failure.getErrorMessage()
        if "wrong version number" in reasons:
            detail += " (is it a TLS server?)"
        return f"TLS handshake with {target} failed: {detail}"
    return None
