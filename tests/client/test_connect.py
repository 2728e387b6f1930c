"""
Tests for L{sockplay.client.connect} and the endpoints built from it: a
C{--connect} string that cannot be parsed is a usage error that says why;
C{tcp6:} is accepted; C{ssl:} verifies the server as C{--tls} does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from sockplay.client import tls
from sockplay.client.connect import HostTarget, parseConnect
from sockplay.client.endpoint import makeEndpoint
from sockplay.client.options import Options


def options(*argv: str) -> Options:
    config = Options()
    config.parseOptions(list(argv))
    return config


def test_unescapedIPv6IsUsageError() -> None:
    """
    C{tcp:host=::1:port=12345}, the IPv6 address written with bare colons,
    is a usage error that says the colons must be escaped and how, instead
    of a connection to the wrong place that is refused.
    """
    with pytest.raises(usage.UsageError) as raised:
        options("--connect", "tcp:host=::1:port=12345")
    assert str(raised.value) == (
        "cannot parse --connect 'tcp:host=::1:port=12345': the colons of an IPv6 address "
        "must be escaped with a backslash: tcp:host=\\:\\:1:port=12345 (in single quotes in "
        "a shell); an endpoint looks like tcp:host=...:port=..."
    )


@pytest.mark.parametrize(
    "description, why",
    [
        ("nocolon", "no endpoint kind"),
        ("tcp:host=example.com", "no port"),
        ("tcp:host=example.com:port=http", "the port is not a number"),
        ("tcp:host=example.com:port=0", "port 0 is not from 1 to 65535"),
        ("tcp:port=1", "no host"),
        ("tcp:host=a:host=b:port=1", "host= is given twice"),
        ("ssl:host=a:port=1:caCertsDir=/etc/ssl",
         "ssl: takes host, port, timeout and bindAddress, not caCertsDir=; "
         "the client trusts --ca or the system's CAs"),
        ("tcp:host=127.0.0.1:port=99999", "port 99999 is not from 1 to 65535"),
        ("tcp:host=a..b:port=1",
         "the host 'a..b' is not a host name or an IP address (label empty or too long)"),
        ("ssl:host=a..b:port=1",
         "the host 'a..b' is not a host name or an IP address (label empty or too long)"),
        ("tcp:host=a:port=1:timeout=nan",
         "the timeout must be a positive number of seconds, not 'nan'"),
        ("tcp:host=a:port=1:timeout=-1",
         "the timeout must be a positive number of seconds, not '-1'"),
        ("tcp:host=a:port=1:timeout=0",
         "the timeout must be a positive number of seconds, not '0'"),
        ("tcp:host=a:port=1:timeout=1e400",
         "the timeout must be a positive number of seconds, not '1e400'"),
    ],
)
def test_badConnectIsUsageError(description: str, why: str) -> None:
    """
    A C{tcp:}, C{tcp6:} or C{ssl:} string that cannot be parsed is a usage
    error naming the string, why, and what one looks like.
    """
    with pytest.raises(usage.UsageError) as raised:
        options("--connect", description)
    assert str(raised.value) == (
        f"cannot parse --connect {description!r}: {why}; "
        "an endpoint looks like tcp:host=...:port=..."
    )


@pytest.mark.parametrize(
    "description, target",
    [
        ("tcp:host=\\:\\:1:port=12345", HostTarget("tcp", "::1", 12345)),
        ("tcp6:host=\\:\\:1:port=12345", HostTarget("tcp6", "::1", 12345)),
        ("tcp:localhost:80", HostTarget("tcp", "localhost", 80)),
        ("tcp:host=a:port=1:timeout=5:bindAddress=127.0.0.2",
         HostTarget("tcp", "a", 1, 5.0, "127.0.0.2")),
        ("ssl:host=localhost:port=443", HostTarget("ssl", "localhost", 443)),
        # The system resolver takes names DNS rules do not (containers'):
        # only a TLS server name is held to those.
        ("tcp:host=my_host:port=1", HostTarget("tcp", "my_host", 1)),
    ],
)
def test_parseConnect(description: str, target: HostTarget) -> None:
    """
    Host, port and options are read as Twisted reads them, backslash
    escapes included.
    """
    assert parseConnect(description) == target


def test_emptyConnectRefused() -> None:
    """
    C{--connect ''} is a usage error, not "no C{--connect}".
    """
    with pytest.raises(usage.UsageError) as raised:
        options("--connect", "")
    assert str(raised.value) == (
        "--connect must be an endpoint string such as tcp:host=...:port=..., not ''"
    )


def test_otherKindsLeftToTwisted() -> None:
    """
    Kinds the client does not build itself are left to Twisted.
    """
    assert parseConnect("unix:path=/tmp/sockplay.sock") is None


def test_tcp6Accepted() -> None:
    """
    C{tcp6:} (which the bench accepts, and Twisted's client strings do
    not) connects over IPv6.
    """
    endpoint = makeEndpoint(MemoryReactorClock(), options("--connect", "tcp6:host=\\:\\:1:port=1"))
    assert isinstance(endpoint, TCP6ClientEndpoint)
    assert (endpoint._host, endpoint._port) == ("::1", 1)


def test_tcpEndpoint() -> None:
    """
    C{tcp:} is Twisted's TCP client endpoint, with C{--timeout} as its
    connect timeout unless the string sets one.
    """
    reactor = MemoryReactorClock()
    endpoint = makeEndpoint(reactor, options("--connect", "tcp:host=127.0.0.1:port=1"))
    assert isinstance(endpoint, TCP4ClientEndpoint)
    endpoint.connect(None)  # type: ignore[arg-type]
    assert reactor.tcpClients[0][:2] == ("127.0.0.1", 1)
    assert reactor.tcpClients[0][3] == 10.0


def creatorArguments(
    monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[str, str | None, bool]:
    """
    The arguments that L{makeEndpoint} sets TLS up with for C{argv}.
    """
    calls: list[tuple[str, str | None, bool]] = []
    real = tls.clientConnectionCreator

    def record(
        serverName: str, caFile: str | None = None, insecure: bool = False, *rest: object
    ) -> object:
        calls.append((serverName, caFile, insecure))
        return real(serverName, caFile, insecure, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(tls, "clientConnectionCreator", record)
    makeEndpoint(MemoryReactorClock(), options(*argv))
    (call,) = calls
    return call


def test_sslVerifiesByDefault(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A C{--connect ssl:} string speaks TLS and verifies the server, against
    the system's CAs, for the host in the string, as C{--tls} does:
    Twisted's own C{ssl:} client string would verify nothing.
    """
    connect = "ssl:host=localhost:port=1"
    assert creatorArguments(monkeypatch, "--connect", connect) == ("localhost", None, False)


def test_sslTrustAndName(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """
    With an C{ssl:} string, C{--ca} sets what is trusted, C{--server-name}
    the name to check, and C{--insecure} turns verification off.
    """
    ca = tmp_path / "ca.pem"
    ca.write_bytes(trustme.CA().cert_pem.bytes())
    connect = "ssl:host=127.0.0.1:port=1"
    assert creatorArguments(
        monkeypatch, "--connect", connect, "--ca", str(ca), "--server-name", "localhost"
    ) == ("localhost", str(ca), False)
    assert creatorArguments(monkeypatch, "--connect", connect, "--insecure") == (
        "127.0.0.1", None, True
    )


def test_tlsWithTCPConnectTakesItsHost() -> None:
    """
    C{--tls} with a C{tcp:} string checks the host of the string; only a
    kind without a host (C{unix:}) needs C{--server-name}.
    """
    assert options("--tls", "--connect", "tcp:host=localhost:port=1").serverName() == "localhost"
    with pytest.raises(usage.UsageError, match="needs --server-name"):
        options("--tls", "--connect", "unix:path=/tmp/s")
