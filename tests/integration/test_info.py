"""
C{--info} and C{--tls-client-ca} against a real server process: what a
client reads on each kind of info listener (TCP, PROXY, TLS with mutual
TLS), the clients that mutual TLS refuses, and hostile input on the info
listeners, after which the server keeps serving.

Certificates are made per test with trustme: a CA the server trusts for
client certificates, a client certificate it signed, and a second CA with
a client certificate of its own, which the server must refuse.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from support.servers import (
    EPHEMERAL,
    LOOPBACK,
    SOCKET_TIMEOUT,
    TWISTD,
    ServerPool,
    ServerProcess,
    connect,
    readWithin,
    run,
    tutorialClient,
)

# Where the server says an info listener listens.
_SERVING = re.compile(r"Serving connection info on ((?:haproxy:)?(?:tcp|ssl)):127\.0\.0\.1:(\d+) ")

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@dataclass
class PKI:
    """
    The files of one test's certificates.
    """

    ca: Path
    serverCert: Path
    serverKey: Path
    clientCert: Path
    clientKey: Path
    strangerCert: Path
    strangerKey: Path


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    """
    A CA with a server certificate (for localhost and 127.0.0.1) and a
    client certificate; and another CA's client certificate.
    """
    ca = trustme.CA()
    stranger = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.sockplay.test", common_name="sockplay test client")
    outsider = stranger.issue_cert("stranger.sockplay.test")
    files = PKI(
        ca=tmp_path / "ca.pem",
        serverCert=tmp_path / "server.pem",
        serverKey=tmp_path / "server-key.pem",
        clientCert=tmp_path / "client.pem",
        clientKey=tmp_path / "client-key.pem",
        strangerCert=tmp_path / "stranger.pem",
        strangerKey=tmp_path / "stranger-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.serverCert))
    server.private_key_pem.write_to_path(str(files.serverKey))
    client.cert_chain_pems[0].write_to_path(str(files.clientCert))
    client.private_key_pem.write_to_path(str(files.clientKey))
    outsider.cert_chain_pems[0].write_to_path(str(files.strangerCert))
    outsider.private_key_pem.write_to_path(str(files.strangerKey))
    return files


def sslListen(pki: PKI) -> str:
    """
    An C{ssl:} endpoint string on an ephemeral loopback port.
    """
    return f"ssl:0:interface={LOOPBACK}:privateKey={pki.serverKey}:certKey={pki.serverCert}"


def infoPorts(server: ServerProcess) -> dict[str, int]:
    """
    The port of each info listener the server started, by its kind
    (C{tcp}, C{ssl}, C{haproxy:tcp}).
    """
    ports = {}
    for line in server.output:
        if match := _SERVING.search(line):
            ports[match.group(1)] = int(match.group(2))
    return ports


def readInfo(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """
    Read what an info listener sends, to its close: one JSON object and a
    newline.

    @return: the object, and the raw bytes.
    """
    data, _ = readWithin(sock, SOCKET_TIMEOUT)
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data
    return json.loads(data), data


def tlsContext(
    pki: PKI, certificate: tuple[Path, Path] | None = None, alpn: list[str] | None = None
) -> ssl.SSLContext:
    """
    A client context that trusts the test CA, with a client certificate
    and ALPN offers if given.
    """
    context = ssl.create_default_context(cafile=str(pki.ca))
    if certificate is not None:
        context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def tlsExchange(port: int, context: ssl.SSLContext, serverName: str = "localhost") -> bytes:
    """
    Connect over TLS and read until the server closes.

    @return: what arrived; C{b""} if the server refused the connection
        (after a TLS 1.3 handshake that the client thinks complete, the
        refusal arrives as an alert on the first read).
    """
    with connect(port) as raw, context.wrap_socket(raw, server_hostname=serverName) as sock:
        try:
            data, _ = readWithin(sock, SOCKET_TIMEOUT)
        except ssl.SSLError:
            return b""
    return data


def assertServes(server: ServerProcess, port: int) -> None:
    """
    The server still answers the tutorial's client on C{port}, its echo
    listener.
    """
    assert tutorialClient(port)[0] == b"Message received: Hello Server !"
    assert server.process.poll() is None


def test_tcpInfoDescribesTheSocket(servers: ServerPool) -> None:
    """
    On a C{tcp:} info listener a client reads one line of JSON: the peer
    and local address as its own socket sees them reversed, the listener,
    the host name and process, no PROXY header, no TLS, and the time; then
    the server closes.
    """
    server = servers.start(TWISTD, "--listen", EPHEMERAL, "--info", EPHEMERAL)
    port = infoPorts(server)["tcp"]
    before = datetime.datetime.now(datetime.timezone.utc)
    with connect(port) as sock:
        info, _ = readInfo(sock)
        mine, theirs = sock.getsockname(), sock.getpeername()
    after = datetime.datetime.now(datetime.timezone.utc)
    assert list(info) == ["peer", "local", "listener", "hostname", "pid", "proxy", "tls", "time"]
    assert info["peer"] == {"family": "ipv4", "address": mine[0], "port": mine[1]}
    assert info["local"] == {"family": "ipv4", "address": theirs[0], "port": theirs[1]}
    assert info["listener"] == f"tcp:127.0.0.1:{port}"
    assert info["hostname"] == socket.gethostname()
    assert info["pid"] == server.process.pid
    assert info["proxy"] is None and info["tls"] is None
    when = datetime.datetime.fromisoformat(info["time"].replace("Z", "+00:00"))
    assert before - datetime.timedelta(seconds=1) <= when <= after + datetime.timedelta(seconds=1)
    # Logged as any connection, on the info listener.
    server.waitForLine(
        lambda line: f"on tcp:127.0.0.1:{port}, ok, 0 messages" in line, "the info connection"
    )
    assertServes(server, server.port)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def test_proxyV2HeaderAndTLVs(servers: ServerPool) -> None:
    """
    Behind a PROXY v2 header, the info listener reports the socket's own
    addresses as C{peer} and C{local}, and the header: its version,
    command, protocol, the client's addresses, and each TLV, decoded where
    its type is known (the SSL TLV with its flags and sub-TLVs), in hex
    always.
    """
    server = servers.start(TWISTD, "--listen", EPHEMERAL, "--info", f"haproxy:{EPHEMERAL}")
    port = infoPorts(server)["haproxy:tcp"]
    ssl_ = struct.pack("!BI", 0x07, 0) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"alice")
    tlvs = (
        tlv(0x01, b"h2")
        + tlv(0x02, b"app.example")
        + tlv(0x05, b"req-42")
        + tlv(0x20, ssl_)
        + tlv(0xE0, b"\x00\xff")
    )
    block = bytes([203, 0, 113, 9, 198, 51, 100, 1]) + struct.pack("!HH", 51000, 443) + tlvs
    header = _V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block
    with connect(port) as sock:
        sock.sendall(header)
        info, _ = readInfo(sock)
        mine = sock.getsockname()
    assert info["peer"] == {"family": "ipv4", "address": mine[0], "port": mine[1]}
    assert info["listener"] == f"haproxy:tcp:127.0.0.1:{port}"
    proxy = info["proxy"]
    assert proxy["version"] == 2
    assert proxy["command"] == "PROXY"
    assert proxy["protocol"] == "TCP4"
    assert proxy["source"] == {"family": "ipv4", "address": "203.0.113.9", "port": 51000}
    assert proxy["destination"] == {"family": "ipv4", "address": "198.51.100.1", "port": 443}
    assert [(t["type"], t["name"], t["value"]) for t in proxy["tlvs"][:3]] == [
        (1, "alpn", "h2"),
        (2, "authority", "app.example"),
        (5, "unique_id", "req-42"),
    ]
    sslTLV = proxy["tlvs"][3]
    assert sslTLV["name"] == "ssl"
    assert sslTLV["value"]["client"] == {"ssl": True, "cert_conn": True, "cert_sess": True}
    assert sslTLV["value"]["verify"] == 0
    assert [(t["name"], t["value"]) for t in sslTLV["value"]["tlvs"]] == [
        ("version", "TLSv1.3"),
        ("cn", "alice"),
    ]
    assert proxy["tlvs"][4] == {"type": 0xE0, "name": None, "value": None, "hex": "00ff"}
    # The connection log names the client the header named.
    server.waitForLine(lambda line: "tcp:203.0.113.9:51000 on" in line, "the info connection")


def test_sslInfoWithMutualTLS(servers: ServerPool, pki: PKI) -> None:
    """
    Under C{--tls-client-ca}, an C{ssl:} info listener reports the TLS
    version, the cipher, the server name the client sent (SNI), the ALPN
    protocols it offered, the one selected (its first, whatever it is),
    and its certificate's subject, issuer, serial and expiry.
    """
    server = servers.start(
        TWISTD, "--listen", EPHEMERAL, "--info", sslListen(pki), "--tls-client-ca", str(pki.ca)
    )
    port = infoPorts(server)["ssl"]
    context = tlsContext(pki, (pki.clientCert, pki.clientKey), ["x-sockplay-test", "h2"])
    info = json.loads(tlsExchange(port, context))
    assert info["listener"] == f"ssl:127.0.0.1:{port}"
    tls = info["tls"]
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert tls["cipher"]
    assert tls["server_name"] == "localhost"
    assert tls["alpn_offered"] == ["x-sockplay-test", "h2"]
    assert tls["alpn"] == "x-sockplay-test"
    certificate = tls["client_certificate"]
    assert "CN=sockplay test client" in certificate["subject"]
    assert certificate["issuer"] != certificate["subject"]
    assert re.fullmatch(r"[0-9a-f]+", certificate["serial"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", certificate["not_after"])


def test_proxyHeaderThenTLS(servers: ServerPool, pki: PKI) -> None:
    """
    On C{haproxy:ssl:} the PROXY header comes first, in the clear, then
    TLS, as HAProxy sends them (C{ssl send-proxy-v2}): the info listener
    reports both, and a client that follows its header with plain text is
    logged as a failed handshake under the header's client.
    """
    server = servers.start(
        TWISTD, "--listen", EPHEMERAL, "--info", f"haproxy:{sslListen(pki)}"
    )
    port = infoPorts(server)["haproxy:ssl"]
    context = tlsContext(pki, alpn=["h2"])
    with connect(port) as raw:
        raw.sendall(b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 443\r\n")
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            info = json.loads(readWithin(sock, SOCKET_TIMEOUT)[0])
    assert info["listener"] == f"haproxy:ssl:127.0.0.1:{port}"
    assert info["proxy"]["source"] == {"family": "ipv4", "address": "203.0.113.9", "port": 51000}
    assert info["tls"]["server_name"] == "localhost" and info["tls"]["alpn"] == "h2"
    with connect(port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.8 198.51.100.1 51000 443\r\nhello\r\n")
        assert b"{" not in readWithin(sock, SOCKET_TIMEOUT)[0]
    server.waitForLine(
        lambda line: "tcp:203.0.113.8:51000 on ssl:" in line and "tls-failed" in line,
        "the failed handshake",
    )


def test_sslInfoWithoutClientCA(servers: ServerPool, pki: PKI) -> None:
    """
    Without C{--tls-client-ca} no client certificate is asked for:
    C{client_certificate} is null, and a client that offers no ALPN gets
    none.
    """
    server = servers.start(TWISTD, "--listen", EPHEMERAL, "--info", sslListen(pki))
    info = json.loads(tlsExchange(infoPorts(server)["ssl"], tlsContext(pki)))
    assert info["tls"]["client_certificate"] is None
    assert info["tls"]["alpn_offered"] == [] and info["tls"]["alpn"] is None


@pytest.mark.parametrize(
    "who, reason",
    [
        pytest.param(
            None,
            "peer did not return a certificate (the client sent no certificate, which "
            "--tls-client-ca requires)",
            id="no-certificate",
        ),
        pytest.param("stranger", "certificate verify failed", id="other-ca"),
    ],
)
def test_mutualTLSRefuses(servers: ServerPool, pki: PKI, who: str | None, reason: str) -> None:
    """
    Under C{--tls-client-ca}, a client without a certificate, or with one
    another CA signed, is refused on the info and the echo listener alike:
    it reads nothing, and the log says why. The server keeps serving.
    """
    server = servers.start(
        TWISTD,
        "--listen", EPHEMERAL,
        "--listen", sslListen(pki),
        "--info", sslListen(pki),
        "--tls-client-ca", str(pki.ca),
    )
    certificate = None if who is None else (pki.strangerCert, pki.strangerKey)
    context = tlsContext(pki, certificate)
    assert tlsExchange(infoPorts(server)["ssl"], context) == b""
    server.waitForLine(lambda line: f"tls-failed (TLS handshake failed: {reason}" in line, reason)
    echo = next(
        int(match.group(1))
        for line in server.output
        if (match := re.search(r"Listening on ssl:127\.0\.0\.1:(\d+) ", line))
    )
    with connect(echo) as raw, context.wrap_socket(raw, server_hostname="localhost") as sock:
        try:
            sock.sendall(b"Hello Server !")
            data = readWithin(sock, SOCKET_TIMEOUT)[0]
        except (ssl.SSLError, BrokenPipeError, ConnectionResetError):
            data = b""
    assert data == b""
    server.waitForLine(lambda line: f"on ssl:127.0.0.1:{echo}, tls-failed" in line, "echo refusal")
    # With the right certificate, both work.
    good = tlsContext(pki, (pki.clientCert, pki.clientKey))
    assert json.loads(tlsExchange(infoPorts(server)["ssl"], good))["tls"]["client_certificate"]
    assertServes(server, server.port)


def test_brokenProxyHeaderClosed(servers: ServerPool) -> None:
    """
    A broken PROXY header on a C{haproxy:} info listener gets a close,
    with nothing sent, and a log line that names the rule it broke; the
    server keeps serving.
    """
    server = servers.start(TWISTD, "--listen", EPHEMERAL, "--info", f"haproxy:{EPHEMERAL}")
    port = infoPorts(server)["haproxy:tcp"]
    with connect(port) as sock:
        sock.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n")
        data, _ = readWithin(sock, SOCKET_TIMEOUT)
    assert data == b""
    server.waitForLine(lambda line: "bad-header (v1 source port" in line, "the refusal")
    assertServes(server, server.port)


def test_plainClientOnSSLInfo(servers: ServerPool, pki: PKI) -> None:
    """
    A plain TCP client on an C{ssl:} info listener gets a TLS alert, never
    the JSON, and a close; the log says the handshake failed and why.
    """
    server = servers.start(TWISTD, "--listen", EPHEMERAL, "--info", sslListen(pki))
    with connect(infoPorts(server)["ssl"]) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data, _ = readWithin(sock, SOCKET_TIMEOUT)
    assert b"{" not in data and len(data) < 16
    server.waitForLine(
        lambda line: "tls-failed (TLS handshake failed: http request" in line, "the failure"
    )
    assertServes(server, server.port)


@pytest.mark.parametrize("kind", ["ssl", "haproxy:tcp"])
def test_incompleteHandshakeOrHeaderTimesOut(
    servers: ServerPool, pki: PKI, kind: str
) -> None:
    """
    A client that connects to an info listener and never completes its
    TLS handshake or PROXY header is closed at the idle timeout.
    """
    server = servers.start(
        TWISTD,
        "--listen", EPHEMERAL,
        "--info", sslListen(pki),
        "--info", f"haproxy:{EPHEMERAL}",
        "--idle-timeout", "0.5",
    )
    with connect(infoPorts(server)[kind]) as sock:
        sock.sendall(b"\x16\x03\x01" if kind == "ssl" else b"PROXY TCP4 ")
        data, took = readWithin(sock, SOCKET_TIMEOUT)
    assert data == b""
    assert took >= 0.4
    server.waitForLine(lambda line: "idle-timeout" in line, "the timeout")
    assertServes(server, server.port)


def test_infoUnderTheServersLimits(servers: ServerPool) -> None:
    """
    Info connections count against C{--max-connections} with the echo
    listeners': while an echo client holds the one place, an info client
    reads the error line instead of the JSON.
    """
    server = servers.start(
        TWISTD, "--listen", EPHEMERAL, "--info", EPHEMERAL, "--max-connections", "1"
    )
    port = infoPorts(server)["tcp"]
    with connect(server.port) as held:
        # Admitted once the server has logged nothing for it yet but
        # answers the info client with the error: wait for that, bounded.
        deadline = time.monotonic() + SOCKET_TIMEOUT
        data = b""
        while time.monotonic() < deadline and not data.startswith(b"Error:"):
            with connect(port) as sock:
                data, _ = readWithin(sock, SOCKET_TIMEOUT)
        assert data == b"Error: server busy\n", data
        held.sendall(b"Hello Server !")
        assert readWithin(held, SOCKET_TIMEOUT)[0] == b"Message received: Hello Server !"
    server.waitForLine(lambda line: f"on tcp:127.0.0.1:{port}, busy" in line, "the refusal")


def test_workersEachAnswerInfo(servers: ServerPool) -> None:
    """
    With C{--workers}, the workers serve the info listener too: every
    answer comes from a worker (not the parent), named by its C{pid},
    and the connections spread over both.
    """
    server = servers.start(TWISTD, "--listen", EPHEMERAL, "--info", EPHEMERAL, "--workers", "2")
    workers = {
        int(match.group(1))
        for line in server.output
        if (match := re.search(r"Worker \d started \(pid (\d+)\)", line))
    }
    assert len(workers) == 2 and server.process.pid not in workers
    port = next(
        int(match.group(1))
        for line in server.output
        if (match := re.search(r"connection info on tcp:127\.0\.0\.1:(\d+) .* with 2", line))
    )
    answered = set()
    for _ in range(100):
        with connect(port) as sock:
            answered.add(readInfo(sock)[0]["pid"])
        if answered == workers:
            break
    assert answered == workers


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(
            ["--tls-client-ca", "CA"],
            "--tls-client-ca needs an ssl: listener",
            id="client-ca-without-ssl",
        ),
        pytest.param(
            ["--tls-client-ca", "/nonexistent/ca.pem"],
            "bad --tls-client-ca: cannot read /nonexistent/ca.pem",
            id="client-ca-unreadable",
        ),
        pytest.param(
            ["--tls-client-ca", "NOTPEM"], "holds no valid PEM certificate", id="client-ca-not-pem"
        ),
        pytest.param(["--info", "nonsense:1"], "bad --info 'nonsense:1'", id="bad-info-endpoint"),
        pytest.param(
            ["--info", "SSL", "--workers", "2"],
            "--workers cannot share the TLS listener",
            id="ssl-info-with-workers",
        ),
    ],
)
def test_usageErrors(tmp_path: Path, pki: PKI, args: list[str], message: str) -> None:
    """
    What cannot work is refused at once, in one line, with exit status 2.
    """
    (tmp_path / "not.pem").write_text("not a certificate\n")
    files = {"CA": str(pki.ca), "NOTPEM": str(tmp_path / "not.pem"), "SSL": sslListen(pki)}
    args = [files.get(arg, arg) for arg in args]
    result = run([*TWISTD, "--listen", EPHEMERAL, *args], tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    error, hint = result.stderr.splitlines()
    assert error.startswith("Error: ") and message in error, error
    assert hint == "Try 'twistd sockplay --help'."
