"""
Tests for TLS: the throwaway certificates of C{python -m sockplay.certs};
the client's TLS options against a real C{twistd -n sockplay --listen
ssl:...}; and both sides against OpenSSL's own C{s_client} and C{s_server}.

Everything runs on loopback, on ephemeral ports. Nothing sleeps: processes
are awaited on their output, each with a bound.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from support.fakes import HalfCloseableTransport
from support.servers import (
    CLIENT,
    DEADLINE,
    HELLO,
    HELLO_LINE,
    HELLO_REPLY,
    LOOPBACK,
    SOCKET_TIMEOUT,
    TWISTD,
    BlockingServer,
    ServerProcess,
    assertOneErrorLine,
    run,
    tutorialHandler,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.certs import (
    DEFAULT_DAYS,
    CertificateError,
    CertificateFiles,
    listenDescription,
    main,
    writeCertificates,
)
from sockplay.client.command import ClientError, ReplyClientProtocol
from sockplay.client.tls import TrustError, loadTrustRoot

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """
    A CA and a server certificate, shared by the tests that only read them.
    """
    return writeCertificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def otherCertificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """
    Another CA, which did not sign the server's certificate.
    """
    return writeCertificates(tmp_path_factory.mktemp("other"))


def test_serverCertificateNames(certificates: CertificateFiles) -> None:
    """
    The server certificate is valid for C{localhost}, C{127.0.0.1} and
    C{::1}, as subject alternative names (which is all that clients check).
    """
    names = load(certificates.server).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
    ids=["localhost", "127.0.0.1", "::1"],
)
def test_caSignsServerCertificate(certificates: CertificateFiles, name: x509.GeneralName) -> None:
    """
    The server certificate verifies, for each of its names, against the CA
    alone, by the rules of the web PKI (cryptography's verifier, which is
    stricter than OpenSSL's about extensions).
    """
    ca = load(certificates.ca)
    verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .time(datetime.datetime.now(datetime.timezone.utc))
        .build_server_verifier(name)  # type: ignore[arg-type]
    )
    chain = verifier.verify(load(certificates.server), [])
    assert chain[-1] == ca


def test_serverKeyMatchesCertificate(certificates: CertificateFiles) -> None:
    """
    server-key.pem is the key of server.pem, and ca-key.pem of ca.pem.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for certificate, key in [
        (certificates.server, certificates.serverKey),
        (certificates.ca, certificates.caKey),
    ]:
        private = load_pem_private_key(key.read_bytes(), None)
        assert private.public_key() == load(certificate).public_key()


def test_validityIsShort(tmp_path: Path) -> None:
    """
    Both certificates are valid for L{DEFAULT_DAYS} days (30) from when they
    were made, starting a few minutes earlier for clocks slightly behind.
    """
    files = writeCertificates(tmp_path, now=NOW)
    for path in (files.ca, files.server):
        certificate = load(path)
        assert certificate.not_valid_after_utc == NOW + datetime.timedelta(days=DEFAULT_DAYS)
        assert NOW - datetime.timedelta(hours=1) < certificate.not_valid_before_utc < NOW
    assert DEFAULT_DAYS == 30


def test_keyFilesOwnerOnly(certificates: CertificateFiles) -> None:
    """
    Key files can be read by their owner only; certificates by anyone, but
    written by their owner only.
    """
    for key in (certificates.caKey, certificates.serverKey):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for certificate in (certificates.ca, certificates.server):
        assert stat.S_IMODE(certificate.stat().st_mode) & 0o022 == 0


def test_refusesToOverwrite(tmp_path: Path) -> None:
    """
    Without C{force}, nothing is written if any of the files exists, and
    the error names it.
    """
    (tmp_path / "server.pem").write_bytes(b"mine")
    with pytest.raises(CertificateError, match=r"server\.pem already in .*--force"):
        writeCertificates(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.pem"]
    assert (tmp_path / "server.pem").read_bytes() == b"mine"


def test_forceReplaces(tmp_path: Path) -> None:
    """
    With C{force}, the files are replaced by new ones, and a key file whose
    mode was loosened is private again.
    """
    first = writeCertificates(tmp_path)
    oldKey = first.serverKey.read_bytes()
    first.serverKey.chmod(0o644)
    second = writeCertificates(tmp_path, force=True)
    assert second.serverKey.read_bytes() != oldKey
    assert stat.S_IMODE(second.serverKey.stat().st_mode) == 0o600


def test_listenDescriptionLoads(tmp_path: Path) -> None:
    """
    The printed C{--listen} string is one that Twisted's C{ssl:} endpoint
    parser accepts, loading the key and certificate, even from a directory
    whose name has a colon (which endpoint strings escape).
    """
    files = writeCertificates(tmp_path / "odd:name")
    description = listenDescription(files, 0)
    assert description.startswith("ssl:0:interface=127.0.0.1:privateKey=")
    assert serverFromString(None, description) is not None


def test_certsCommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{python -m sockplay.certs DIR} writes the files and prints the server
    and client commands that use them; run again, it refuses with one error
    line and exit status 1; without DIR it is a usage error (exit 2).
    """
    main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    files = CertificateFiles.inDirectory(tmp_path)
    assert out == [
        f"Wrote ca.pem, ca-key.pem, server.pem, server-key.pem in {tmp_path} (a local CA and "
        f"a certificate for localhost, 127.0.0.1, ::1, valid for 30 days).",
        f"Server: twistd -n sockplay --listen {listenDescription(files)}",
        f"Client: python -m sockplay.client --tls --ca {files.ca}",
    ]
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 1
    assertOneErrorLine(capsys.readouterr().err, "Error: ca.pem, ca-key.pem, server.pem")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2


@pytest.mark.parametrize("content", [None, b"not a certificate\n"], ids=["missing", "empty"])
def test_badCAFile(tmp_path: Path, content: bytes | None) -> None:
    """
    A C{--ca} file that cannot be read or holds no certificate is refused
    with a message that names it.
    """
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TrustError, match=re.escape(str(path))):
        loadTrustRoot(str(path))


@implementer(ISSLTransport)
class TLSTransport(HalfCloseableTransport):
    """
    A transport that, like Twisted's TLS one, looks half-closeable but is
    TLS.
    """


def test_eofFramingNeedsHalfClose() -> None:
    """
    eof framing over TLS (C{--connect ssl:...}) fails with a clear reason
    instead of half-closing the TCP connection under the TLS session.
    """
    protocol = ReplyClientProtocol(HELLO, "eof")
    transport = TLSTransport()
    protocol.makeConnection(transport)
    failures: list[Failure] = []
    protocol.reply.addErrback(failures.append)
    assert failures and failures[0].check(ClientError)
    assert "eof framing needs a transport that can half-close" in str(failures[0].value)
    assert not transport.writeClosed
    assert transport.disconnecting


# Real processes on loopback.


@pytest.fixture(scope="module")
def tlsServer(
    certificates: CertificateFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """
    C{twistd -n sockplay} (raw framing, one reply then close) listening with
    TLS on an ephemeral loopback port, with the generated certificate.
    """
    command = [*TWISTD, "--listen", listenDescription(certificates, 0)]
    server = ServerProcess(command, tmp_path_factory.mktemp("tls-server"))
    try:
        server.waitUntilReady()
        yield server
    finally:
        server.stop()


def tlsClient(server: ServerProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([*CLIENT, "--port", str(server.port), "--tls", *args], cwd)


def test_clientVerifiesServer(
    tlsServer: ServerProcess, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    C{--tls --ca ca.pem} verifies the server's certificate against the CA
    and against the address connected to (127.0.0.1), and prints the reply.
    """
    result = tlsClient(tlsServer, tmp_path, "--ca", str(certificates.ca))
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_clientVerifiesServerName(
    tlsServer: ServerProcess, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    C{--server-name} is the name checked instead of C{--host}.
    """
    result = tlsClient(
        tlsServer, tmp_path, "--ca", str(certificates.ca), "--server-name", "localhost"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_clientWrongServerName(
    tlsServer: ServerProcess, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    A certificate that is not valid for the name checked is one error line,
    naming the problem, and exit status 1.
    """
    result = tlsClient(
        tlsServer, tmp_path, "--ca", str(certificates.ca), "--server-name", "wrong.example"
    )
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(result.stderr, f"Error: the TLS certificate of {LOOPBACK}:{tlsServer.port}")
    assert "not valid for 'wrong.example' (hostname mismatch" in result.stderr


@pytest.mark.parametrize("trust", ["other-ca", "platform"])
def test_clientUntrustedCertificate(
    trust: str,
    tlsServer: ServerProcess,
    otherCertificates: CertificateFiles,
    tmp_path: Path,
) -> None:
    """
    A certificate signed by a CA that the client does not trust (another
    C{--ca}, or without C{--ca} the platform's CAs) is one error line, exit
    status 1.
    """
    args = ["--ca", str(otherCertificates.ca)] if trust == "other-ca" else []
    result = tlsClient(tlsServer, tmp_path, *args)
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(
        result.stderr,
        f"Error: cannot verify the TLS certificate of {LOOPBACK}:{tlsServer.port}: "
        "certificate verify failed (not signed by ",
    )


def test_clientInsecure(tlsServer: ServerProcess, tmp_path: Path) -> None:
    """
    C{--insecure} skips verification, says so on stderr, and gets the reply.
    """
    result = tlsClient(tlsServer, tmp_path, "--insecure")
    assert (result.returncode, result.stdout) == (0, HELLO_LINE.decode())
    assert result.stderr.startswith("Warning: --insecure: ")
    assert len(result.stderr.splitlines()) == 1


def test_clientTLSWithConnect(
    tlsServer: ServerProcess, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    C{--tls} wraps a C{--connect} endpoint too, checking C{--server-name}.
    """
    result = run(
        [*CLIENT, "--connect", f"tcp:host={LOOPBACK}:port={tlsServer.port}", "--tls",
         "--ca", str(certificates.ca), "--server-name", "localhost"],
        tmp_path,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")


def test_clientEOFFramingOverTLS(tlsServer: ServerProcess, tmp_path: Path) -> None:
    """
    eof framing cannot work over TLS: with C{--tls} it is a usage error
    (exit 2); over a C{--connect ssl:} endpoint it is one error line saying
    why (exit 1).
    """
    result = tlsClient(tlsServer, tmp_path, "--insecure", "--framing", "eof")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: --framing eof cannot be used with --tls")
    result = run(
        [*CLIENT, "--connect", f"ssl:host={LOOPBACK}:port={tlsServer.port}", "--framing", "eof"],
        tmp_path,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(result.stderr, "Error: eof framing needs a transport that can half-close")


def test_clientTLSToPlainServer(tmp_path: Path) -> None:
    """
    TLS to a server that does not speak it is one error line.
    """
    server = BlockingServer(tutorialHandler)
    result = run([*CLIENT, "--port", str(server.port), "--tls", "--insecure"], tmp_path)
    server.join()
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines()[1:] == [
        f"Error: TLS handshake with {LOOPBACK}:{server.port} failed: wrong version number "
        "(is it a TLS server?)"
    ]


def test_serverClosesTLSCleanly(tlsServer: ServerProcess, certificates: CertificateFiles) -> None:
    """
    Over TLS the server cannot half-close, so after its reply it closes the
    TLS session properly (close_notify): Python's ssl module, told to treat
    a bare TCP close as an error, reads the reply and then a clean end.
    """
    context = ssl.create_default_context(cafile=str(certificates.ca))
    with socket.create_connection((LOOPBACK, tlsServer.port), timeout=SOCKET_TIMEOUT) as raw:
        with context.wrap_socket(
            raw, server_hostname=LOOPBACK, suppress_ragged_eofs=False
        ) as sock:
            sock.sendall(HELLO)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    assert b"".join(chunks) == HELLO_REPLY


def opensslBinary() -> str:
    """
    The C{openssl} command: required in CI (where a missing one fails the
    test), optional elsewhere (where it skips).
    """
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the openssl command is missing: CI must install it (apt: openssl)")
        pytest.skip("the openssl command is not installed")
    return path


def test_opensslClientAgainstServer(
    tlsServer: ServerProcess, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    OpenSSL's C{s_client}, verifying the chain, the name C{localhost} and
    the address C{127.0.0.1} itself, gets the reply and then the server's
    close.
    """
    command = [
        opensslBinary(), "s_client", "-connect", f"{LOOPBACK}:{tlsServer.port}",
        "-CAfile", str(certificates.ca), "-verify_return_error",
        "-verify_hostname", "localhost", "-verify_ip", LOOPBACK,
        # -quiet also keeps the connection open at the end of standard
        # input, until the server closes it.
        "-quiet",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, input=HELLO, capture_output=True, timeout=DEADLINE, check=False
    )
    assert (result.returncode, result.stdout) == (0, HELLO_REPLY), result.stderr


# s_server's first line once it listens: ACCEPT 127.0.0.1:PORT
_ACCEPT = re.compile(r"ACCEPT .*:(\d+)\s*")


def test_clientAgainstOpensslServer(certificates: CertificateFiles, tmp_path: Path) -> None:
    """
    The client verifies and talks to OpenSSL's C{s_server}, here in its
    C{-rev} mode, which answers each line with the line reversed.
    """
    command = [
        opensslBinary(), "s_server", "-accept", f"{LOOPBACK}:0", "-naccept", "1", "-rev",
        "-cert", str(certificates.server), "-key", str(certificates.serverKey),
    ]
    server = ServerProcess(command, tmp_path)
    try:
        line = server.waitForLine(lambda line: bool(_ACCEPT.fullmatch(line)), "ACCEPT")
        port = int(line.split(":")[-1])
        result = run(
            [*CLIENT, "--port", str(port), "--tls", "--ca", str(certificates.ca),
             "--server-name", "localhost", "--framing", "line"],
            tmp_path,
        )
        assert (result.returncode, result.stderr) == (0, ""), server.transcript()
        assert result.stdout == "Response from the server: ! revreS olleH\n"
        # -naccept 1: it ends once the client has closed.
        assert server.waitForExit() == 0, server.transcript()
    finally:
        server.stop()
