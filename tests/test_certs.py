"""
Tests for C{python -m sockplay.certs}: the throwaway CA, server and client
certificates it writes, how it writes them, and its command line.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.servers import DEADLINE, assertOneErrorLine, assertUsageError, run
from twisted.internet.endpoints import serverFromString

import sockplay.certs
from sockplay.certs import (
    CLIENT_NAME,
    DEFAULT_DAYS,
    MAX_DAYS,
    CertificateError,
    CertificateFiles,
    listenDescription,
    main,
    writeCertificates,
)

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """
    A CA and a server certificate, shared by the tests that only read them.
    """
    return writeCertificates(tmp_path_factory.mktemp("certs"))


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


def _trustmeServerPolicy() -> verification.ExtensionPolicy:
    """
    The web PKI's rules for a server certificate, but for the criticality of
    its subjectAltName and extendedKeyUsage: trustme marks both critical,
    which those rules forbid and OpenSSL (so the client) accepts.
    """
    if not hasattr(verification, "ExtensionPolicy"):
        pytest.skip("cryptography < 45 cannot relax the web PKI's extension rules")

    def serverAuth(
        policy: verification.Policy, certificate: x509.Certificate, usage: x509.ExtendedKeyUsage
    ) -> None:
        if policy.extended_key_usage not in usage:
            raise ValueError("no serverAuth in extendedKeyUsage")

    agnostic = verification.Criticality.AGNOSTIC
    return (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .require_present(x509.SubjectAlternativeName, agnostic, None)
        .require_present(x509.ExtendedKeyUsage, agnostic, serverAuth)
    )


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
    stricter than OpenSSL's about extensions), but for the criticality of
    two extensions that trustme sets.
    """
    ca = load(certificates.ca)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([ca]))
        .time(datetime.datetime.now(datetime.timezone.utc))
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=_trustmeServerPolicy(),
        )
        .build_server_verifier(name)  # type: ignore[arg-type]
    )
    chain = verifier.verify(load(certificates.server), [])
    assert chain[-1] == ca


def test_clientCertificate(certificates: CertificateFiles) -> None:
    """
    The client certificate is signed by the CA, names the client
    (C{CN=sockplay client}), and may be used for client authentication
    (its extendedKeyUsage has clientAuth, which a server verifying it
    requires).
    """
    client = load(certificates.client)
    client.verify_directly_issued_by(load(certificates.ca))
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CLIENT_NAME
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_serverKeyMatchesCertificate(certificates: CertificateFiles) -> None:
    """
    server-key.pem is the key of server.pem, client-key.pem of client.pem,
    and ca-key.pem of ca.pem; all are unencrypted PKCS#8.
    """
    for certificate, key in [
        (certificates.server, certificates.serverKey),
        (certificates.client, certificates.clientKey),
        (certificates.ca, certificates.caKey),
    ]:
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
        private = load_pem_private_key(key.read_bytes(), None)
        assert private.public_key() == load(certificate).public_key()


def test_validityIsShort(tmp_path: Path) -> None:
    """
    The server and client certificates are valid for L{DEFAULT_DAYS} days
    (30) from when they were made, starting a few minutes earlier for clocks
    slightly behind. The CA, whose dates trustme fixes, is valid for at
    least that long, so that the other certificates' dates are the ones
    that count.
    """
    files = writeCertificates(tmp_path, now=NOW)
    assert DEFAULT_DAYS == 30
    ca = load(files.ca)
    for path in (files.server, files.client):
        leaf = load(path)
        assert leaf.not_valid_after_utc == NOW + datetime.timedelta(days=DEFAULT_DAYS)
        assert NOW - datetime.timedelta(hours=1) < leaf.not_valid_before_utc < NOW
        assert ca.not_valid_before_utc <= leaf.not_valid_before_utc
        assert ca.not_valid_after_utc >= leaf.not_valid_after_utc


def test_keyFilesOwnerOnly(certificates: CertificateFiles) -> None:
    """
    Key files can be read by their owner only; certificates by anyone, but
    written by their owner only.
    """
    for key in (certificates.caKey, certificates.serverKey, certificates.clientKey):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for certificate in (certificates.ca, certificates.server, certificates.client):
        assert stat.S_IMODE(certificate.stat().st_mode) & 0o022 == 0


@pytest.mark.parametrize("name", ["server.pem", "client.pem", "client-key.pem"])
def test_refusesToOverwrite(tmp_path: Path, name: str) -> None:
    """
    Without C{force}, nothing is written if any of the files exists (the
    client's as the server's), and the error names it.
    """
    (tmp_path / name).write_bytes(b"mine")
    with pytest.raises(CertificateError, match=rf"^{re.escape(name)} already in .*--force"):
        writeCertificates(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (tmp_path / name).read_bytes() == b"mine"


def test_forceReplaces(tmp_path: Path) -> None:
    """
    With C{force}, the files are replaced by new ones, and a key file whose
    mode was loosened is private again.
    """
    first = writeCertificates(tmp_path)
    oldKeys = [first.serverKey.read_bytes(), first.clientKey.read_bytes()]
    first.serverKey.chmod(0o644)
    first.clientKey.chmod(0o644)
    second = writeCertificates(tmp_path, force=True)
    for key, oldKey in zip((second.serverKey, second.clientKey), oldKeys, strict=True):
        assert key.read_bytes() != oldKey
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


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
    and client commands that use them, then the same with mutual TLS (the
    server's C{--tls-client-ca}, the client's C{--cert} and C{--key}); run
    again, it refuses with one error line and exit status 1; without DIR it
    is a usage error (exit 2).
    """
    main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    files = CertificateFiles.inDirectory(tmp_path)
    server = f"twistd -n sockplay --listen {listenDescription(files)}"
    client = f"python -m sockplay.client --tls --ca {files.ca}"
    assert out == [
        f"Wrote ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem "
        f"in {tmp_path} (a local CA, a server certificate for localhost, 127.0.0.1, ::1, "
        f"and a client certificate, both valid for 30 days).",
        f"Server: {server}",
        f"Client: {client}",
        f"Mutual TLS server: {server} --tls-client-ca {files.ca}",
        f"Mutual TLS client: {client} --cert {files.client} --key {files.clientKey}",
    ]
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 1
    assertOneErrorLine(capsys.readouterr().err, "Error: ca.pem, ca-key.pem, server.pem")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2


def test_daysOption(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--days N} makes the server certificate valid for N days, and the
    printout says so.
    """
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    main(["--days", "7", str(tmp_path)])
    after = datetime.datetime.now(datetime.timezone.utc)
    assert "valid for 7 days)." in capsys.readouterr().out
    notAfter = load(tmp_path / "server.pem").not_valid_after_utc
    assert before + datetime.timedelta(days=7) <= notAfter <= after + datetime.timedelta(days=7)


@pytest.mark.parametrize("days", ["0", "-1", "seven", "36501", "3000000", "300000000000"])
def test_daysMustBePositiveAndBounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    """
    C{--days} that is not a positive whole number up to L{MAX_DAYS} (past
    which the date would overflow) is a usage error (exit 2) that names the
    option, and nothing is written.
    """
    with pytest.raises(SystemExit) as exited:
        main(["--days", days, str(tmp_path)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"Error: --days must be a positive whole number up to {MAX_DAYS}, not {days!r}",
        "Try 'python -m sockplay.certs --help'.",
    ]
    assert list(tmp_path.iterdir()) == []


def test_mostDays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    L{MAX_DAYS} is accepted: the certificate is valid that long.
    """
    main(["--days", str(MAX_DAYS), str(tmp_path)])
    assert f"valid for {MAX_DAYS} days)." in capsys.readouterr().out
    notAfter = load(tmp_path / "server.pem").not_valid_after_utc
    assert notAfter.year >= datetime.datetime.now(datetime.timezone.utc).year + 99


@pytest.mark.parametrize("days", ["3000000", "300000000000"])
def test_hugeDaysOneErrorLine(tmp_path: Path, days: str) -> None:
    """
    The real command with C{--days} past any date (issue 10: a traceback
    before): one C{Error:} line and where help is, exit 2; nothing written.
    """
    done = run([sys.executable, "-m", "sockplay.certs", "d", "--days", days], tmp_path)
    assertUsageError(
        done,
        f"--days must be a positive whole number up to {MAX_DAYS}, not {days!r}",
        "python -m sockplay.certs",
    )
    assert not (tmp_path / "d").exists()


def test_emptyDirectoryRefused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    An empty DIR is a usage error, not the current directory in disguise.
    """
    with pytest.raises(SystemExit) as exited:
        main([""])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "Error: DIR must be a directory name, not ''; use . for this one"
    )


def test_missingTrustme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Without trustme (a broken installation), the command says what to
    install in one line and exits 1.
    """
    monkeypatch.setattr(sockplay.certs, "_TRUSTME_MISSING", True)
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assertOneErrorLine(err, "Error: sockplay.certs needs the trustme package")
    assert "(pip install sockplay)" in err


def test_importsOnlyTheCommandLineModule() -> None:
    """
    sockplay.certs uses nothing of sockplay's but the shared command-line
    module: importing it loads none of the server, the client or the bench.
    """
    code = (
        "import sys, sockplay.certs; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'sockplay')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE,
        check=True,
    )
    assert result.stdout.split() == ["sockplay", "sockplay.certs", "sockplay.cli"]


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv",
    [["--force", "--days", "2"], ["--days=2", "--force"], ["--force", "--days", "2", "--"]],
)
def test_optionsAfterDirectory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """
    Options may follow DIR (C{certs --force --days 2}), as they may precede
    it.
    """
    main([str(tmp_path)])
    capsys.readouterr()
    main([str(tmp_path), *argv])
    assert "valid for 2 days)." in capsys.readouterr().out


def test_newDirectoryIgnoredByGit(tmp_path: Path) -> None:
    """
    A directory that the command creates gets a C{.gitignore} that keeps
    everything in it, the private keys above all, out of git.
    """
    directory = tmp_path / "checkout" / "certs"
    writeCertificates(directory)
    assert (directory / ".gitignore").read_text().splitlines()[-1] == "*"
    git = subprocess.run(
        ["git", "init", "-q", str(tmp_path / "checkout")], capture_output=True, check=False
    )
    if git.returncode != 0:
        pytest.skip("git is not available")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path / "checkout",
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""


def test_existingDirectoryGetsNoGitignore(tmp_path: Path) -> None:
    """
    In a directory that already exists, nothing but the six files is
    written: a C{.gitignore} there could hide other files.
    """
    writeCertificates(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "ca-key.pem", "ca.pem", "client-key.pem", "client.pem", "server-key.pem", "server.pem",
    ]


def test_checkoutIgnoresRecipeDirectory() -> None:
    """
    The checkout's C{.gitignore} ignores C{certs/}, where the documented
    recipe (C{python -m sockplay.certs certs}) writes its keys.
    """
    result = subprocess.run(
        ["git", "check-ignore", "-q", "certs/server-key.pem"], cwd=REPO, check=False
    )
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.returncode == 0
