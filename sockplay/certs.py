"""
C{python -m sockplay.certs DIR}: a throwaway local CA, a server
certificate and a client certificate for trying sockplay over TLS (and
mutual TLS) on this machine, made with
U{trustme<https://trustme.readthedocs.io/>}.

It writes, in C{DIR}:

  - C{ca.pem}, C{ca-key.pem}: a CA that exists only in this directory;
  - C{server.pem}, C{server-key.pem}: a certificate signed by that CA, valid
    for C{localhost}, C{127.0.0.1} and C{::1}, and its key;
  - C{client.pem}, C{client-key.pem}: a client certificate signed by the
    same CA (subject C{CN=sockplay client}), for mutual TLS, and its key;

and, if it makes C{DIR}, a C{.gitignore} that keeps the keys out of git;
then prints the C{twistd -n sockplay --listen ssl:...} and
C{python -m sockplay.client --tls --ca ...} commands that use them, and the
pair that adds mutual TLS (the server's C{--tls-client-ca}, the client's
C{--cert} and C{--key}). The keys are readable by their owner only. Nothing
is ever trusted system-wide.

The server and client certificates are valid for a short time
(L{DEFAULT_DAYS}, or C{--days}). The CA certificate is not: trustme dates every CA from 2000 to
3000 and offers no way to change that. The CA is trusted only by a client
given its C{ca.pem}, but for as long as one is, whoever holds
C{ca-key.pem} can sign certificates that client accepts; delete the
directory when done with it.

trustme also marks the subjectAltName and extendedKeyUsage of the
certificates it issues critical (their extendedKeyUsage allows both server
and client authentication). OpenSSL (so sockplay's client, Python's C{ssl},
C{openssl s_client}) accepts that; a verifier that enforces the web PKI's
rules to the letter, such as C{cryptography.x509.verification} by default,
does not.
"""

from __future__ import annotations

import datetime
import getopt
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from sockplay.cli import DEFAULT_PORT, CommandOptions, exitWithError, number, parseOrExit

try:
    import trustme
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )
except ImportError:  # pragma: no cover - depends on the installation
    _TRUSTME_MISSING = True
else:
    _TRUSTME_MISSING = False

__all__ = [
    "CLIENT_NAME",
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "SERVER_NAMES",
    "CertificateError",
    "CertificateFiles",
    "Options",
    "clientCommand",
    "listenDescription",
    "main",
    "serverCommand",
    "writeCertificates",
]

# Short on purpose: these are for trying things out, and a leaked throwaway
# key should not stay useful for long.
DEFAULT_DAYS = 30

# The longest --days: a century. A throwaway certificate has no use for
# more, and the date stays far within both the CA's own validity (to the
# year 3000) and what a date can hold (the year 9999).
MAX_DAYS = 36500

# What the server certificate is valid for: this machine, by name and by
# loopback address.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")

# The client certificate's subject common name: what a server shows as the
# client (sockplay's --info, a proxy's log). Its subjectAltName (which
# trustme requires, and RFC 5280 requires non-empty) is a DNS name under
# .invalid, which names no host: the certificate identifies a client.
CLIENT_NAME = "sockplay client"
_CLIENT_ALT_NAME = "client.sockplay.invalid"

# The port in the printed server command: the server's default port.
EXAMPLE_PORT = DEFAULT_PORT

# Start validity a little in the past, so that a clock that is slightly
# behind does not reject a certificate made a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)

# The organization named in both certificates, so that they say who made them.
_ORGANIZATION = "sockplay"

_KEY_MODE = 0o600

# Written in a directory that writeCertificates creates: git ignores it all.
_GITIGNORE = b"# Written by python -m sockplay.certs: private keys, never to be committed.\n*\n"
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
    @ivar client: the client certificate (PEM) (the client's C{--cert}).
    @ivar clientKey: the client's private key (PEM, PKCS#8, unencrypted)
        (the client's C{--key}).
    """

    ca: Path
    caKey: Path
    server: Path
    serverKey: Path
    client: Path
    clientKey: Path

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
            directory / "client.pem",
            directory / "client-key.pem",
        )


def _pkcs8(key: trustme.Blob) -> bytes:
    """
    C{key} in PKCS#8, the format these files have always had (trustme
    writes OpenSSL's traditional one).
    """
    return load_pem_private_key(key.bytes(), None).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )


def makeCertificates(
    days: int = DEFAULT_DAYS, now: datetime.datetime | None = None
) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
    """
    Make a new CA, a server certificate that it signs, valid for
    L{SERVER_NAMES}, and a client certificate that it signs, for
    L{CLIENT_NAME}.

    @param days: how long the server and client certificates stay valid,
        from C{now} (the CA's validity is trustme's own; see the module
        docstring).
    @param now: the time they are made (default: the current time, UTC).
    @return: the PEM bytes of the CA certificate, the CA key, the server
        certificate, the server key, the client certificate and the client
        key.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    # path_length=0: the CA signs certificates, never another CA.
    ca = trustme.CA(
        path_length=0,
        organization_name=_ORGANIZATION,
        organization_unit_name="sockplay throwaway local CA",
    )
    notBefore = now - _BACKDATE
    notAfter = now + datetime.timedelta(days=days)
    server = ca.issue_cert(
        *SERVER_NAMES,
        common_name=SERVER_NAMES[0],
        organization_name=_ORGANIZATION,
        not_before=notBefore,
        not_after=notAfter,
    )
    client = ca.issue_cert(
        _CLIENT_ALT_NAME,
        common_name=CLIENT_NAME,
        organization_name=_ORGANIZATION,
        not_before=notBefore,
        not_after=notAfter,
    )
    return (
        ca.cert_pem.bytes(),
        _pkcs8(ca.private_key_pem),
        server.cert_chain_pems[0].bytes(),
        _pkcs8(server.private_key_pem),
        client.cert_chain_pems[0].bytes(),
        _pkcs8(client.private_key_pem),
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
    Make a CA, a server and a client certificate (L{makeCertificates}) and
    write them
    in C{directory}, which is created if needed, with a C{.gitignore} that
    keeps all of it out of git. Key files are created readable by their
    owner only.

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
    caPEM, caKeyPEM, serverPEM, serverKeyPEM, clientPEM, clientKeyPEM = makeCertificates(
        days, now
    )
    try:
        if not directory.exists():
            directory.mkdir(parents=True)
            # Private keys: never to be committed, wherever the directory is
            # (a checkout, typically). Only in a directory made here, where
            # ignoring everything cannot hide anything else.
            _writeNew(directory / ".gitignore", _GITIGNORE, _CERTIFICATE_MODE)
        for path, data, mode in [
            (files.ca, caPEM, _CERTIFICATE_MODE),
            (files.caKey, caKeyPEM, _KEY_MODE),
            (files.server, serverPEM, _CERTIFICATE_MODE),
            (files.serverKey, serverKeyPEM, _KEY_MODE),
            (files.client, clientPEM, _CERTIFICATE_MODE),
            (files.clientKey, clientKeyPEM, _KEY_MODE),
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


def clientCommand(files: CertificateFiles, mutual: bool = False) -> str:
    """
    The client command line that trusts C{files}' CA.

    @param mutual: present C{files}' client certificate too.
    """
    command = "python -m sockplay.client --tls --ca " + shlex.quote(str(files.ca.absolute()))
    if mutual:
        command += " --cert " + shlex.quote(str(files.client.absolute()))
        command += " --key " + shlex.quote(str(files.clientKey.absolute()))
    return command


def serverCommand(files: CertificateFiles, mutual: bool = False) -> str:
    """
    The server command line that serves C{files}' server certificate.

    @param mutual: require a client certificate signed by C{files}' CA
        (the server's C{--tls-client-ca}).
    """
    command = "twistd -n sockplay --listen " + shlex.quote(listenDescription(files))
    if mutual:
        command += " --tls-client-ca " + shlex.quote(str(files.ca.absolute()))
    return command


class Options(CommandOptions):
    """
    Command-line options of C{python -m sockplay.certs}.
    """

    program = "python -m sockplay.certs"
    arguments = "[options] DIR"
    longdesc = (
        "Write a throwaway local CA (ca.pem, ca-key.pem), a server certificate for "
        "localhost, 127.0.0.1 and ::1 (server.pem, server-key.pem) and a client "
        "certificate (client.pem, client-key.pem) in DIR, and print the server and "
        "client commands that use them, with and without mutual TLS."
    )
    optFlags = [["force", None, "Replace existing files."]]
    optParameters = [
        ["days", None, DEFAULT_DAYS, f"How many days the server and client certificates "
         f"stay valid "
         f"(at most {MAX_DAYS}).", number("--days", int, 0, MAX_DAYS, positive=True)],
    ]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}, which may come before or after DIR
        (C{certs --force --days 2} as well as C{--force certs}), as GNU
        tools take them; C{--} ends the options.
        """
        if options is None:
            options = sys.argv[1:]
        try:
            opts, args = getopt.gnu_getopt(list(options), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        # Options first, then the arguments, which Twisted's parser (plain
        # getopt, which stops at the first argument) then takes in order.
        ordered: list[str] = []
        for opt, value in opts:
            takesValue = (
                f"{opt[2:]}=" in self.longOpt
                if opt.startswith("--")
                else f"{opt[1:]}:" in self.shortOpt
            )
            ordered += [opt, value] if takesValue else [opt]
        super().parseOptions([*ordered, "--", *args])

    def parseArgs(self, directory: str) -> None:  # type: ignore[override]
        if not directory:
            # Path("") is the current directory: say so rather than write there.
            raise usage.UsageError("DIR must be a directory name, not ''; use . for this one")
        self["directory"] = Path(directory)


def main(argv: Sequence[str] | None = None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}), write the files and print how
    to use them. Exits 1 if they cannot be written, 2 on a usage error.
    """
    config = Options()  # type: ignore[no-untyped-call]
    parseOrExit(config, argv)
    if _TRUSTME_MISSING:
        exitWithError("sockplay.certs needs the trustme package (pip install sockplay)")
    try:
        files = writeCertificates(config["directory"], config["days"], bool(config["force"]))
    except CertificateError as e:
        exitWithError(str(e))
    names = ", ".join(SERVER_NAMES)
    print(
        f"Wrote {', '.join(path.name for path in files)} in {config['directory']} "
        f"(a local CA, a server certificate for {names}, and a client certificate, "
        f"both valid for {config['days']} days)."
    )
    print(f"Server: {serverCommand(files)}")
    print(f"Client: {clientCommand(files)}")
    print(f"Mutual TLS server: {serverCommand(files, mutual=True)}")
    print(f"Mutual TLS client: {clientCommand(files, mutual=True)}")


if __name__ == "__main__":
    main()
