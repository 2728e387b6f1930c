"""
Tests for L{sockplay.cli}: numeric option values and their errors.
"""

from __future__ import annotations

import pytest
from twisted.python import usage

from sockplay.cli import CommandOptions, TargetOptions, counted, number, port, splitEndpoint


@pytest.mark.parametrize(
    "coerce, value, expected",
    [
        (number("--n", int, 1), "3", 3),
        (number("--n", int, 0), "0", 0),
        (number("--t", float, 0.0), "0", 0.0),
        (number("--t", float, 0.0, positive=True), "0.5", 0.5),
        (number("--r", float, 0.0, 1.0), "1", 1.0),
        (port, "65535", 65535),
    ],
)
def test_accepted(coerce: object, value: str, expected: float) -> None:
    """
    Values within the bounds come back typed.
    """
    assert coerce(value) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    "coerce, value, message",
    [
        (number("--n", int, 1), "0", "--n must be a whole number of at least 1, not '0'"),
        (number("--n", int, 1), "x", "--n must be a whole number of at least 1, not 'x'"),
        (number("--t", float, 0.0), "nan", "--t must be a number of at least 0.0, not 'nan'"),
        (number("--t", float, 0.0), "inf", "--t must be a number of at least 0.0, not 'inf'"),
        (number("--t", float, 0.0, positive=True), "0", "--t must be a positive number, not '0'"),
        (number("--r", float, 0.0, 1.0), "1.5", "--r must be a number from 0.0 to 1.0, not '1.5'"),
        (port, "0", "--port must be a whole number from 1 to 65535, not '0'"),
        (port, "65536", "--port must be a whole number from 1 to 65535, not '65536'"),
        (number("--d", float, 0.0, 60.0, positive=True), "61",
         "--d must be a positive number up to 60.0, not '61'"),
        (number("--d", float, 0.0, 60.0, positive=True), "0",
         "--d must be a positive number up to 60.0, not '0'"),
    ],
)
def test_refused(coerce: object, value: str, message: str) -> None:
    """
    A value out of bounds, not a number, or not finite is refused with a
    message that names the option and the value.
    """
    with pytest.raises(ValueError) as info:
        coerce(value)  # type: ignore[operator]
    assert str(info.value) == message


# The short flags every tool shares, and what each means (issue 9).
# C{-n} is how many messages to send: the probe's count, the bench's requests.
VOCABULARY = {
    "p": {"port"},
    "m": {"message"},
    "f": {"framing"},
    "k": {"keep-open"},
    "c": {"connect"},
    "H": {"host"},
    "q": {"quiet"},
    "n": {"count", "requests"},
}


def _commandLines() -> dict[str, type[CommandOptions]]:
    from sockplay.bench.command import Options as BenchOptions
    from sockplay.certs import Options as CertsOptions
    from sockplay.client.options import Options as ClientOptions
    from sockplay.server.tap import Options as ServerOptions

    return {
        "server": ServerOptions,
        "client": ClientOptions,
        "bench": BenchOptions,
        "certs": CertsOptions,
    }


def _shortFlags(options: type[CommandOptions]) -> dict[str, str]:
    """
    Each short flag of C{options} and the long option it stands for.
    """
    return {name: long for name, long in options().synonyms.items() if len(name) == 1}


def test_shortFlagsMeanTheSameEverywhere() -> None:
    """
    A short flag means one thing in every command: C{-p} is always the
    port, C{-m} always the message, and so on; no tool gives a shared
    letter another meaning.
    """
    meanings: dict[str, set[str]] = {}
    for tool, options in _commandLines().items():
        for short, long in _shortFlags(options).items():
            meanings.setdefault(short, set()).add(long)
            assert long in VOCABULARY.get(short, {long}), f"{tool}: -{short} is --{long}"
    clashes = {s: names for s, names in meanings.items() if len(names) > 1}
    assert {s: names for s, names in clashes.items() if s not in VOCABULARY} == {}


def test_usageNamesTheCommand() -> None:
    """
    Each command's help starts with a usage line that names the command.
    """
    for tool, options in _commandLines().items():
        assert options().getSynopsis().startswith(f"Usage: python -m sockplay.{tool} ")


def test_counted() -> None:
    """
    Counts are singular for exactly one, and plural otherwise, with an
    irregular plural where one is given.
    """
    assert [counted(n, "message") for n in (0, 1, 2)] == ["0 messages", "1 message", "2 messages"]
    assert counted(1, "reply", "replies") == "1 reply"
    assert counted(3, "reply", "replies") == "3 replies"


def test_splitEndpoint() -> None:
    """
    An endpoint string splits at its unescaped colons, and the escapes are
    removed: an IPv6 address survives whole.
    """
    assert splitEndpoint("tcp:host=\\:\\:1:port=12345") == ["tcp", "host=::1", "port=12345"]
    assert splitEndpoint("unix:path=/a\\\\b") == ["unix", "path=/a\\b"]


@pytest.mark.parametrize(
    "option, message",
    [
        ("--host", "--host must be a host name or an IP address, not ''"),
        ("--connect", "--connect must be an endpoint string such as tcp:host=...:port=..., "
         "not ''"),
    ],
)
def test_emptyTargetRefused(option: str, message: str) -> None:
    """
    An empty C{--host} or C{--connect} is a usage error in every tool that
    takes them, not a traceback or "not given".
    """
    with pytest.raises(usage.UsageError) as raised:
        TargetOptions().parseOptions([option, ""])
    assert str(raised.value) == message


def test_coerceErrorsInOurWords() -> None:
    """
    A value refused by a coerce function is reported in the function's own
    words, without Twisted's "Parameter type enforcement failed" before it.
    """
    from sockplay.client.options import Options

    with pytest.raises(usage.UsageError) as raised:
        Options().parseOptions(["--timeout", "soon"])
    assert str(raised.value) == "--timeout must be a positive number, not 'soon'"
