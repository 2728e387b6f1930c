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
from sockplay.client.tls import TrustError, loadTrustRoot


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
