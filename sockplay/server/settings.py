"""
What every connection of one server shares: the L{ServerSettings}, the
defaults behind them, the reply templates, and the L{ConnectionRecord} that
a connection leaves when it closes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from twisted.internet.interfaces import IAddress

from sockplay.framing import DEFAULT_MAX_MESSAGE, FRAMINGS, checkKeepOpen
from sockplay.server.address import describeAddress, hostOf
from sockplay.server.faultsettings import Faults

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PREFIX",
    "ConnectionRecord",
    "ServerSettings",
    "renderProcessTemplate",
    "renderTemplate",
]

# The tutorial's reply prefix.
DEFAULT_PREFIX = b"Message received: "

# Long enough for any interactive client to type a line; short enough that
# slowloris clients (who trickle a message that never ends) do not pile up.
DEFAULT_IDLE_TIMEOUT = 30.0

# Far above what a test endpoint normally sees, low enough to keep the
# server's file descriptors and memory bounded under a connection flood.
DEFAULT_MAX_CONNECTIONS = 10000

# After its last reply, how long the server waits for the client to close,
# counted from the reply's last progress towards the client. A well-behaved
# client closes as soon as it has read its reply.
DEFAULT_LINGER = 5.0


@dataclass(frozen=True)
class ServerSettings:
    """
    What every connection of one server shares: framing, lifecycle, reply
    prefix, limits and test-endpoint knobs.

    @ivar framing: a key of L{sockplay.framing.FRAMINGS}.
    @ivar keepOpen: answer every message until the client closes, instead of
        one message and close.
    @ivar prefix: put before each message in its reply; may hold the
        placeholders C{{hostname}}, C{{listener}}, C{{peer}} and C{{pid}}
        (the serving process, which tells C{--workers} apart).
    @ivar maxMessage: the largest message accepted, in bytes.
    @ivar idleTimeout: seconds a connection may go without completing a
        message; 0 turns the limit off.
    @ivar maxConnections: most connections open at once; 0 for no limit.
    @ivar maxPerPeer: most connections open at once from one IP address; 0
        for no limit.
    @ivar lingerTimeout: seconds to wait for the client to close after the
        server's last reply (and the grace given to a client that does not
        read its error), before aborting; restarted whenever the reply makes
        progress towards the client.
    @ivar quiet: no per-connection log events.
    @ivar banner: sent on connect, before anything is read; C{None} for none.
    @ivar faults: the faults the server starts with (it may change them
        while it runs: see L{EchoReplyFactory.setFaults
        <sockplay.server.factory.EchoReplyFactory.setFaults>}).
    """

    framing: str = "raw"
    keepOpen: bool = False
    prefix: bytes = DEFAULT_PREFIX
    maxMessage: int = DEFAULT_MAX_MESSAGE
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT
    maxConnections: int = DEFAULT_MAX_CONNECTIONS
    maxPerPeer: int = 0
    lingerTimeout: float = DEFAULT_LINGER
    quiet: bool = False
    banner: bytes | None = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"unknown framing {self.framing!r}")
        if self.keepOpen:
            checkKeepOpen(self.framing)


@dataclass(frozen=True)
class ConnectionRecord:
    """
    What happened on one connection, made when it closes: the connection
    log event and the metrics come from it.

    @ivar outcome: why it ended: C{ok}, C{probe} (the client closed or
        reset the connection without sending a byte, as a health check
        does), C{no-message}, C{too-long}, C{truncated}, C{idle-timeout},
        C{busy}, C{peer-limit}, C{reset} (by the client), C{aborted} (the
        client did not close in time), C{shutdown}, C{dropped},
        C{reset-injected}, C{truncated-reply}, C{stalled}, C{cut} (the
        injected faults: see L{sockplay.server.faults}) or C{bad-header} (a
        PROXY header refused).
    """

    peer: str
    listener: str
    framing: str
    messages: int
    bytesIn: int
    bytesOut: int
    duration: float
    outcome: str


def renderProcessTemplate(template: bytes, hostname: bytes, pid: int | None = None) -> bytes:
    """
    Fill in the placeholders that do not depend on a connection
    (C{{hostname}}, C{{pid}}); replies without a connection (UDP) get only
    these.
    """
    if b"{" not in template:
        return template
    return template.replace(b"{hostname}", hostname).replace(
        b"{pid}", str(os.getpid() if pid is None else pid).encode("ascii")
    )


def renderTemplate(
    template: bytes,
    hostname: bytes,
    listener: IAddress | None,
    peer: IAddress | None,
    pid: int | None = None,
    tls: bool = False,
) -> bytes:
    """
    Fill in the placeholders of a prefix or banner for one connection.

    @param tls: the connection is over TLS: C{{listener}} says C{ssl:}.

    Only the placeholders are replaced; any other brace is kept as it is,
    so a prefix never needs escaping.
    """
    if b"{" not in template:
        return template
    return (
        renderProcessTemplate(template, hostname, pid)
        .replace(b"{listener}", describeAddress(listener, tls).encode("utf-8", "backslashreplace"))
        .replace(b"{peer}", hostOf(peer).encode("utf-8", "backslashreplace"))
    )
