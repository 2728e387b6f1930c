"""
Tests for TLS: the throwaway certificates of C{python -m sockplay.certs};
the client's TLS options against a real C{twistd -n sockplay --listen
ssl:...}; and both sides against OpenSSL's own C{s_client} and C{s_server}.

Everything runs on loopback, on ephemeral ports. Nothing sleeps: processes
are awaited on their output, each with a bound.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
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
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from sockplay.certs import (
    CertificateFiles,
    listenDescription,
    writeCertificates,
)
from sockplay.client.failures import ClientError
from sockplay.client.protocol import ReplyClientProtocol
from sockplay.client.tls import (
    ClientCertificateError,
    TrustError,
    describeTLSFailure,
    loadClientCertificate,
    loadTrustRoot,
)


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
    eof framing cannot work over TLS: with C{--tls}, and over a
    C{--connect ssl:} endpoint, it is a usage error (exit 2).
    """
    result = tlsClient(tlsServer, tmp_path, "--insecure", "--framing", "eof")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: --framing eof cannot be used with TLS")
    result = run(
        [*CLIENT, "--connect", f"ssl:host={LOOPBACK}:port={tlsServer.port}", "--framing", "eof"],
        tmp_path,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: --framing eof cannot be used with TLS")


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
    C{-rev} mode, which answers each line with the line reversed: a reply
    that is not an echo, printed, and exit status 4 once C{--timeout} shows
    that no other line follows it (it could have been a banner).
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
             "--server-name", "localhost", "--framing", "line", "--timeout", "1"],
            tmp_path,
        )
        assert (result.returncode, result.stderr) == (
            4, f"Error: the reply from {LOOPBACK}:{port} is not an echo of the message\n"
        ), server.transcript()
        assert result.stdout == "Response from the server: ! revreS olleH\n"
        # -naccept 1: it ends once the client has closed.
        assert server.waitForExit() == 0, server.transcript()
    finally:
        server.stop()


def test_sslConnectVerifies(
    tlsServer: ServerProcess, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    A C{--connect ssl:} string verifies the server as C{--tls} does: against
    the system's CAs it fails (the throwaway CA is not among them), with
    C{--ca} it succeeds, checking the name in C{host=}; C{--insecure} skips
    the check, with its warning.
    """
    connect = f"ssl:host=localhost:port={tlsServer.port}"
    result = run([*CLIENT, "--connect", connect], tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(result.stderr, f"Error: cannot verify the TLS certificate of {connect}")
    result = run([*CLIENT, "--connect", connect, "--ca", str(certificates.ca)], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")
    result = run([*CLIENT, "--connect", connect, "--insecure"], tmp_path)
    assert (result.returncode, result.stdout) == (0, HELLO_LINE.decode())
    assert result.stderr.startswith("Warning: --insecure")


# The client certificate (--cert, --key).


@pytest.fixture
def encryptedKey(certificates: CertificateFiles, tmp_path: Path) -> Path:
    """
    The client key, encrypted with a passphrase.
    """
    key = load_pem_private_key(certificates.clientKey.read_bytes(), None)
    path = tmp_path / "encrypted-key.pem"
    path.write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret"))
    )
    return path


def test_clientCertificateLoads(certificates: CertificateFiles, tmp_path: Path) -> None:
    """
    A certificate and its key, in two files or in one, load as the client
    certificate.
    """
    loaded = loadClientCertificate(str(certificates.client), str(certificates.clientKey))
    subject = loaded.original.to_cryptography().subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sockplay client"
    both = tmp_path / "both.pem"
    both.write_bytes(certificates.clientKey.read_bytes() + certificates.client.read_bytes())
    assert loadClientCertificate(str(both)).digest() == loaded.digest()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-cert", "cannot read --cert {cert}: No such file or directory"),
        ("missing-key", "cannot read --key {key}: No such file or directory"),
        ("cert-not-pem", "--cert {cert} holds no PEM certificate"),
        ("key-not-pem", "--key {key} holds no PEM private key"),
        ("no-key-in-cert", "--cert {cert} holds no PEM private key (give the key's file with "
         "--key FILE)"),
        ("other-key", "the private key in --key {key} is not the key of the certificate in "
         "--cert {cert}"),
        ("encrypted-key", "the private key in --key {key} is encrypted; the client needs it "
         "unencrypted"),
    ],
)
def test_badClientCertificate(
    case: str,
    message: str,
    certificates: CertificateFiles,
    otherCertificates: CertificateFiles,
    encryptedKey: Path,
    tmp_path: Path,
) -> None:
    """
    A C{--cert} or C{--key} file that cannot be used is refused with one
    line that names the file and what is wrong with it.
    """
    cert, key = str(certificates.client), str(certificates.clientKey)
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    if case == "missing-cert":
        cert = str(tmp_path / "nothing.pem")
    elif case == "missing-key":
        key = str(tmp_path / "nothing.pem")
    elif case == "cert-not-pem":
        cert = str(junk)
    elif case == "key-not-pem":
        key = str(junk)
    elif case == "no-key-in-cert":
        key = cert
    elif case == "other-key":
        key = str(otherCertificates.clientKey)
    elif case == "encrypted-key":
        key = str(encryptedKey)
    with pytest.raises(ClientCertificateError) as raised:
        loadClientCertificate(cert, key if key != cert else None)
    assert str(raised.value) == message.format(cert=cert, key=key)


def test_badClientCertificateIsAUsageError(tmp_path: Path) -> None:
    """
    The real command, with a C{--cert} file that does not exist: one error
    line naming it, exit status 2, before connecting anywhere.
    """
    result = run([*CLIENT, "--tls", "--cert", "nothing.pem", "--port", "1"], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "Error: cannot read --cert nothing.pem: No such file or directory\n"
    )


def _context(tlsVersion: int) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(tlsVersion)
    context.set_max_proto_version(tlsVersion)
    return context


def _handshakeError(
    certificates: CertificateFiles, tlsVersion: int, clientCertificate: tuple[Path, Path] | None
) -> SSL.Error:
    """
    The error OpenSSL gives the client when a server that requires a client
    certificate signed by C{certificates}' CA ends the handshake: a real
    handshake, in memory.
    """
    server = _context(tlsVersion)
    server.use_certificate_file(str(certificates.server))
    server.use_privatekey_file(str(certificates.serverKey))
    server.load_verify_locations(str(certificates.ca))
    server.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    client = _context(tlsVersion)
    client.load_verify_locations(str(certificates.ca))
    client.set_verify(SSL.VERIFY_PEER)
    if clientCertificate is not None:
        client.use_certificate_file(str(clientCertificate[0]))
        client.use_privatekey_file(str(clientCertificate[1]))
    serverSide = SSL.Connection(server, None)
    serverSide.set_accept_state()
    clientSide = SSL.Connection(client, None)
    clientSide.set_connect_state()
    for _ in range(10):
        for side, peer in [(clientSide, serverSide), (serverSide, clientSide)]:
            try:
                side.do_handshake()
                # Over TLS 1.3 the client is done before the server has
                # checked its certificate: the refusal comes on a read.
                side.recv(1024)
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                if side is clientSide:
                    return e
            try:
                peer.bio_write(side.bio_read(65536))
            except SSL.WantReadError:
                pass
    pytest.fail("the handshake did not fail on the client's side")


@pytest.mark.parametrize(
    "tlsVersion, certificate, expected",
    [
        (SSL.TLS1_3_VERSION, None, "the server requires a client certificate: give one with "
         "--cert FILE (and --key FILE)"),
        (SSL.TLS1_2_VERSION, None, "handshake failure: does the server require a client "
         "certificate? give one with --cert FILE (and --key FILE)"),
        (SSL.TLS1_3_VERSION, "other", "the server does not accept the client certificate of "
         "--cert {cert} (unknown ca): is it signed by a CA the server trusts (its "
         "--tls-client-ca), and valid now?"),
        (SSL.TLS1_2_VERSION, "other", "the server does not accept the client certificate of "
         "--cert {cert} (unknown ca): is it signed by a CA the server trusts (its "
         "--tls-client-ca), and valid now?"),
    ],
    ids=["none-tls1.3", "none-tls1.2", "other-ca-tls1.3", "other-ca-tls1.2"],
)
def test_describeClientCertificateRefusal(
    tlsVersion: int,
    certificate: str | None,
    expected: str,
    certificates: CertificateFiles,
    otherCertificates: CertificateFiles,
) -> None:
    """
    The alerts by which a server refuses a missing client certificate or
    one it does not trust, as OpenSSL reports them to the client, read as
    one line that says what to do.
    """
    files = None if certificate is None else (otherCertificates.client, otherCertificates.clientKey)
    error = _handshakeError(certificates, tlsVersion, files)
    cert = None if files is None else str(files[0])
    message = describeTLSFailure(Failure(error), "127.0.0.1:1", str(certificates.ca), cert)
    assert message == "TLS handshake with 127.0.0.1:1 failed: " + expected.format(cert=cert)


def test_handshakeFailureWithCertificateNotBlamedOnIt(certificates: CertificateFiles) -> None:
    """
    A "handshake failure" alert when a client certificate was given is
    not blamed on a missing one: it is reported as OpenSSL says it.
    """
    error = _handshakeError(certificates, SSL.TLS1_2_VERSION, None)
    message = describeTLSFailure(
        Failure(error), "127.0.0.1:1", None, str(certificates.client)
    )
    assert message == "TLS handshake with 127.0.0.1:1 failed: tls alert handshake failure"


def test_unknownCAWithoutCertificateNotBlamedOnIt(
    certificates: CertificateFiles, otherCertificates: CertificateFiles
) -> None:
    """
    An "unknown ca" alert without a C{--cert} says what OpenSSL says: the
    message about a refused client certificate needs one to have been
    given.
    """
    error = _handshakeError(
        certificates, SSL.TLS1_3_VERSION, (otherCertificates.client, otherCertificates.clientKey)
    )
    message = describeTLSFailure(Failure(error), "127.0.0.1:1", None)
    assert message == "TLS handshake with 127.0.0.1:1 failed: tlsv1 alert unknown ca"
