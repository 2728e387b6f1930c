"""
C{python -m sockplay.certs DIR}: a throwaway local CA and a server
certificate for trying sockplay over TLS on this machine.

It writes, in C{DIR}:

  - C{ca.pem}, C{ca-key.pem}: a CA that exists only in this directory;
  - C{server.pem}, C{server-key.pem}: a certificate signed by that CA, valid
    for C{localhost}, C{127.0.0.1} and C{::1}, and its key;

then prints the C{twistd -n sockplay --listen ssl:...} and
C{python -m sockplay.client --tls --ca ...} commands that use them. The
certificates are valid for a short time (L{DEFAULT_DAYS}); the keys are
readable by their owner only. Nothing is ever trusted system-wide.

Needs the C{cryptography} package (C{pip install 'sockplay[tls]'}).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover - depends on the installation
    _CRYPTOGRAPHY_MISSING = True
else:
    _CRYPTOGRAPHY_MISSING = False

__all__ = [
    "DEFAULT_DAYS",
    "SERVER_NAMES",
    "CertificateError",
    "CertificateFiles",
    "Options",
    "clientCommand",
    "listenDescription",
    "main",
    "writeCertificates",
]

# Short on purpose: these are for trying things out, and a leaked throwaway
# key should not stay useful for long.
DEFAULT_DAYS = 30

# What the server certificate is valid for: this machine, by name and by
# loopback address.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")

# The port in the printed server command: the server's default port.
EXAMPLE_PORT = 12345

# Start validity a little in the past, so that a clock that is slightly
# behind does not reject a certificate made a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)

_KEY_MODE = 0o600
_CERTIFICATE_MODE = 0o644


class CertificateError(Exception):
    """
    The certificates cannot be written; the message is the one line to show.
    """


class CertificateFiles(NamedTuple):
    """
    Where the files are.

    @ivar ca: the CA certificate (PEM): what clients trust (C{--ca}).
    @ivar caKey: the CA's private key (PEM, PKCS#8, unencrypted).
    @ivar server: the server certificate (PEM) (C{certKey=}).
    @ivar serverKey: the server's private key (PEM, PKCS#8, unencrypted)
        (C{privateKey=}).
    """

    ca: Path
    caKey: Path
    server: Path
    serverKey: Path

    @classmethod
    def inDirectory(cls, directory: Path) -> CertificateFiles:
        """
        The file names used in C{directory}.
        """
        return cls(
            directory / "ca.pem",
            directory / "ca-key.pem",
            directory / "server.pem",
            directory / "server-key.pem",
        )


def _subjectAltNames() -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for name in SERVER_NAMES:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(names)


def _keyUsage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signer,
        crl_sign=signer,
        encipher_only=False,
        decipher_only=False,
    )


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def makeCertificates(
    days: int = DEFAULT_DAYS, now: datetime.datetime | None = None
) -> tuple[bytes, bytes, bytes, bytes]:
    """
    Make a new CA and a server certificate that it signs, valid for
    L{SERVER_NAMES}.

    @param days: how long both stay valid, from C{now}.
    @param now: the time they are made (default: the current time, UTC).
    @return: the PEM bytes of the CA certificate, the CA key, the server
        certificate and the server key.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    notBefore = now - _BACKDATE
    notAfter = now + datetime.timedelta(days=days)

    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sockplay"),
            x509.NameAttribute(NameOID.COMMON_NAME, "sockplay throwaway local CA"),
        ]
    )
    caPublic = caKey.public_key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caPublic)
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_keyUsage(signer=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(caPublic), critical=False)
        .sign(caKey, hashes.SHA256())
    )

    serverKey = ec.generate_private_key(ec.SECP256R1())
    serverPublic = serverKey.public_key()
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAMES[0])]))
        .issuer_name(caName)
        .public_key(serverPublic)
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_keyUsage(signer=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subjectAltNames(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(serverPublic), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caPublic), critical=False
        )
        .sign(caKey, hashes.SHA256())
    )
    return (
        ca.public_bytes(serialization.Encoding.PEM),
        _keyPEM(caKey),
        server.public_bytes(serialization.Encoding.PEM),
        _keyPEM(serverKey),
    )


def _writeNew(path: Path, data: bytes, mode: int) -> None:
    """
    Create C{path} with C{mode} (less the umask) and write C{data}; fail if
    it exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def writeCertificates(
    directory: Path,
    days: int = DEFAULT_DAYS,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> CertificateFiles:
    """
    Make a CA and a server certificate (L{makeCertificates}) and write them
    in C{directory}, which is created if needed. Key files are created
    readable by their owner only.

    @param force: replace existing files; without it, nothing is written
        if any of the files exists.
    @raise CertificateError: if a file exists (without C{force}) or cannot
        be written.
    """
    files = CertificateFiles.inDirectory(directory)
    if not force:
        existing = [path.name for path in files if os.path.lexists(path)]
        if existing:
            raise CertificateError(
                f"{', '.join(existing)} already in {directory}; "
                "use --force to replace the certificates"
            )
    caPEM, caKeyPEM, serverPEM, serverKeyPEM = makeCertificates(days, now)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, data, mode in [
            (files.ca, caPEM, _CERTIFICATE_MODE),
            (files.caKey, caKeyPEM, _KEY_MODE),
            (files.server, serverPEM, _CERTIFICATE_MODE),
            (files.serverKey, serverKeyPEM, _KEY_MODE),
        ]:
            if force and os.path.lexists(path):
                # A fresh file, so that a key never inherits looser modes.
                path.unlink()
            _writeNew(path, data, mode)
    except FileExistsError as e:
        raise CertificateError(
            f"{e.filename} appeared while writing; use --force to replace it"
        ) from None
    except OSError as e:
        where = e.filename if e.filename is not None else directory
        raise CertificateError(f"cannot write {where}: {e.strerror}") from None
    return files


def listenDescription(files: CertificateFiles, port: int = EXAMPLE_PORT) -> str:
    """
    The C{--listen} endpoint string that serves C{files} on loopback.
    """
    key = quoteStringArgument(str(files.serverKey.absolute()))
    certificate = quoteStringArgument(str(files.server.absolute()))
    return f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={certificate}"


def clientCommand(files: CertificateFiles) -> str:
    """
    The client command line that trusts C{files}' CA.
    """
    return "python -m sockplay.client --tls --ca " + shlex.quote(str(files.ca.absolute()))


def _days(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"--days must be a positive whole number, not {value!r}")
    return number


class Options(usage.Options):
    """
    Command-line options of C{python -m sockplay.certs}.
    """

    synopsis = "[options] DIR"
    longdesc = (
        "Write a throwaway local CA (ca.pem, ca-key.pem) and a server certificate for "
        "localhost, 127.0.0.1 and ::1 (server.pem, server-key.pem) in DIR, and print "
        "the server and client commands that use them."
    )
    optFlags = [["force", None, "Replace existing files."]]
    optParameters = [
        ["days", None, DEFAULT_DAYS, "How many days the certificates stay valid.", _days],
    ]

    def parseArgs(self, directory: str) -> None:  # type: ignore[override]
        self["directory"] = Path(directory)


def main(argv: Sequence[str] | None = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), write the files and print how
    to use them. Exits 1 if they cannot be written, 2 on a usage error.
    """
    config = Options()  # type: ignore[no-untyped-call]
    try:
        config.parseOptions(list(argv) if argv is not None else None)  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        print("Try 'python -m sockplay.certs --help'.", file=sys.stderr)
        sys.exit(2)
    if _CRYPTOGRAPHY_MISSING:
        print(
            "Error: sockplay.certs needs the cryptography package "
            "(pip install 'sockplay[tls]')",
            file=sys.stderr,
        )
        sys.exit(1)
    try:
        files = writeCertificates(config["directory"], config["days"], bool(config["force"]))
    except CertificateError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    names = ", ".join(SERVER_NAMES)
    print(
        f"Wrote {', '.join(path.name for path in files)} in {config['directory']} "
        f"(a local CA and a certificate for {names}, valid for {config['days']} days)."
    )
    print(f"Server: twistd -n sockplay --listen {shlex.quote(listenDescription(files))}")
    print(f"Client: {clientCommand(files)}")


if __name__ == "__main__":
    main()
