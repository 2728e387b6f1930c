"""
Tests for the client's side of mutual TLS, SNI and ALPN, against a Twisted
TLS server built here, in the test process, on the global reactor (iterated
by hand, never run): it records what it saw of each client (the SNI name,
the ALPN offer, the client certificate's subject), which a server process
could not tell the test. The client is the real command, in a child
process, so that its output and exit status are what a user sees.

Certificates come from C{python -m sockplay.certs} (the client certificate
it writes is the one under test) and from trustme, for a CA the server does
not trust.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from support.realreactor import DEADLINE, globalReactor, resultOf, spinUntil
from support.servers import CLIENT, HELLO_LINE, LOOPBACK, assertOneErrorLine
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, TLSVersion
from zope.interface import implementer

from sockplay.certs import CLIENT_NAME, CertificateFiles, writeCertificates

PREFIX = b"Message received: "


def commonName(certificate: x509.Certificate) -> str:
    """
    The common name of C{certificate}'s subject.
    """
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """
    The CA, server and client certificates of C{python -m sockplay.certs}.
    """
    return writeCertificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def strangerCertificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """
    A client certificate and key from another CA, which the server does not
    trust.
    """
    leaf = trustme.CA().issue_cert("stranger.sockplay.invalid", common_name="stranger")
    directory = tmp_path_factory.mktemp("stranger")
    leaf.cert_chain_pems[0].write_to_path(directory / "client.pem")
    leaf.private_key_pem.write_to_path(directory / "client-key.pem")
    return directory / "client.pem", directory / "client-key.pem"


@dataclass
class Seen:
    """
    What the server saw of one connection, once its handshake completed.
    """

    serverName: bytes | None = None
    alpnOffered: list[bytes] = field(default_factory=list)
    alpnSelected: bytes | None = None
    clientSubject: str | None = None


@implementer(IHandshakeListener)
class RecordingEcho(Protocol):
    """
    The tutorial's reply to the first message, then a close; records what
    the TLS handshake showed.
    """

    def __init__(self, seen: list[Seen], offers: list[list[bytes]]) -> None:
        self.seen = seen
        self.offers = offers

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        connection: SSL.Connection = self.transport.getHandle()  # type: ignore[attr-defined]
        peer = connection.get_peer_certificate(as_cryptography=True)
        self.seen.append(
            Seen(
                connection.get_servername(),
                self.offers[-1] if self.offers else [],
                connection.get_alpn_proto_negotiated() or None,
                None if peer is None else commonName(peer),
            )
        )

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(PREFIX + data)
        self.transport.loseConnection()


class RecordingServer:
    """
    A TLS server on an ephemeral loopback port of the global reactor.

    @ivar seen: what it saw of each connection whose handshake completed.
    @ivar offers: each ALPN offer it received, in the client's order.
    """

    def __init__(
        self, certificates: CertificateFiles, requireClientCertificate: bool, tlsVersion: str
    ) -> None:
        self.seen: list[Seen] = []
        self.offers: list[list[bytes]] = []
        server = PrivateCertificate.loadPEM(
            certificates.server.read_bytes() + certificates.serverKey.read_bytes()
        )
        version = TLSVersion.TLSv1_2 if tlsVersion == "1.2" else TLSVersion.TLSv1_3
        options = CertificateOptions(
            privateKey=server.privateKey.original,
            certificate=server.original,
            verify=requireClientCertificate,
            caCerts=[Certificate.loadPEM(certificates.ca.read_bytes()).original]
            if requireClientCertificate
            else None,
            requireCertificate=requireClientCertificate,
            raiseMinimumTo=version,
            lowerMaximumSecurityTo=version,
        )
        context = options.getContext()
        context.set_alpn_select_callback(self._selectALPN)
        factory = Factory.forProtocol(lambda: RecordingEcho(self.seen, self.offers))
        self.port = globalReactor().listenSSL(0, factory, options, interface=LOOPBACK)

    def _selectALPN(self, connection: SSL.Connection, offers: list[bytes]) -> bytes:
        self.offers.append(list(offers))
        return offers[0]

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port.getHost().port}"

    def client(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run the client against this server, iterating the reactor (so that
        this server answers) until the client exits, within the deadline.
        """
        command = [*CLIENT, "--port", str(self.port.getHost().port), "--tls", *args]
        process = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        try:
            spinUntil(lambda: process.poll() is not None, "the client to exit", DEADLINE * 2)
            stdout, stderr = process.communicate(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def stop(self) -> None:
        resultOf(self.port.stopListening(), "the server to stop listening")


@pytest.fixture
def mutualServer(certificates: CertificateFiles) -> Iterator[RecordingServer]:
    """
    A TLS 1.3 server that requires a client certificate signed by the CA of
    C{certificates}.
    """
    server = RecordingServer(certificates, True, "1.3")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["1.3", "1.2"], ids=["tls1.3", "tls1.2"])
def mutualServerAnyVersion(
    request: pytest.FixtureRequest, certificates: CertificateFiles
) -> Iterator[RecordingServer]:
    """
    A server that requires a client certificate, over TLS 1.3 (where the
    server's refusal arrives after the client's handshake is done) and
    over TLS 1.2 (where it arrives inside the handshake).
    """
    server = RecordingServer(certificates, True, request.param)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plainServer(certificates: CertificateFiles) -> Iterator[RecordingServer]:
    """
    A TLS 1.3 server that asks for no client certificate.
    """
    server = RecordingServer(certificates, False, "1.3")
    try:
        yield server
    finally:
        server.stop()


def test_clientCertificateAccepted(
    mutualServerAnyVersion: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    With C{--cert} and C{--key} from the CA the server trusts, the exchange
    works, and the server saw the client certificate's subject.
    """
    result = mutualServerAnyVersion.client(
        tmp_path, "--ca", str(certificates.ca),
        "--cert", str(certificates.client), "--key", str(certificates.clientKey),
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")
    assert [seen.clientSubject for seen in mutualServerAnyVersion.seen] == [CLIENT_NAME]


def test_clientCertificateAndKeyInOneFile(
    mutualServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    Without C{--key}, the key is read from the C{--cert} file, which holds
    both.
    """
    both = tmp_path / "client-and-key.pem"
    both.write_bytes(certificates.client.read_bytes() + certificates.clientKey.read_bytes())
    result = mutualServer.client(tmp_path, "--ca", str(certificates.ca), "--cert", str(both))
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")
    assert [seen.clientSubject for seen in mutualServer.seen] == [CLIENT_NAME]


def test_clientCertificateWithInsecure(
    mutualServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    C{--insecure} presents the client certificate too.
    """
    result = mutualServer.client(
        tmp_path, "--insecure",
        "--cert", str(certificates.client), "--key", str(certificates.clientKey),
    )
    assert (result.returncode, result.stdout) == (0, HELLO_LINE.decode())
    assert [seen.clientSubject for seen in mutualServer.seen] == [CLIENT_NAME]


def test_noClientCertificate(
    mutualServerAnyVersion: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    Without a client certificate, a server that requires one refuses the
    handshake: over TLS 1.3 with a "certificate required" alert that comes
    after the client's handshake is done (so on its first read), over TLS
    1.2 with a "handshake failure" alert. Either way the client says, in
    one line, to give one with C{--cert}, and exits 1 (not "closed without
    a reply").
    """
    server = mutualServerAnyVersion
    result = server.client(tmp_path, "--ca", str(certificates.ca))
    assert (result.returncode, result.stdout) == (1, "")
    assertOneErrorLine(result.stderr, f"Error: TLS handshake with {server.address} failed: ")
    assert "give one with --cert FILE (and --key FILE)" in result.stderr
    assert server.seen == []


def test_noClientCertificateTLS13Says(
    mutualServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    Over TLS 1.3 the server's "certificate required" alert is named for
    what it is: the server requires a client certificate.
    """
    result = mutualServer.client(tmp_path, "--ca", str(certificates.ca))
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: TLS handshake with {mutualServer.address} failed: the server requires a "
        "client certificate: give one with --cert FILE (and --key FILE)\n",
    )


def test_clientCertificateFromAnotherCA(
    mutualServerAnyVersion: RecordingServer,
    certificates: CertificateFiles,
    strangerCertificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """
    A client certificate signed by a CA the server does not trust is
    refused ("unknown ca"): one line that names the C{--cert} file and
    what to check, exit 1.
    """
    server = mutualServerAnyVersion
    cert, key = strangerCertificate
    result = server.client(
        tmp_path, "--ca", str(certificates.ca), "--cert", str(cert), "--key", str(key)
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: TLS handshake with {server.address} failed: the server does not accept the "
        f"client certificate of --cert {cert} (unknown ca): is it signed by a CA the server "
        "trusts (its --tls-client-ca), and valid now?\n",
    )


def test_probeWithoutClientCertificate(
    mutualServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    A probe over a kept-open connection reports the same line for each
    lost probe, and exits 1.
    """
    result = mutualServer.client(
        tmp_path, "--ca", str(certificates.ca), "--count", "2", "--interval", "0",
        "--keep-open", "--framing", "line",
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    expected = (
        f"error=TLS handshake with {mutualServer.address} failed: the server requires a "
        "client certificate: give one with --cert FILE (and --key FILE)"
    )
    assert lines[:2] == [f"seq=1 {expected}", f"seq=2 {expected}"]
    assert "2 sent, 0 received, 100% loss" in result.stdout


@pytest.mark.parametrize("insecure", [False, True], ids=["verified", "insecure"])
def test_serverNameSentAsSNI(
    insecure: bool, plainServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    C{--server-name} is sent as the TLS server name (SNI), with
    C{--insecure} too.
    """
    trust = ["--insecure"] if insecure else ["--ca", str(certificates.ca)]
    result = plainServer.client(tmp_path, *trust, "--server-name", "localhost")
    assert (result.returncode, result.stdout) == (0, HELLO_LINE.decode())
    assert [seen.serverName for seen in plainServer.seen] == [b"localhost"]


def test_noSNIForAnAddress(
    plainServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    An IP address (here the default, C{--host 127.0.0.1}) is checked against
    the certificate but not sent as SNI, which RFC 6066 forbids.
    """
    result = plainServer.client(tmp_path, "--ca", str(certificates.ca))
    assert (result.returncode, result.stdout, result.stderr) == (0, HELLO_LINE.decode(), "")
    assert [seen.serverName for seen in plainServer.seen] == [None]


@pytest.mark.parametrize("insecure", [False, True], ids=["verified", "insecure"])
def test_alpnOfferInOrder(
    insecure: bool, plainServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    C{--alpn}, repeated, offers the protocols in the order given; the
    single-request output stays the tutorial's line.
    """
    trust = ["--insecure"] if insecure else ["--ca", str(certificates.ca)]
    result = plainServer.client(tmp_path, *trust, "--alpn", "sockplay/1", "--alpn", "h2")
    assert (result.returncode, result.stdout) == (0, HELLO_LINE.decode())
    assert plainServer.offers == [[b"sockplay/1", b"h2"]]
    assert [seen.alpnSelected for seen in plainServer.seen] == [b"sockplay/1"]


def test_noALPNOffered(
    plainServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    Without C{--alpn}, no ALPN is offered.
    """
    result = plainServer.client(tmp_path, "--ca", str(certificates.ca))
    assert result.returncode == 0
    assert plainServer.offers == []
    assert [seen.alpnSelected for seen in plainServer.seen] == [None]


def test_probeJSONReportsALPN(
    plainServer: RecordingServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """
    With C{--alpn}, each probe of a C{--count --json} report carries the
    protocol the server selected.
    """
    result = plainServer.client(
        tmp_path, "--ca", str(certificates.ca), "--alpn", "h2", "--alpn", "http/1.1",
        "--count", "2", "--interval", "0", "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [probe["alpn"] for probe in report["probes"]] == ["h2", "h2"]
