"""
Tests for L{sockplay.client.options}: the client's command line, its
defaults and the combinations it refuses.
"""

from __future__ import annotations

import pytest
from twisted.python import usage

from sockplay.client.options import Options


def test_optionsDefaults() -> None:
    """
    The defaults are the tutorial's client.
    """
    config = Options()
    config.parseOptions([])
    assert dict(config) == {
        "host": "127.0.0.1",
        "port": 12345,
        "connect": None,
        "message": b"Hello Server !",
        "framing": "raw",
        "timeout": 10.0,
        "tls": 0,
        "ca": None,
        "server-name": None,
        "insecure": 0,
        "cert": None,
        "key": None,
        "alpn": [],
        "count": None,
        "interval": None,
        "keep-open": 0,
        "json": 0,
        "tally": 0,
        "metrics": None,
        "retries": 0,
        "backoff": 0.1,
        "backoff-max": 5.0,
    }


@pytest.mark.parametrize(
    "argv",
    [["--port", "x"], ["--port", "0"], ["--port", "70000"], ["--framing", "xml"],
     ["--timeout", "0"], ["--timeout", "-1"], ["--bogus"],
     ["--count", "-1"], ["--count", "x"], ["--count", "2", "--interval", "-1"],
     ["--count", "2", "--interval", "nan"], ["--retries", "-1"], ["--retries", "x"],
     ["--retries", "1", "--backoff", "-1"], ["--retries", "1", "--backoff", "inf"],
     ["--retries", "1", "--backoff-max", "nan"]],
)
def test_optionsBad(argv: list[str]) -> None:
    """
    Bad values are usage errors.
    """
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


@pytest.mark.parametrize(
    "option",
    [["--ca", "ca.pem"], ["--server-name", "x"], ["--insecure"], ["--cert", "client.pem"],
     ["--key", "client-key.pem"], ["--alpn", "h2"]],
)
def test_tlsOptionsNeedTLS(option: list[str]) -> None:
    """
    The TLS settings are usage errors without C{--tls}, rather than being
    silently ignored on a plain connection.
    """
    with pytest.raises(usage.UsageError, match=f"{option[0]} needs --tls"):
        Options().parseOptions(option)


def test_keyNeedsCert() -> None:
    """
    C{--key} without C{--cert} is a usage error: there is no certificate
    for it to be the key of.
    """
    with pytest.raises(usage.UsageError, match=r"^--key needs --cert"):
        Options().parseOptions(["--tls", "--key", "client-key.pem"])


def test_keyDefaultsToCert() -> None:
    """
    Without C{--key}, the key is read from the C{--cert} file; with it,
    from its own.
    """
    config = Options()
    config.parseOptions(["--tls", "--cert", "both.pem"])
    assert (config["cert"], config["key"]) == ("both.pem", "both.pem")
    config = Options()
    config.parseOptions(["--tls", "--cert", "client.pem", "--key", "client-key.pem"])
    assert (config["cert"], config["key"]) == ("client.pem", "client-key.pem")


def test_alpnRepeatableInOrder() -> None:
    """
    C{--alpn} may be repeated: the protocols are offered as bytes, in the
    order given; with an C{ssl:} string as with C{--tls}.
    """
    config = Options()
    config.parseOptions(
        ["--connect", "ssl:host=localhost:port=1", "--alpn", "h2", "--alpn", "http/1.1"]
    )
    assert config["alpn"] == [b"h2", b"http/1.1"]


@pytest.mark.parametrize("name", ["", "x" * 256], ids=["empty", "256-bytes"])
def test_alpnNameLength(name: str) -> None:
    """
    An ALPN protocol name is 1 to 255 bytes (RFC 7301): any other is a
    usage error that names the option.
    """
    with pytest.raises(usage.UsageError, match=r"^--alpn must be a protocol name of 1 to 255"):
        Options().parseOptions(["--tls", "--alpn", name])
    config = Options()
    config.parseOptions(["--tls", "--alpn", "x" * 255])
    assert config["alpn"] == [b"x" * 255]


def test_insecureWithCARejected() -> None:
    """
    C{--insecure} checks nothing, so a C{--ca} with it is a usage error.
    """
    with pytest.raises(usage.UsageError, match="--insecure"):
        Options().parseOptions(["--tls", "--insecure", "--ca", "ca.pem"])


def test_tlsWithEOFFramingRejected() -> None:
    """
    eof framing needs a half-close, which TLS cannot do: with C{--tls} it is
    a usage error, found before connecting.
    """
    with pytest.raises(usage.UsageError, match="cannot half-close"):
        Options().parseOptions(["--tls", "--framing", "eof"])


def test_tlsWithConnectNeedsServerName() -> None:
    """
    With C{--connect} there is no C{--host} to check the certificate
    against: C{--server-name} is required (or C{--insecure}).
    """
    connect = ["--tls", "--connect", "unix:path=/tmp/sockplay.sock"]
    with pytest.raises(usage.UsageError, match="--server-name"):
        Options().parseOptions(connect)
    config = Options()
    config.parseOptions([*connect, "--server-name", "localhost"])
    assert config.serverName() == "localhost"
    Options().parseOptions([*connect, "--insecure"])


def test_serverNameDefaultsToHost() -> None:
    """
    The certificate is checked against C{--host} unless C{--server-name}
    says otherwise.
    """
    config = Options()
    config.parseOptions(["--tls", "--host", "::1"])
    assert config.serverName() == "::1"


@pytest.mark.parametrize(
    "host, problem",
    [
        ("a..b", "Empty Label"),
        ("x" * 70, "Label too long"),
        ("a b", "Codepoint U+0020 at position 2 of 'a b' not allowed"),
        ("my_host", "Codepoint U+005F at position 3 of 'my_host' not allowed"),
    ],
)
def test_hostMustBeANameOrAddress(host: str, problem: str) -> None:
    """
    A C{--host} that Twisted's endpoint could not look up is a usage error
    that says what is wrong with it, not a traceback when it connects.
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(["--host", host])
    assert str(info.value) == (
        f"--host must be a host name or an IP address, not {host!r} ({problem})"
    )


def test_emptyHostRefused() -> None:
    """
    C{--host ''} is a usage error.
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(["--host", ""])
    assert str(info.value) == "--host must be a host name or an IP address, not ''"


@pytest.mark.parametrize("host", ["localhost", "example.com.", "ünïcode.de", "10.0.0.1", "::1"])
def test_hostNamesAndAddressesAccepted(host: str) -> None:
    """
    Host names (internationalized ones too) and IPv4 and IPv6 addresses
    are taken as they are.
    """
    config = Options()
    config.parseOptions(["--host", host])
    assert config["host"] == host


@pytest.mark.parametrize(
    "argv, name, problem",
    [
        (["--tls", "--server-name", "a..b"], "a..b", "Empty Label"),
        (["--tls", "--server-name", ""], "", "it is empty"),
        (["--connect", "ssl:host=my_host:port=1"], "my_host",
         "Codepoint U+005F at position 3 of 'my_host' not allowed"),
    ],
)
def test_tlsServerNameMustBeANameOrAddress(argv: list[str], name: str, problem: str) -> None:
    """
    Under TLS, the name the certificate is checked against must be a host
    name or an address by the rules of Twisted's TLS check: anything else
    is a usage error that says C{--server-name} sets it.
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(argv)
    assert str(info.value) == (
        f"the TLS server name {name!r} is not a host name or an IP address ({problem}); "
        "--server-name sets it"
    )


def test_emptyServerNameNeedsTLS() -> None:
    """
    C{--server-name ''} without TLS is refused as any C{--server-name} is,
    not taken for "not given".
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(["--server-name", ""])
    assert str(info.value) == "--server-name needs --tls (or a --connect ssl: string)"


@pytest.mark.parametrize(
    "option",
    [
        ["--interval", "1"],
        ["--keep-open"],
        ["--json"],
        ["--tally"],
        ["--metrics", "tcp:9465:interface=127.0.0.1"],
    ],
)
def test_probeOptionsNeedCount(option: list[str]) -> None:
    """
    The probe's settings are usage errors without C{--count}: without it the
    client does exactly one exchange, as it always did.
    """
    with pytest.raises(usage.UsageError, match=f"{option[0]} needs --count"):
        Options().parseOptions(option)


def test_metricsEndpointKept() -> None:
    """
    With C{--count}, C{--metrics} takes a Twisted server endpoint string,
    kept as given.
    """
    config = Options()
    config.parseOptions(["--count", "0", "--metrics", "tcp:9465:interface=127.0.0.1"])
    assert config["metrics"] == "tcp:9465:interface=127.0.0.1"


@pytest.mark.parametrize(
    "description, reason",
    [
        ("nope:1", "Unknown endpoint type: 'nope'"),
        ("tcp:http", "invalid literal for int() with base 10: 'http'"),
        ("tcp:9465:bogus=1", "unexpected keyword argument 'bogus'"),
    ],
)
def test_metricsBadEndpoint(description: str, reason: str) -> None:
    """
    A C{--metrics} that is not a server endpoint string is a usage error
    that names it, says why, and shows what one looks like.
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(["--count", "0", "--metrics", description])
    message = str(info.value)
    assert message.startswith(f"bad --metrics {description!r}: ")
    assert reason in message
    assert message.endswith("(an endpoint looks like tcp:9465:interface=127.0.0.1)")


def test_metricsNotWithJSON() -> None:
    """
    C{--json} lists every probe, which a long-running exporter cannot keep:
    with C{--metrics} it is a usage error.
    """
    with pytest.raises(usage.UsageError, match=r"^--json cannot be used with --metrics: "):
        Options().parseOptions(["--count", "0", "--json", "--metrics", "tcp:0"])


def test_probeIntervalDefault() -> None:
    """
    With C{--count}, probes are one second apart unless C{--interval} says
    otherwise.
    """
    config = Options()
    config.parseOptions(["--count", "3"])
    assert (config["count"], config["interval"]) == (3, 1.0)
    config = Options()
    config.parseOptions(["--count", "3", "--interval", "0"])
    assert config["interval"] == 0.0


def test_probeKeepOpenEOFRejected() -> None:
    """
    An eof message ends only when the client half-closes, so it cannot
    share a connection with the next one.
    """
    with pytest.raises(usage.UsageError, match="--keep-open cannot be used with --framing eof"):
        Options().parseOptions(["--count", "2", "--keep-open", "--framing", "eof"])


def test_optionsEmptyRawMessage() -> None:
    """
    An empty message cannot be sent in raw framing (there would be nothing
    on the wire); in the other framings it can.
    """
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--message", ""])
    config = Options()
    config.parseOptions(["--message", "", "--framing", "line"])
    assert config["message"] == b""


def test_optionsMessageBytesRoundTrip() -> None:
    """
    A message that is not valid UTF-8 on the command line is sent as the
    bytes the shell passed.
    """
    config = Options()
    config.parseOptions(["--message", b"a\xffb".decode("utf-8", "surrogateescape")])
    assert config["message"] == b"a\xffb"



# --retries and its backoff.


@pytest.mark.parametrize("option", [["--backoff", "1"], ["--backoff-max", "1"]])
def test_backoffNeedsRetries(option: list[str]) -> None:
    """
    The backoff settings are usage errors without C{--retries}, rather
    than being silently ignored.
    """
    with pytest.raises(usage.UsageError, match=f"{option[0]} needs --retries"):
        Options().parseOptions(option)


def test_backoffMaxBelowBackoffRejected() -> None:
    """
    A cap below the first delay is a usage error.
    """
    with pytest.raises(usage.UsageError, match="--backoff-max 1 is less than --backoff 2"):
        Options().parseOptions(["--retries", "1", "--backoff", "2", "--backoff-max", "1"])


def test_backoffMaxDefaultFollowsBackoff() -> None:
    """
    The cap defaults to 5 seconds, or to C{--backoff} if that is more.
    """
    config = Options()
    config.parseOptions(["--retries", "1", "--backoff", "10"])
    assert (config["backoff"], config["backoff-max"]) == (10.0, 10.0)

