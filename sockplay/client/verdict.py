"""
What a reply says about the server, and the exit status that tells it to a
script: an echo of the message, an error, or something else. No I/O.

The client knows what it sent, so a reply is an echo when it ends with the
message: the server puts its C{--prefix} (by default C{Message received: })
in front, whatever that prefix is. A reply that starts with C{Error: } is
the server's error (C{server busy}, C{message too long}, ...).
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ECHOED",
    "ERROR_REPLY",
    "FAILED",
    "NOT_ECHO",
    "USAGE",
    "ReplyKind",
    "classify",
    "echoedPrefix",
    "problem",
]

# The exit statuses of python -m sockplay.client, one per outcome, so that a
# script (a container's health check) can tell them apart.
ECHOED = 0  # the reply is an echo of the message (with --count: every probe was)
FAILED = 1  # no reply: refused, reset, timed out, TLS, name... (with --count: any probe lost)
USAGE = 2  # a usage error: a bad option or --connect string
ERROR_REPLY = 3  # the server answered with an Error: reply
NOT_ECHO = 4  # the server answered, but not with an echo of the message

# How a sockplay server's error replies start.
ERROR_START = b"Error: "

# A reply that ends with at least this many first bytes of the message is a
# cut echo: a raw server's read is far larger than this (64 KiB), and a
# short match is more likely chance than a cut.
_CUT_ECHO = 1024

# How a TLS alert record starts: content type 21, then a 3.x version.
_TLS_ALERT = b"\x15\x03"


class ReplyKind(Enum):
    """
    What a reply is, for the message it answers.
    """

    ECHO = ECHOED
    ERROR = ERROR_REPLY
    OTHER = NOT_ECHO


def classify(reply: bytes, message: bytes) -> ReplyKind:
    """
    Whether C{reply} is the server's error, an echo of C{message} (it ends
    with it), or neither.
    """
    if reply.startswith(ERROR_START):
        return ReplyKind.ERROR
    if reply.endswith(message):
        return ReplyKind.ECHO
    return ReplyKind.OTHER


def echoedPrefix(reply: bytes, message: bytes) -> int:
    """
    How many of the first bytes of C{message} the end of C{reply} echoes:
    the length of the longest start of C{message} that C{reply} ends with
    (C{len(message)} for a whole echo). Linear time, so that a large cut
    echo is measured at once (Knuth-Morris-Pratt).
    """
    if not message:
        return 0
    # fallback[i]: the longest proper border of message[:i + 1].
    fallback = [0] * len(message)
    k = 0
    for i in range(1, len(message)):
        while k and message[i] != message[k]:
            k = fallback[k - 1]
        if message[i] == message[k]:
            k += 1
        fallback[i] = k
    matched = 0
    for byte in reply:
        if matched == len(message):
            matched = fallback[matched - 1]
        while matched and byte != message[matched]:
            matched = fallback[matched - 1]
        if byte == message[matched]:
            matched += 1
    return matched


def problem(reply: bytes, message: bytes, framing: str, target: str) -> tuple[int, str] | None:
    """
    What is wrong with C{reply} as the answer to C{message}, or C{None} if
    it is an echo.

    @param framing: the client's framing, for the hint on a cut echo.
    @param target: what the client talked to, for the message.
    @return: the exit status and the one-line error message.
    """
    kind = classify(reply, message)
    if kind is ReplyKind.ECHO:
        return None
    if kind is ReplyKind.ERROR:
        text = reply[len(ERROR_START):].decode("utf-8", "backslashreplace").strip()
        return ERROR_REPLY, f"{target} answered with an error instead of an echo: {text}"
    echoed = echoedPrefix(reply, message)
    if echoed >= _CUT_ECHO and framing == "raw":
        return NOT_ECHO, (
            f"{target} echoed only the first {echoed} of the {len(message)} bytes sent: "
            "in raw framing the server takes one read as the message, so a long one is "
            "cut; use --framing line or --framing int32 (and the same on the server)"
        )
    hint = ""
    if reply.startswith(_TLS_ALERT):
        hint = " (it looks like a TLS alert: is it a TLS listener? try --tls)"
    return NOT_ECHO, f"the reply from {target} is not an echo of the message{hint}"
