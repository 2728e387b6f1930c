"""
What the command lines of the server, the client and the load generator
share: number checks, the connect target, the C{main} runner and the file
limit. Each rule is written here once.

This module imports nothing of sockplay's own, so that every package may
use it.
"""

from __future__ import annotations

import math
import platform
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import ClassVar, NoReturn, TypeVar

from twisted import copyright
from twisted.python import usage

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "UNLIMITED",
    "CommandOptions",
    "TargetOptions",
    "counted",
    "exitWithError",
    "number",
    "parseOrExit",
    "port",
    "raiseFileLimit",
    "splitEndpoint",
    "version",
]

_Number = TypeVar("_Number", int, float)

# The socket tutorial's server address, which every tool talks to by default.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345

# What Twisted puts before a coerce function's error, which says it better.
_TWISTED_COERCE_WORDING = "Parameter type enforcement failed: "

# What raiseFileLimit reports for a limit that is unlimited (or unknown).
UNLIMITED = -1


def number(
    option: str,
    kind: type[_Number],
    minimum: _Number,
    maximum: _Number | None = None,
    positive: bool = False,
) -> Callable[[str], _Number]:
    """
    A coerce function for C{option}: a finite number of C{kind}, at least
    C{minimum} (above it, if C{positive}), at most C{maximum}. Its error
    names the option, so that a usage error says which value was wrong.
    """
    what = "whole number" if kind is int else "number"
    if positive:
        bounds = "" if minimum == 0 else f" above {minimum}"
        what = "positive " + what if minimum == 0 else what
        if maximum is not None:
            bounds += f" up to {maximum}"
    elif maximum is not None:
        bounds = f" from {minimum} to {maximum}"
    else:
        bounds = f" of at least {minimum}"

    def coerce(value: str) -> _Number:
        try:
            parsed = kind(value)
        except ValueError:
            parsed = None
        if (
            parsed is None
            or not math.isfinite(parsed)
            or (parsed <= minimum if positive else parsed < minimum)
            or (maximum is not None and parsed > maximum)
        ):
            raise ValueError(f"{option} must be a {what}{bounds}, not {value!r}")
        return parsed

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """
    C{count} and C{noun}, plural unless C{count} is 1, for the messages of
    every command: C{"1 message"}, C{"0 messages"}, C{"2 replies"}.

    @param plural: the plural, where it is not C{noun} with an C{s}.
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def splitEndpoint(description: str) -> list[str]:
    """
    Split a Twisted endpoint string at its unescaped colons, removing the
    backslash escapes, as Twisted does: the kind, then its arguments.
    """
    parts = [""]
    escaped = False
    for character in description:
        if escaped:
            parts[-1] += character
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            parts.append("")
        else:
            parts[-1] += character
    return parts


def port(value: str) -> int:
    """
    A TCP port number to connect to: 1 to 65535.
    """
    return number("--port", int, 1, 65535)(value)


def _nonEmpty(option: str, what: str) -> Callable[[str], str]:
    """
    A coerce function for C{option}, which names C{what} it must be: any
    text but the empty string (which would otherwise pass for "not given").
    """

    def coerce(value: str) -> str:
        if not value:
            raise ValueError(f"{option} must be {what}, not ''")
        return value

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def version() -> str:
    """
    What C{--version} prints: sockplay's version, and the Twisted and Python
    it runs on (the two things a bug report needs next).
    """
    try:
        mine = metadata.version("sockplay")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        mine = "unknown"
    return f"sockplay {mine} (Twisted {copyright.version}, Python {platform.python_version()})"


class CommandOptions(usage.Options):
    """
    The base of every sockplay command line: a usage line that names the
    command, and a C{--version} that names sockplay.

    Short flags mean the same in every command: C{-p} port, C{-m} message,
    C{-f} framing, C{-k} keep-open, C{-c} connect, C{-H} host, C{-q} quiet.
    Defaults are shown as Twisted shows them, C{[default: X]}, also in help
    text written by hand for a default that depends on other options.

    @cvar program: how the command is run, such as
        C{"python -m sockplay.client"}: the start of the usage line and of
        the help hint after a usage error.
    @cvar arguments: what follows the options in the usage line.
    """

    program: ClassVar[str] = "python -m sockplay"
    arguments: ClassVar[str] = "[options]"

    @property
    def synopsis(self) -> str:
        """
        The usage line: C{Usage: <program> <arguments>}; only the arguments
        under a parent command (twistd), which names itself.
        """
        if self.parent is not None:
            return self.arguments
        return f"Usage: {self.program} {self.arguments}"

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options} as Twisted does, with our coerce functions' errors
        as they are written, without Twisted's preamble before them.

        @raise usage.UsageError: for anything wrong on the command line.
        """
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            raise usage.UsageError(str(e).removeprefix(_TWISTED_COERCE_WORDING)) from None

    def opt_version(self) -> None:
        """
        Display sockplay's version (and Twisted's and Python's) and exit.
        """
        print(version())
        raise SystemExit(0)


class TargetOptions(CommandOptions):
    """
    The options that name the server to talk to: C{--host} and C{--port},
    or a Twisted client endpoint string in C{--connect}. Mixed into the
    client's and the load generator's options.
    """

    optParameters = [
        ["host", "H", DEFAULT_HOST, "Server host name or address.",
         _nonEmpty("--host", "a host name or an IP address")],
        ["port", "p", DEFAULT_PORT, "Server TCP port.", port],
        ["connect", "c", None, "A Twisted client endpoint string (tcp:host=...:port=..., "
         "unix:path=..., ...); overrides --host and --port.",
         _nonEmpty("--connect", "an endpoint string such as tcp:host=...:port=...")],
    ]

    def target(self) -> str:
        """
        What the tool talks to, for messages: the C{--connect} string, or
        C{host:port} (C{[host]:port} for an IPv6 address).
        """
        if self["connect"]:
            return str(self["connect"])
        host = self["host"]
        return f"[{host}]:{self['port']}" if ":" in host else f"{host}:{self['port']}"


def exitWithError(message: str, status: int = 1) -> NoReturn:
    """
    End the program the way every sockplay command ends on an error the
    user can fix: C{Error: <message>} on one line of standard error, and
    C{status}, never a traceback.
    """
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(status)


def parseOrExit(config: CommandOptions, argv: Sequence[str] | None) -> None:
    """
    Parse C{argv} (default: C{sys.argv[1:]}) into C{config}; on a usage
    error, say what is wrong and where help is, and exit 2.
    """
    try:
        config.parseOptions(list(argv) if argv is not None else None)
    except usage.UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        print(f"Try '{config.program} --help'.", file=sys.stderr)
        raise SystemExit(2) from None


def raiseFileLimit(needed: int | None = None) -> tuple[int, int]:
    """
    Raise the soft limit on open file descriptors (RLIMIT_NOFILE): each
    connection is one descriptor.

    @param needed: raise it to this many, if it is lower (the hard limit
        permitting); by default, as far as the hard limit allows.
    @return: the soft and hard limits now in force (L{UNLIMITED} for
        unlimited, or where the platform has no such limit).
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return UNLIMITED, UNLIMITED
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == infinity:
        # The kernel refuses "infinity" for this limit; nr_open is its real cap.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1024 * 1024
    if needed is not None:
        target = min(target, needed)
    if soft != infinity and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (UNLIMITED if soft == infinity else soft, UNLIMITED if hard == infinity else hard)
