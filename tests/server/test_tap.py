"""
Tests for L{sockplay.server.tap}: the server's command line and the service it
builds, against a memory reactor.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from support.servers import SERVER, TWISTD, assertUsageError, run
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.python import log as legacyLog
from twisted.python import usage

from sockplay.certs import writeCertificates
from sockplay.cli import counted
from sockplay.server import EchoReplyFactory
from sockplay.server.faultsettings import Faults
from sockplay.server.listening import ListenerService, ListenFailed, quietly, withBacklog
from sockplay.server.proxy import ProxyWrappingFactory
from sockplay.server.tap import DEFAULT_LISTEN, Options, makeService
from sockplay.server.workers import WorkerPoolService


def parse(argv: list[str]) -> Options:
    config = Options()
    config.parseOptions(argv)
    return config


def test_defaults() -> None:
    """
    With no options: raw framing, one-shot, the tutorial's prefix, a 64 KiB
    limit, and one listener on loopback port 12345.
    """
    assert dict(parse([])) == {
        "framing": "raw",
        "keep-open": 0,
        "quiet": 0,
        "trace": 0,
        "prefix": b"Message received: ",
        "max-message": 65536,
        "idle-timeout": 30.0,
        "max-connections": 10000,
        "max-per-peer": 0,
        "drain-timeout": 10.0,
        "banner": None,
        "delay": 0.0,
        "jitter": 0.0,
        "drop-rate": 0.0,
        "reset-rate": 0.0,
        "truncate-rate": 0.0,
        "stall-rate": 0.0,
        "cut-after": 0.0,
        "throttle": 0,
        "scenario": None,
        "workers": 1,
        "metrics": None,
        "web": None,
        "info": [],
        "websocket": [],
        "tls-client-ca": None,
        "udp-interface": "127.0.0.1",
        "reactor": None,
        "udp": [],
        "listen": ["tcp:12345:interface=127.0.0.1"],
    }


def test_allOptions() -> None:
    """
    Every option is parsed into its typed value; --listen repeats.
    """
    config = parse([
        "--framing", "line", "--keep-open", "--prefix", "Reçu: ", "--max-message", "10",
        "--listen", "tcp:0:interface=127.0.0.1", "-l", "tcp6:0:interface=\\:\\:1",
        "--idle-timeout", "2.5", "--max-connections", "7", "--max-per-peer", "3",
        "--drain-timeout", "0", "--quiet", "--banner", "hi {peer}", "--delay", "0.25",
        "--drop-rate", "0.1", "--reset-rate", "0.2", "--workers", "2", "--jitter", "0.5",
        "--truncate-rate", "0.3", "--stall-rate", "0.15", "--cut-after", "9",
        "--throttle", "20000",
        "--udp", "0", "--udp", "5353", "--udp-interface", "::1", "--reactor", "poll",
    ])
    assert dict(config) == {
        "framing": "line",
        "keep-open": 1,
        "quiet": 1,
        "trace": 0,
        "prefix": "Reçu: ".encode(),
        "max-message": 10,
        "idle-timeout": 2.5,
        "max-connections": 7,
        "max-per-peer": 3,
        "drain-timeout": 0.0,
        "banner": b"hi {peer}",
        "delay": 0.25,
        "jitter": 0.5,
        "drop-rate": 0.1,
        "reset-rate": 0.2,
        "truncate-rate": 0.3,
        "stall-rate": 0.15,
        "cut-after": 9.0,
        "throttle": 20000,
        "scenario": None,
        "workers": 2,
        "metrics": None,
        "web": None,
        "info": [],
        "websocket": [],
        "tls-client-ca": None,
        "udp-interface": "::1",
        "reactor": "poll",
        "udp": [0, 5353],
        "listen": ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1"],
    }
    settings = config.settings()
    assert (settings.idleTimeout, settings.maxConnections, settings.maxPerPeer) == (2.5, 7, 3)
    assert (settings.quiet, settings.banner) == (True, b"hi {peer}")
    assert settings.faults == Faults(
        delay=0.25, jitter=0.5, dropRate=0.1, resetRate=0.2, truncateRate=0.3,
        stallRate=0.15, cutAfter=9.0, throttle=20000,
    )


def test_prefixBytesKept() -> None:
    """
    A prefix that is not valid UTF-8 on the command line is kept as the
    bytes the shell passed.
    """
    config = parse(["--prefix", b"\xff> ".decode("utf-8", "surrogateescape")])
    assert config["prefix"] == b"\xff> "


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--framing", "xml"], "framing"),
        (["--max-message", "0"], "max-message"),
        (["--max-message", "ten"], "max-message"),
        (["--keep-open", "--framing", "eof"], "--keep-open"),
        (["--listen", "bogus:1"], "bogus:1"),
        (["--listen", "tcp:notaport"], "tcp:notaport"),
        (["--listen", "ssl:0:privateKey=/nonexistent.pem"], "ssl:0"),
        (["--no-such-option"], "no-such-option"),
        (["--idle-timeout", "-1"], "--idle-timeout"),
        (["--idle-timeout", "nan"], "--idle-timeout"),
        (["--max-connections", "-1"], "--max-connections"),
        (["--max-per-peer", "x"], "--max-per-peer"),
        (["--drain-timeout", "-5"], "--drain-timeout"),
        (["--delay", "-0.1"], "--delay"),
        (["--drop-rate", "1.5"], "--drop-rate"),
        (["--reset-rate", "-0.5"], "--reset-rate"),
        (["--drop-rate", "0.6", "--reset-rate", "0.6"], "add up"),
        (["--jitter", "-1"], "--jitter"),
        (["--jitter", "4000"], "--jitter must be a number of seconds from 0 to 3600"),
        (["--truncate-rate", "2"], "--truncate-rate"),
        (["--stall-rate", "x"], "--stall-rate"),
        (["--truncate-rate", "0.5", "--stall-rate", "0.6"],
         "--drop-rate, --reset-rate, --truncate-rate and --stall-rate add up to more than 1"),
        (["--cut-after", "-2"], "--cut-after"),
        (["--cut-after", "1e9"], "--cut-after must be a number of seconds from 0 to 3600"),
        (["--throttle", "1.5"], "--throttle"),
        (["--throttle", "-1"], "--throttle"),
        (["--workers", "0"], "--workers"),
        (["--listen", "systemd:domain=INET:index=0"], "socket activation"),
        (["--udp", "70000"], "--udp"),
        (["--websocket", "bogus:1"], "bad --websocket 'bogus:1'"),
        (["--websocket", "tcp:0", "--workers", "2"], "--websocket cannot be used with --workers"),
        (["--websocket", "haproxy:tcp:0"], "haproxy: is not supported for WebSocket"),
        (["--port", "70000"], "--port must be a whole number from 0 to 65535, not '70000'"),
        (["-p", "x"], "--port must be a whole number from 0 to 65535, not 'x'"),
        (["-m", "10"], "-m"),
        (["--udp", "x"], "--udp"),
        (["--metrics", "bogus:1"], "--metrics"),
        (["--metrics", "tcp:0", "--workers", "2"], "--metrics"),
        (["--workers", "2", "--listen", "ssl:0:privateKey=x.pem"], "ssl:0"),
    ],
)
def test_badOptions(argv: list[str], words: str) -> None:
    """
    Bad values and bad combinations are usage errors that name the culprit.
    """
    with pytest.raises(usage.UsageError) as info:
        parse(argv)
    assert words in str(info.value)


def test_makeServiceListensOnEachEndpoint(logged: list[str]) -> None:
    """
    makeService gives one listener per --listen, sharing one factory, and
    says when the server is ready, naming each real address.
    """
    reactor = MemoryReactor()
    config = parse(["--listen", "tcp:1234:interface=127.0.0.1", "--listen", "tcp:5678",
                    "--framing", "int32", "--keep-open"])
    service = makeService(config, reactor)
    listeners = [s for s in service if isinstance(s, ListenerService)]
    assert [s.description for s in listeners] == config["listen"]
    service.privilegedStartService()
    service.startService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (1234, "127.0.0.1"),
        (5678, ""),
    ]
    factories = {id(factory) for _, factory, _, _ in reactor.tcpServers}
    assert len(factories) == 1
    factory = reactor.tcpServers[0][1]
    assert isinstance(factory, EchoReplyFactory)
    assert (factory.settings.framing, factory.settings.keepOpen) == ("int32", True)
    assert factory.clock is reactor
    assert "Server is running, waiting for connections..." not in logged
    reactor.run()
    assert logged[-1] == "Server is running, waiting for connections..."
    assert len([line for line in logged if line.startswith("Listening on tcp:")]) == 2


def test_stopServiceStopsListening() -> None:
    """
    Stopping the service stops every listener.
    """
    reactor = MemoryReactor()
    service = makeService(parse(["--listen", "tcp:0"]), reactor)
    service.privilegedStartService()
    service.startService()
    listener = next(s for s in service if isinstance(s, ListenerService))
    port = listener.port
    assert port is not None
    stopped: list[bool] = []
    port.stopListening = lambda: stopped.append(True)  # type: ignore[method-assign]
    service.stopService()
    assert listener.port is None
    assert stopped == [True]


def test_listenFailureIsOneLine() -> None:
    """
    A listener that cannot start ends the program with a one-line message
    naming the endpoint, as a SystemExit (no traceback).
    """
    reactor = RaisingMemoryReactor(
        listenException=CannotListenError("127.0.0.1", 12345, OSError(98, "in use"))
    )
    service = makeService(parse([]), reactor)
    with pytest.raises(ListenFailed) as info:
        service.privilegedStartService()
    assert isinstance(info.value, SystemExit)
    message = str(info.value.code)
    assert message.startswith("Error: cannot listen on tcp:12345:interface=127.0.0.1: ")
    assert "\n" not in message


def test_makeServiceUsesGlobalReactorByDefault() -> None:
    """
    Without a reactor argument, makeService still builds (the global reactor
    is looked up only then, never at import time).
    """
    service = makeService(parse(["--listen", "tcp:0"]))
    assert len([s for s in service if isinstance(s, ListenerService)]) == 1


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:0", "tcp:0:backlog=1024"),
        ("tcp6:0:interface=\\:\\:1", "tcp6:0:interface=\\:\\:1:backlog=1024"),
        ("haproxy:tcp:0", "haproxy:tcp:0:backlog=1024"),
        ("unix:/tmp/s.sock", "unix:/tmp/s.sock:backlog=1024"),
        ("tcp:0:backlog=5", "tcp:0:backlog=5"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_withBacklog(description: str, expected: str) -> None:
    """
    Listeners get a 1024-deep accept backlog unless the endpoint string sets
    one or has no such parameter.
    """
    assert withBacklog(description) == expected


def test_makeServiceRaisesBacklog() -> None:
    """
    makeService listens with the raised backlog.
    """
    reactor = MemoryReactor()
    service = makeService(parse(["--listen", "tcp:0"]), reactor)
    service.privilegedStartService()
    assert reactor.tcpServers[0][2] == 1024


# Issue 9: one vocabulary of short flags, --port, usage errors in our words.


def test_portListensOnLoopback() -> None:
    """
    C{-p N} (C{--port N}) listens on TCP port N of 127.0.0.1, instead of the
    default listener; it no longer means C{--prefix}.
    """
    config = parse(["-p", "44140"])
    assert config["listen"] == ["tcp:44140:interface=127.0.0.1"]
    assert config["prefix"] == b"Message received: "


def test_portCombinesWithListen() -> None:
    """
    C{--port} and C{--listen} repeat and combine, in the order given.
    """
    config = parse(["--port", "1", "--listen", "unix:/tmp/s.sock", "-p", "0"])
    assert config["listen"] == [
        "tcp:1:interface=127.0.0.1",
        "unix:/tmp/s.sock",
        "tcp:0:interface=127.0.0.1",
    ]


def test_shortFlagsFollowTheVocabulary() -> None:
    """
    Every short flag of the server means what it means in every sockplay
    tool (C{-p} port, C{-f} framing, C{-k} keep-open, C{-q} quiet), or is
    the server's own and unused elsewhere (C{-l} listen, C{-w} workers);
    C{--prefix} and C{--max-message} have long names only.
    """
    config = Options()
    shorts = {name: config.synonyms[name] for name in config.synonyms if len(name) == 1}
    assert shorts == {
        "p": "port",
        "f": "framing",
        "k": "keep-open",
        "q": "quiet",
        "l": "listen",
        "w": "workers",
    }


def test_helpShowsListenDefault() -> None:
    """
    The help shows the default listener, as Twisted shows defaults.
    """
    help = " ".join(str(Options()).split())
    assert f"[default: {DEFAULT_LISTEN}]" in help
    assert "-p, --port=" in str(Options())
    # Twisted shows an option method's docstring as written: one line each,
    # or the help has gaps.
    for method in (Options.opt_listen, Options.opt_port, Options.opt_udp):
        assert method.__doc__ is not None and "\n" not in method.__doc__.strip()


def test_coerceErrorsInOurWords() -> None:
    """
    A bad value is reported in the option's own words, without Twisted's
    "Parameter type enforcement failed".
    """
    with pytest.raises(usage.UsageError) as info:
        parse(["--workers", "x"])
    assert str(info.value) == "--workers must be a whole number from 1 to 256, not 'x'"


class _Twistd(usage.Options):
    """
    Stands for twistd's options: the server's are its sub-command.
    """

    subCommands = [["sockplay", None, Options, "sockplay"]]


class TwistOptions(_Twistd):
    """
    Stands for the twist runner's options (named as Twisted names them).
    """


@pytest.mark.parametrize("runner, command", [(_Twistd, "twistd"), (TwistOptions, "twist")])
def test_usageErrorUnderTwistd(
    runner: type[usage.Options], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    Under twistd (the server's options a sub-command), a usage error is one
    C{Error:} line and where help is, on standard error, and exit status 2:
    not twistd's whole help, then Twisted's wording.
    """
    with pytest.raises(SystemExit) as info:
        runner().parseOptions(["sockplay", "--workers", "x"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "Error: --workers must be a whole number from 1 to 256, not 'x'",
        f"Try '{command} sockplay --help'.",
    ]


@pytest.mark.parametrize("address", ["not-an-address", "localhost", "1.2.3", "::g"])
def test_udpInterfaceMustBeAnAddress(address: str) -> None:
    """
    C{--udp-interface} takes an IPv4 or IPv6 address only (Twisted's UDP
    port takes no host name): anything else is a usage error, not a
    traceback when the port opens.
    """
    with pytest.raises(usage.UsageError) as info:
        parse(["--udp", "0", "--udp-interface", address])
    assert str(info.value) == (
        "--udp-interface must be an IPv4 or IPv6 address (such as 127.0.0.1 or ::1), "
        f"not {address!r}"
    )


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::1", "fe80::1%lo"])
def test_udpInterfaceAddresses(address: str) -> None:
    """
    IPv4 and IPv6 addresses (scoped ones too), and C{""} for every IPv4
    address, are taken as they are.
    """
    assert parse(["--udp-interface", address])["udp-interface"] == address


def test_emptyMetricsRefused() -> None:
    """
    C{--metrics ''} is a bad endpoint, not "no metrics".
    """
    with pytest.raises(usage.UsageError) as info:
        parse(["--metrics", ""])
    assert str(info.value) == "bad --metrics '': Unknown endpoint type: ''"


@pytest.mark.parametrize(
    "command, program",
    [(TWISTD, "twistd sockplay"), (SERVER, "python -m sockplay.server")],
    ids=["twistd", "server"],
)
def test_badUDPInterfaceOneErrorLine(command: list[str], program: str, tmp_path: Path) -> None:
    """
    Both entry points, run for real, refuse C{--udp-interface not-an-address}
    with one C{Error:} line and where help is, exit 2 (issue 10: a
    traceback before).
    """
    result = run([*command, "--udp", "0", "--udp-interface", "not-an-address"], tmp_path)
    assertUsageError(
        result,
        "--udp-interface must be an IPv4 or IPv6 address (such as 127.0.0.1 or ::1), "
        "not 'not-an-address'",
        program,
    )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A directory with a server certificate and key, for C{ssl:} listeners.
    """
    directory = tmp_path_factory.mktemp("certs")
    writeCertificates(directory)
    return directory


def sslListen(certificates: Path, kind: str = "ssl") -> str:
    return (
        f"{kind}:0:interface=127.0.0.1:privateKey={certificates / 'server-key.pem'}"
        f":certKey={certificates / 'server.pem'}"
    )


@pytest.mark.parametrize("kind", ["ssl", "haproxy:ssl"])
def test_eofFramingRefusedOnTLS(certificates: Path, kind: str) -> None:
    """
    C{--framing eof} on a TLS listener (also behind C{haproxy:}) is a usage
    error that names the listener and the framings to use: no TLS client
    can half-close to end its message.
    """
    listen = sslListen(certificates, kind)
    with pytest.raises(usage.UsageError) as info:
        parse(["--framing", "eof", "--listen", "tcp:0", "--listen", listen])
    assert str(info.value) == (
        f"--framing eof cannot be used with the TLS listener {listen!r}: a TLS client "
        "cannot half-close to end its message; use --framing line or int32"
    )


def test_otherFramingsAcceptedOnTLS(certificates: Path) -> None:
    """
    The other framings work over TLS, and eof over plain TCP.
    """
    parse(["--framing", "line", "--listen", sslListen(certificates)])
    parse(["--framing", "eof", "--listen", "tcp:0"])


def test_workersRefuseTLS(certificates: Path) -> None:
    """
    C{--workers} cannot share a TLS listener (one that loads).
    """
    with pytest.raises(usage.UsageError) as info:
        parse(["--workers", "2", "--listen", sslListen(certificates)])
    assert "--workers cannot share the TLS listener" in str(info.value)


def test_workersShareUDP() -> None:
    """
    With C{--workers}, the C{--udp} ports go to the worker pool, which binds
    them once for the workers to share, instead of being dropped.
    """
    config = parse(["--workers", "2", "--udp", "0", "--udp", "5353", "--udp-interface", "::1"])
    service = makeService(config, MemoryReactor())
    [pool] = [s for s in service if isinstance(s, WorkerPoolService)]
    assert pool.datagrams == [(0, "::1"), (5353, "::1")]


def test_listenerLogNamesItsKind(certificates: Path, logged: list[str]) -> None:
    """
    Each listener is logged once, with its real kind: an C{ssl:} listener
    as C{ssl:}, a C{haproxy:} one as C{haproxy:tcp:}.
    """
    reactor = MemoryReactor()
    config = parse([
        "--listen", sslListen(certificates), "--listen", "haproxy:tcp:0:interface=127.0.0.1",
    ])
    service = makeService(config, reactor)
    service.privilegedStartService()
    service.startService()
    listening = [line for line in logged if line.startswith("Listening on")]
    assert [line.split(" (")[0] for line in listening] == [
        "Listening on ssl:0.0.0.0:0",
        "Listening on haproxy:tcp:0.0.0.0:0",
    ]


def test_portStartLineSilenced() -> None:
    """
    The line Twisted's port logs as it starts ("EchoReplyFactory starting on
    41001") writes nothing to a text log: the listener's own line says it.
    """
    out = io.StringIO()
    observer = textFileLogObserver(out)
    globalLogPublisher.addObserver(observer)
    try:
        quietly(legacyLog.msg, "EchoReplyFactory starting on 41001")
        legacyLog.msg("kept")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert "starting on" not in out.getvalue()
    assert "kept" in out.getvalue()


def test_proxyFactoryNotNoisy() -> None:
    """
    The PROXY wrapper's factory does not log "Starting factory <...>".
    """
    assert ProxyWrappingFactory.noisy is False
    assert EchoReplyFactory.noisy is False


@pytest.mark.parametrize("count, words", [(0, "0 connections"), (1, "1 connection"),
                                          (2, "2 connections")])
def test_counted(count: int, words: str) -> None:
    """
    Counts read "1 connection", "2 connections", "0 connections".
    """
    assert counted(count, "connection") == words
